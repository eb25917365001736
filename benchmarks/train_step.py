"""Training step time and peak memory of the retrieval dual encoder for a config (default: the demo's).

    python benchmarks/train_step.py [--config configs/demo.yaml] [--steps 6]

Uses the real unit sequences and texts of the config's training split when its run folder has them
(after `polyvox demo`), else synthetic sequences of typical length (62 audio tokens, 12-word texts).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _common import peak_rss_mb, write_result

from polyvox.config import load_config
from polyvox.losses import contrastive_loss, spread_out
from polyvox.models.units import FeatureTokenizer, UnitSpec, UnitTokenizer
from polyvox.recipes.retrieval import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    b = cfg.train.batch_size
    u = cfg.units
    spec = UnitSpec(u.encoder, "synthetic", u.layer, u.pool, u.pad_to_30s, u.dedup, u.num_units, kind=u.kind)
    if u.kind == "features":  # whisper-base width; 62 frames = 2.5 s at 25 frames/s
        model = build_model(cfg, FeatureTokenizer(spec, 512))
        speech = [rng.standard_normal((62, 512)).astype(np.float32) for _ in range(b)]
    else:
        model = build_model(cfg, UnitTokenizer(np.zeros((u.num_units, 512), np.float32), spec))
        speech = [list(rng.integers(0, u.num_units, 62)) for _ in range(b)]
    texts = ["The file could not be opened because it is in use"] * b
    data = "synthetic"
    cache = sorted((Path(cfg.out_dir) / "cache").glob("units-*.jsonl"))
    if cache and u.kind != "features":
        import json

        lines = cache[0].read_text().splitlines()  # written in length order: sample across it
        rows = [json.loads(lines[i]) for i in rng.choice(len(lines), b, replace=False)]
        speech, data = [r["units"] for r in rows], str(cache[0])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    rss0 = peak_rss_mb()
    times = []
    for step in range(args.steps + 1):
        t = time.perf_counter()
        s, x = model(model.tokenize_speech(speech, ["fr_fr"] * b), model.tokenize_text(texts, ["fr_fr"] * b))
        loss = contrastive_loss(s, x, model.log_scale.exp()) + 0.1 * (spread_out(s) + spread_out(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    write_result("train_step", {
        "config": args.config, "overrides": args.set, "data": data, "batch_size": b,
        "backbone": cfg.model.backbone, "num_layers": cfg.model.num_layers, "lora_rank": cfg.model.lora_rank,
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
        "mean_speech_tokens": float(np.mean([len(s) for s in speech])),
        "step_s_median": med, "step_s_all": times, "pairs_per_s": b / med,
        "peak_rss_mb": peak_rss_mb(), "rss_before_training_mb": rss0,
    })


if __name__ == "__main__":
    main()
