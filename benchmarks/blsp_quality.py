"""BLSP on the demo corpus: continuations, adapter training with and without the text-teacher KL term,
and zero-shot evaluation against the cascade and untrained-adapter baselines on the same items.

    python benchmarks/blsp_quality.py [--config configs/blsp-demo.yaml] [--set train.steps=100]

Needs the demo corpus with its intents (`polyvox data build --preset demo --out data/demo`). Every stage
resumes: continuations are cached and training restarts from its last checkpoint. Writes
benchmarks/results/blsp_quality.{json,md}; run folders go under the config's out_dir.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from _common import RESULTS, peak_rss_mb, write_result

from polyvox.config import BLSPConfig, load_config
from polyvox.eval.report import generation_markdown
from polyvox.recipes.blsp import run_continuations, run_eval, run_train


def training_stats(run: Path) -> dict:
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines() if r.strip()]
    step_s = statistics.median(r["step_s"] for r in rows)
    first, last = rows[: max(1, len(rows) // 10)], rows[-max(1, len(rows) // 10) :]
    return {"steps": rows[-1]["step"], "step_s_median": step_s,
            "ce_first_10pct": statistics.mean(r["ce"] for r in first), "ce_last_10pct": statistics.mean(r["ce"] for r in last),
            "token_acc_last_10pct": statistics.mean(r["token_acc"] for r in last)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/blsp-demo.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--kl-weight", type=float, default=0.5, help="weight of the KL term in the second run")
    args = ap.parse_args()
    base = load_config(args.config, args.set, BLSPConfig)
    root = Path(base.out_dir)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    cont = run_continuations(base)
    timings["continuations_s"] = time.perf_counter() - t
    counts = json.loads((root / "continuations.json").read_text())

    runs: dict[str, BLSPConfig] = {}
    for name, kl in (("blsp", 0.0), ("blsp+kl", args.kl_weight)):
        cfg = copy.deepcopy(base)
        cfg.loss.kl_weight = kl
        cfg.out_dir = str(root / name)
        (root / name).mkdir(parents=True, exist_ok=True)
        # both runs share step 1's continuations
        src, dst = root / "continuations.jsonl", root / name / "continuations.jsonl"
        dst.write_text(src.read_text())
        t = time.perf_counter()
        run_train(cfg, cont)
        timings[f"train_{name}_s"] = time.perf_counter() - t
        runs[name] = cfg

    results = {}
    for name, cfg in runs.items():
        if name != "blsp":
            cfg.eval.baselines = []  # the baselines do not depend on the trained adapter
        t = time.perf_counter()
        results[name] = run_eval(cfg, system=name)
        timings[f"eval_{name}_s"] = time.perf_counter() - t

    summary = {task: {system: sr["averages"] for r in results.values() for system, sr in r["tasks"][task]["systems"].items()}
               for task in results["blsp"]["tasks"]}
    md = "\n".join(generation_markdown(r) for r in results.values())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "blsp_quality.md").write_text(md)
    write_result("blsp_quality", {
        "config": args.config, "overrides": args.set, "kl_weight": args.kl_weight,
        "continuations": counts, "continuations_per_s": counts["generated"] / timings["continuations_s"]
        if counts["generated"] else None,
        "training": {name: training_stats(Path(cfg.out_dir)) for name, cfg in runs.items()},
        "summary": summary, "timings_s": timings, "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
    })


if __name__ == "__main__":
    main()
