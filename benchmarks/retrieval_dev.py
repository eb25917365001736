"""Dev-split ablation of the dual encoder: one change at a time, short runs, never the test split.

    python benchmarks/retrieval_dev.py --steps 150 --tag "name" [--set model.num_layers=2 ...]

The demo corpus's training split is cut by seeded permutation: 600 utterances of each of 6 languages
(de, es, fr, pt, ru, tr) train, the other 100 of each are the seen dev set, and Italian and Swedish
(150 each, never trained on) stand in for unseen languages. Each run trains `configs/demo.yaml` (with
the overrides, `train.augment` included) for `--steps` steps and appends dev R@1 (same-language, and
speech -> English) to benchmarks/results/retrieval_dev.json, so every choice of the demo's configuration is on
record. `--conditions` also scores degraded copies of the dev clips; `--direct-weights` re-scores the trained
model with its paths re-weighted (`model.direct_weight`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch
from _common import RESULTS

from polyvox.config import load_config
from polyvox.data.manifest import read_manifest
from polyvox.models.units import load_speech_tokenizer
from polyvox.recipes.retrieval import (
    _batches,
    _loss_fn,
    build_model,
    closed_form_init,
    param_groups,
    run_degraded_encode,
    run_units_encode,
    run_units_fit,
    training_set,
    units_dir,
)
from polyvox.train.loop import lr_lambda

SEEN, HELD_OUT = ["de_de", "es_419", "fr_fr", "pt_br", "ru_ru", "tr_tr"], ["it_it", "sv_se"]


def dev_split(utts, seed: int = 0):
    rng = np.random.default_rng(seed)
    by = defaultdict(list)
    for u in utts:
        by[u.lang].append(u)
    train, dev = [], []
    for lang in SEEN:
        order = [by[lang][i] for i in rng.permutation(len(by[lang]))]
        train, dev = train + order[:600], dev + order[600:]
    for lang in HELD_OUT:
        dev += [by[lang][i] for i in rng.permutation(len(by[lang]))[:150]]
    return train, dev


@torch.no_grad()
def dev_recall(model, dev, units) -> dict:
    model.eval()
    out = {}
    for lang in sorted({u.lang for u in dev}):
        us = [u for u in dev if u.lang == lang]
        speech = torch.cat([model.encode_speech([units[u.id] for u in us[i : i + 64]], lang) for i in range(0, len(us), 64)])
        for key, texts, tlang in (("R@1", [u.text for u in us], lang),
                                  ("xling_R@1", [u.translations["en_us"] for u in us], "en_us")):
            cands = list(dict.fromkeys(texts))
            emb = torch.cat([model.encode_text(cands[i : i + 64], tlang) for i in range(0, len(cands), 64)])
            gold = torch.tensor([cands.index(t) for t in texts])
            out.setdefault(lang, {})[key] = float(((speech @ emb.T).argmax(1) == gold).float().mean())
    return out


def averages(per: dict) -> dict:
    return {f"{g}_{k}": round(float(np.mean([per[lg][k] for lg in langs])), 3)
            for g, langs in (("seen", SEEN), ("unseen", HELD_OUT)) for k in ("R@1", "xling_R@1")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--run-dir", default="runs/dev")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--direct-weights", default="",
                    help="also score the trained model at these comma-separated model.direct_weight values")
    ap.add_argument("--conditions", default="",
                    help="also score degraded copies of the dev clips, e.g. telephone,noise10db,reverb")
    args = ap.parse_args()
    cfg = load_config(args.config, [f"out_dir={args.run_dir}", f"train.steps={args.steps}", *args.set])
    if not (units_dir(cfg) / "units.json").exists():
        run_units_fit(cfg)
    units, _ = run_units_encode(cfg, cfg.data.train_split)
    train, dev = dev_split([u for u in read_manifest(cfg.data.manifest, split=cfg.data.train_split) if u.id in units])
    tok = load_speech_tokenizer(units_dir(cfg))
    model = build_model(cfg, tok)
    train_set, versions = training_set(cfg, train, units, tok)
    pairs = sorted({u.group: (u.text, u.lang, u.translations["en_us"]) for u in train}.values())
    closed_form_init(cfg, model, train_set, pairs)
    batches, loss_fn = _batches(cfg, model, train_set, pairs, versions), _loss_fn(cfg)
    groups = param_groups(model, cfg.train)
    opt = torch.optim.AdamW(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.train))
    params = [p for g in groups for p in g["params"]]
    model.train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        for micro in batches(step, 0, 1):
            loss, m = loss_fn(model, micro)
            (loss / cfg.train.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 25 == 0:
            print(step, f"{loss.item():.3f}", {k: round(v, 3) for k, v in m.items()}, flush=True)
    train_s = time.perf_counter() - t0
    per = dev_recall(model, dev, units)
    sweep = {}
    trained_weight = model.cfg.direct_weight
    for w in [float(w) for w in args.direct_weights.split(",") if w]:
        model.cfg.direct_weight = w
        sweep[w] = averages(dev_recall(model, dev, units))
    model.cfg.direct_weight = trained_weight
    degraded = {}
    for name in [c for c in args.conditions.split(",") if c]:
        copies = run_degraded_encode(cfg, dev, name, tok, under="dev-degraded")
        degraded[name] = averages(dev_recall(model, dev, {**units, **copies}))
    row = {"tag": args.tag, "overrides": args.set, "steps": args.steps, "train_s": round(train_s),
           "s_per_step": round(train_s / max(args.steps, 1), 2), **averages(per), "per_language": per,
           **({"direct_weight_sweep": sweep} if sweep else {}), **({"degraded": degraded} if degraded else {})}
    path = RESULTS / "retrieval_dev.json"
    rows = json.loads(path.read_text())["runs"] if path.exists() else []
    path.write_text(json.dumps({"about": __doc__.strip().splitlines()[0], "runs": rows + [row]}, indent=2) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
