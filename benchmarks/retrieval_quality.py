"""Retrieval quality of the demo next to its baselines, on the same data and units.

    python benchmarks/retrieval_quality.py [--config configs/demo.yaml] [--run-dir runs/demo]

1. the dual encoder initialised from the LLM (the `polyvox demo` model; reused if already trained),
2. the same dual encoder with a randomly initialised backbone (same architecture, same training),
3. chance (expected R@1 of a random ranking of each language's candidates).
Reports per-language R@1 and seen / unseen macro averages.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from _common import write_result

from polyvox.config import load_config
from polyvox.recipes.retrieval import run_eval, run_train, run_units_encode, run_units_fit, units_dir


def summary(result: dict) -> dict:
    avg = result["averages"]
    return {group: {k: avg[group][k] for k in ("R@1", "R@5", "R@10", "xling_R@1", "chance_R@1") if k in avg[group]}
            for group in avg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--run-dir", default="runs/demo")
    ap.add_argument("--manifest", default="data/demo/manifest.jsonl")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, [f"out_dir={args.run_dir}", f"data.manifest={args.manifest}", *args.set])
    run = Path(args.run_dir)
    timings = {}
    if not (units_dir(cfg) / "units.json").exists():
        run_units_fit(cfg)
    units, _ = run_units_encode(cfg)
    if not (run / "model" / "model.json").exists():
        t = time.perf_counter()
        run_train(cfg, units)
        timings["llm_train_s"] = time.perf_counter() - t
    llm = run_eval(cfg, name="eval")

    base = load_config(args.config, [f"out_dir={run / 'random_init'}", f"data.manifest={args.manifest}",
                                     "model.random_init=true", *args.set])
    if (run / "random_init").exists():
        shutil.rmtree(run / "random_init")
    shutil.copytree(units_dir(cfg), units_dir(base))
    shutil.copytree(run / "cache", run / "random_init" / "cache")
    t = time.perf_counter()
    run_train(base, units)
    timings["random_train_s"] = time.perf_counter() - t
    rand = run_eval(base, name="eval")

    per_lang = {lang: {"seen": r["seen"], "n": r["n"], "candidates": r["candidates"], "llm_R@1": r["R@1"],
                       "random_init_R@1": rand["languages"][lang]["R@1"], "chance_R@1": r["chance_R@1"],
                       "llm_xling_R@1": r.get("xling_R@1"), "random_init_xling_R@1": rand["languages"][lang].get("xling_R@1")}
                for lang, r in llm["languages"].items()}
    write_result("retrieval_demo", {
        "config": args.config, "overrides": args.set,
        "summary": {"llm_init": summary(llm), "random_init": summary(rand)},
        "languages": per_lang, "timings_s": timings,
        "corpus": json.loads((Path(args.manifest).parent / "corpus.json").read_text()).get("counts")
        if (Path(args.manifest).parent / "corpus.json").exists() else None,
    })


if __name__ == "__main__":
    main()
