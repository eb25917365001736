"""BLSP on the demo corpus: arms of the recipe trained on the same data, then every system on the same items
(ASR, X -> en translation, intent, continuation; ASR again on telephone-band and 10 dB-noise copies) against the
cascade, the untrained adapter and the oracle-text ceiling, with 95 % bootstrap intervals.

    python benchmarks/blsp_quality.py [--config configs/blsp-demo.yaml] [--arms blsp,blsp+kl] [--stages]

Arms (`ARMS`, overrides of the config): ``blsp`` is the config itself (CTC stage -> ASR warm-up -> behaviour
alignment; its run folder is the config's out_dir, what `polyvox train blsp` writes); the others run under
<out_dir>/<arm>, sharing the stages they do not change (symlinked: the same stage is trained once). `--stages`
also evaluates the first arm's stage exports (ctc/model, warmup/model; clean tasks only): quality against
training minutes.
Every stage resumes, and so does evaluation: the answers go to <out_dir>/eval-answers.jsonl, which every evaluation
shares (the baselines do not depend on the trained adapter: they are asked once). Needs the config's corpus with its
intents (`polyvox data build --preset demo --set train_per_lang=3900 --out data/demo-4k`).
Writes benchmarks/results/blsp_quality.{json,md}; earlier results are kept in the JSON under ``history``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

from _common import RESULTS, history, peak_rss_mb, write_result

from polyvox.config import BLSPConfig, load_config
from polyvox.eval.report import generation_markdown
from polyvox.recipes.blsp import run_continuations, run_eval, run_train

ARMS: dict[str, list[str]] = {
    "blsp": [],
    "blsp+kl": ["loss.kl_weight=0.5", "loss.kl_temperature=2.0"],  # Ultravox's text-teacher KL
    "no-warmup": ["asr_warmup.steps=0"],
    "paper": ["model.adapter=conv-glu", "model.ctc_readout=null", "ctc.steps=0", "asr_warmup.steps=0"],
    # a CTC head over characters (README, BLSP probes: a fifth of the cost per step of token classes, half the CER),
    # kept as the model's transcriber; the CTC stage alone (no alignment through the LLM, which would read the
    # adapter's 12.5 Hz frames: a character head has no token rows to compress them onto); it transcribes by its
    # best path ([ctc]) and by its 16-best list rescored by the LLM ([ctc+llm]; weights chosen on held-out sentences)
    "chars": ["model.ctc_readout=null", "ctc.classes=chars", "ctc.char_split=2", "ctc.steps=3000", "train.steps=0",
              "eval.ctc_readout=null", "eval.compare_readouts=[]", "eval.speech_positions=false",
              "eval.joint_ctc_weight=0.5", "eval.joint_length_bonus=1.0", "eval.joint_beam=16"],
}
"""Arm name -> config overrides."""

STAGES = {"ctc": ("model", "ctc"), "warmup": ("model", "ctc", "asr_warmup")}
"""A stage folder -> the config sections it depends on (with data and train): arms equal there share it."""


def stage_key(cfg: BLSPConfig, stage: str) -> str:
    parts = {k: asdict(getattr(cfg, k)) for k in ("data", "train", *STAGES[stage])}
    return json.dumps(parts, sort_keys=True, default=str)


def share_stages(cfg: BLSPConfig, base: BLSPConfig) -> list[str]:
    """Symlink the base run's stage folders (and its encoder-state cache and continuations) that `cfg` would train
    the same way; returns the shared stages."""
    out, src = Path(cfg.out_dir), Path(base.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shared = []
    for name in ("cache", "continuations.jsonl", *(s for s in STAGES if stage_key(cfg, s) == stage_key(base, s))):
        if (src / name).exists() and not (out / name).exists():
            (out / name).symlink_to(src / name)
        if name in STAGES:
            shared.append(name)
    return shared


def curve(run: Path, metric: str) -> dict:
    """A stage's training curve: steps, minutes (step time, each logged step's time standing for the steps since the
    previous log) and the metric, at every logged step."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(r) for r in path.read_text().splitlines() if r.strip()]
    minutes, total, last = [], 0.0, 0
    for r in rows:
        total += r["step_s"] * (r["step"] - last)
        last = r["step"]
        minutes.append(round(total / 60, 2))
    return {"steps": [r["step"] for r in rows], "minutes": minutes, metric: [round(r[metric], 4) for r in rows],
            "train_min": round(total / 60, 1)}


def headline(result: dict) -> dict:
    """task -> system -> seen / unseen / all: the headline metric, agreement and their 95 % intervals."""
    out = {}
    for task, t in result["tasks"].items():
        out[task] = {}
        for name, sr in t["systems"].items():
            out[task][name] = {g: {k: v for k, v in avg.items() if k in (t["headline"], "agreement")}
                               | {f"{k}_ci": ci for k, ci in sr.get("intervals", {}).get(g, {}).items()}
                               for g, avg in sr["averages"].items()}
    return out


