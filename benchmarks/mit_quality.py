"""Multi-instruction training on the demo corpus: the T, MI and TMI variants and BLSP side by side.

    python benchmarks/mit_quality.py [--config configs/mit-demo.yaml] [--set train.steps=100]

Stages (each resumes; `--stage all` runs them in order):
  targets   the frozen LLM answers the TMI instructions of every training utterance (T and MI share them)
  train     one run per variant (`--variants`, default T MI TMI TMI+CTC) under <out_dir>/<variant>, same
            utterances, steps and batch (TMI+CTC: 100 CTC-stage steps first); BLSP is trained by
            configs/blsp-demo.yaml (resumed to done if already there)
  eval      every system on the same items: ASR, X->en translation, intent, held-out instructions; baselines:
            the cascade (whisper-base -> the same LLM, same xP3 prompt) and the untrained adapter
Training stages of different variants may run at once in separate processes (`--stage train --variants T`).
Writes benchmarks/results/mit_quality.{json,md}.
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

from polyvox.config import BLSPConfig, MITConfig, config_to_dict, load_config
from polyvox.eval.generation import CascadeSystem, SpeechLLMSystem, build_tasks, evaluate_generation
from polyvox.eval.report import generation_markdown, write_generation_report
from polyvox.models.asr import Transcriber
from polyvox.models.export import read_meta
from polyvox.models.speech_llm import SpeechLLM
from polyvox.recipes import blsp, mit
from polyvox.recipes.speech_llm import untrained_like

VARIANTS = ("T", "MI", "TMI", "TMI+CTC")
CTC_STEPS = 100  # of the TMI+CTC arm's CTC stage, before the same cross-entropy steps as the others


def variant_cfg(base: MITConfig, name: str) -> MITConfig:
    """The config of an arm: a variant (T, MI, TMI), with the CTC stage first for ``TMI+CTC``."""
    cfg = copy.deepcopy(base)
    cfg.targets.variant, _, ctc = name.partition("+")
    cfg.ctc.steps = CTC_STEPS if ctc else 0
    cfg.out_dir = str(Path(base.out_dir) / name)
    return cfg


def training_stats(run: Path) -> dict:
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines() if r.strip()]
    tenth = max(1, len(rows) // 10)
    first, last = rows[:tenth], rows[-tenth:]
    out = {"steps": rows[-1]["step"], "step_s_median": statistics.median(r["step_s"] for r in rows)}
    if (run / "ctc" / "metrics.jsonl").exists():
        out["ctc_stage"] = training_stats(run / "ctc")
    for key in ("ce", "ce_T", "ce_MI", "token_acc", "ctc", "ctc_skipped"):
        a, b = [r[key] for r in first if key in r], [r[key] for r in last if key in r]
        if a and b:
            out[f"{key}_first_10pct"], out[f"{key}_last_10pct"] = statistics.mean(a), statistics.mean(b)
    return out


def stage_targets(base: MITConfig) -> None:
    cfg = variant_cfg(base, "TMI")
    t = time.perf_counter()
    mit.run_targets(cfg)
    seconds = time.perf_counter() - t
    counts = json.loads((Path(cfg.out_dir) / "targets.json").read_text())
    Path(base.out_dir, "targets_timing.json").write_text(json.dumps({"seconds": seconds, **counts}, indent=2))


def stage_train(base: MITConfig, variants: list[str], blsp_config: tuple[str, list[str]]) -> None:
    for v in variants:
        if v == "BLSP":
            blsp.run_train(load_config(*blsp_config, BLSPConfig))
            continue
        t = time.perf_counter()
        mit.run_train(variant_cfg(base, v))
        Path(base.out_dir, v, "train_timing.json").write_text(json.dumps({"seconds": time.perf_counter() - t}))


def stage_eval(base: MITConfig, variants: list[str], blsp_config: tuple[str, list[str]]) -> dict:
    bcfg = load_config(*blsp_config, BLSPConfig)
    e = base.eval
    gen = {"max_new_tokens": e.max_new_tokens, "stop_at_newline": base.targets.stop_at_newline}
    models = {f"mit-{v}": SpeechLLM.load(Path(base.out_dir) / v / "model") for v in variants}
    systems = {name: SpeechLLMSystem(m, style="pair", **gen) for name, m in models.items()}
    blsp_dir = Path(bcfg.out_dir) / "model"
    systems["blsp"] = SpeechLLMSystem(SpeechLLM.load(blsp_dir), style="instruction", **gen)
    any_model = next(iter(models.values()))
    systems["cascade"] = CascadeSystem(any_model, Transcriber(e.asr_model), style="pair", **gen)
    systems["untrained"] = SpeechLLMSystem(untrained_like(any_model), style="pair", **gen)
    seen = set(read_meta(Path(base.out_dir) / variants[0] / "model", "speech-LLM")["train_languages"])
    tasks = build_tasks(base.data.manifest, e, base.data.pivot_lang, bank=mit.bank_of(base),
                        other_langs=base.targets.other_langs)
    mit.fill_heldout_references(variant_cfg(base, "TMI"), any_model, tasks)
    t = time.perf_counter()
    result = evaluate_generation(systems, tasks, Path(base.data.manifest).parent, seen, e.batch_size)
    result["eval_s"] = time.perf_counter() - t
    write_generation_report(result, base.out_dir, "comparison", config_to_dict(base))
    return result


def winners(result: dict) -> dict:
    """Per task and seen/unseen/all: the trained system with the best headline (baselines left out)."""
    out = {}
    for task, t in result["tasks"].items():
        sign = 1 if t["higher_is_better"] else -1
        for group in ("seen", "unseen", "all"):
            scores = {s: r["averages"][group][t["headline"]] for s, r in t["systems"].items()
                      if group in r["averages"] and s not in ("cascade", "untrained", "cascade front-end")}
            if scores:
                out.setdefault(task, {})[group] = max(scores, key=lambda s: sign * scores[s])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/mit-demo.yaml")
    ap.add_argument("--blsp-config", default="configs/blsp-demo.yaml")
    ap.add_argument("--blsp-set", action="append", default=["out_dir=runs/blsp-demo/blsp"],
                    help="overrides of the BLSP config (default: the run of benchmarks/blsp_quality.py)")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--stage", choices=["targets", "train", "eval", "all"], default="all")
    ap.add_argument("--variants", nargs="+", default=[*VARIANTS, "BLSP"], choices=[*VARIANTS, "BLSP"])
    args = ap.parse_args()
    base = load_config(args.config, args.set, MITConfig)
    root = Path(base.out_dir)
    base.targets.cache = base.targets.cache or str(root / "targets.jsonl")  # one cache for every variant
    root.mkdir(parents=True, exist_ok=True)
    if args.stage in ("targets", "all"):
        stage_targets(base)
    if args.stage in ("train", "all"):
        stage_train(base, args.variants, (args.blsp_config, args.blsp_set))
    if args.stage not in ("eval", "all"):
        return
    variants = [v for v in args.variants if v != "BLSP"]
    result = stage_eval(base, variants, (args.blsp_config, args.blsp_set))
    summary = {task: {s: r["averages"] for s, r in t["systems"].items()} for task, t in result["tasks"].items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mit_quality.md").write_text(generation_markdown(result, "T, MI, TMI and BLSP on the demo corpus"))
    timing = json.loads((root / "targets_timing.json").read_text())
    write_result("mit_quality", {
        "config": args.config, "blsp_config": args.blsp_config, "overrides": args.set,
        "targets": timing, "llm_answers_per_s": timing["llm"]["generated"] / timing["seconds"]
        if timing["llm"]["generated"] else None,
        "training": {v: {**training_stats(root / v), **json.loads((root / v / "train_timing.json").read_text())}
                     for v in variants},
        "blsp_training": training_stats(Path(load_config(args.blsp_config, args.blsp_set, BLSPConfig).out_dir)),
        "summary": summary, "winners": winners(result), "eval_s": result["eval_s"],
        "items": {task: len(t["languages"]) and sum(r["n"] for r in t["languages"].values())
                  for task, t in result["tasks"].items()},
        "torch_threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(),
    })


if __name__ == "__main__":
    main()