def targets(result: dict, system: str) -> dict:
    """The issue's bars: ASR CER on seen languages <= 40 %; agreement halfway from the untrained adapter to a
    perfect match on translation and continuation; better than the cascade on 2 of asr / translation / intent
    (macro average over all languages, its paired 95 % interval clear of zero). With joint CTC/LLM decoding on, the
    same bars for the model through its joint decoder (``asr_joint``, ``through_joint_decoder``); with a character
    CTC head, through its LLM-rescored transcripts (``[ctc+llm]``), or its best path (``[ctc]``) without them."""
    t = result["tasks"]

    def avg(task, name, metric, group="seen"):  # None when the task or system was not evaluated
        return t.get(task, {}).get("systems", {}).get(name, {}).get("averages", {}).get(group, {}).get(metric)

    out = {"asr_cer_seen": avg("asr", system, "CER"), "asr_cer_seen_le_40": None, "beats_cascade": {}}
    if out["asr_cer_seen"] is not None:
        out["asr_cer_seen_le_40"] = out["asr_cer_seen"] <= 0.40
    # the same model transcribing with its CTC head: joint CTC/LLM decoding (eval.joint_ctc_weight), or characters
    tag = next((g for g in ("ctc+llm", "ctc") if f"{system} [{g}]" in t.get("asr", {}).get("systems", {})), "ctc+llm")
    joint = f"{system} [{tag}]"
    if (cer_joint := avg("asr", joint, "CER")) is not None:
        paired = t["asr"].get("differences", {}).get(f"{joint} - cascade", {}).get("all")
        out["asr_joint"] = {"system": joint, "cer_seen": cer_joint, "cer_seen_le_40": cer_joint <= 0.40,
                            "beats_cascade": None if paired is None else paired["better"] == joint}
    def halfway(name: str) -> dict:  # agreement at least halfway from the untrained adapter's to a perfect match
        res = {}
        for task in ("translation", "continuation"):
            a, u = avg(task, name, "agreement", "all"), avg(task, "untrained", "agreement", "all")
            if a is not None and u is not None:
                res[task] = {"system": a, "untrained": u, "halfway": (u + 100) / 2, "met": a >= (u + 100) / 2}
        return res

    out["agreement_halfway"] = halfway(system)
    for task, metric, lower in (("asr", "CER", True), ("translation", "chrF", False), ("intent", "accuracy", False)):
        a, c = avg(task, system, metric, "all"), avg(task, "cascade", metric, "all")
        if a is not None and c is not None:
            paired = t[task].get("differences", {}).get(f"{system} - cascade", {}).get("all")
            ahead = a < c if lower else a > c  # with a paired interval, it must also clear zero
            out["beats_cascade"][task] = {"system": a, "cascade": c, "paired_difference": paired,
                                          "met": ahead if paired is None else paired["better"] == system}
    out["beats_cascade_on_2_of_3"] = sum(v["met"] for v in out["beats_cascade"].values()) >= 2
    # the same model through its joint decoder: ASR itself, the other tasks by the LLM reading its transcripts
    chained = {"asr": joint, "translation": f"{system} [{tag} cascade]", "intent": f"{system} [{tag} cascade]"}
    via = {}
    for task, name in chained.items():
        paired = t.get(task, {}).get("differences", {}).get(f"{name} - cascade", {}).get("all")
        if paired is not None:
            via[task] = {"system": name, "paired_difference": paired, "met": paired["better"] == name}
    if via:
        out["through_joint_decoder"] = {"beats_cascade": via,
                                        "beats_cascade_on_2_of_3": sum(v["met"] for v in via.values()) >= 2,
                                        "agreement_halfway": halfway(f"{system} [{tag} cascade]")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/blsp-demo.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--arms", default="blsp", help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--stages", action="store_true", help="also evaluate the first arm's stage exports")
    args = ap.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    base = load_config(args.config, args.set, BLSPConfig)
    root = Path(base.out_dir)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    cont = run_continuations(base)
    timings["continuations_s"] = time.perf_counter() - t
    counts = json.loads((root / "continuations.json").read_text())

    runs: dict[str, BLSPConfig] = {}
    shared: dict[str, list[str]] = {}
    for arm in arms:
        cfg = load_config(args.config, [*args.set, *ARMS[arm]], BLSPConfig)
        if arm != "blsp":
            cfg.out_dir = str(root / arm)
            shared[arm] = share_stages(cfg, base)
        t = time.perf_counter()
        run_train(cfg, cont)
        timings[f"train_{arm}_s"] = time.perf_counter() - t
        runs[arm] = cfg

    earlier = history("blsp_quality", ("config", "overrides", "summary", "training"))
    results, evals = {}, []

    def write() -> None:
        md = "\n".join(generation_markdown(r, title=f"Zero-shot speech LLM evaluation: {n}") for n, r in results.items())
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "blsp_quality.md").write_text(md)
        write_result("blsp_quality", {
            "config": args.config, "overrides": args.set, "arms": {a: ARMS[a] for a in arms}, "shared_stages": shared,
            "continuations": counts,
            "training": {arm: {"ctc": curve(Path(cfg.out_dir) / "ctc", "ctc"),
                               "warmup": curve(Path(cfg.out_dir) / "warmup", "ce"),
                               "alignment": curve(Path(cfg.out_dir), "ce")} for arm, cfg in runs.items()},
            "targets": {name: targets(r, name) for name, r in results.items()},
            "summary": {name: headline(r) for name, r in results.items()},
            "timings_s": timings, "peak_rss_mb": peak_rss_mb(), "history": earlier,
        })

    for i, (arm, cfg) in enumerate(runs.items()):
        evals.append((arm, cfg, None, arm))
        if args.stages and i == 0:
            evals += [(f"{arm} after {s}", cfg, Path(cfg.out_dir) / s / "model", f"eval-{s}") for s in STAGES
                      if (Path(cfg.out_dir) / s / "model").exists()]
    for name, cfg, folder, report in evals:
        cfg = copy.deepcopy(cfg)
        cfg.eval.answer_cache = cfg.eval.answer_cache or str(root / "eval-answers.jsonl")  # baselines asked once
        if folder is not None:
            cfg.eval.conditions = []  # a stage export: the clean tasks only
        t = time.perf_counter()
        results[name] = run_eval(cfg, folder, name=report, system=name)
        timings[f"eval_{name}_s"] = time.perf_counter() - t
        write()  # after each evaluation: a run stopped in a later one keeps the earlier results


if __name__ == "__main__":
    main()
