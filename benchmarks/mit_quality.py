"""Multi-instruction training on the demo corpus: the T, MI and TMI variants and BLSP side by side.

    python benchmarks/mit_quality.py [--config configs/mit-demo.yaml] [--set train.steps=100]

Stages (each resumes; `--stage all` runs them in order):
  targets   the frozen LLM answers the TMI instructions of every training utterance (T and MI share them)
  train     one run per variant (`--variants`, default T MI TMI) under <out_dir>/<variant>, same utterances, steps
            and batch, each starting from one CTC stage: `--init-from` (default BLSP's, runs/blsp-demo/ctc/model,
            trained by benchmarks/blsp_quality.py), or, when that folder is missing, the config's CTC stage trained
            once under <out_dir>/ctc. BLSP is trained by configs/blsp-demo.yaml (resumed to done if already there)
  eval      every system on the same items: ASR, X->en translation, intent, held-out instructions; baselines
            (`--baselines`, default all): the cascade (whisper-base -> the same LLM, same xP3 prompt), the untrained
            adapter and the oracle-text LLM; with `eval.joint_ctc_weight`, each variant also transcribes by joint
            CTC/LLM decoding, "mit-<v> [ctc+llm]", and the LLM answers the other tasks from those transcripts,
            "mit-<v> [ctc+llm cascade]"; the speech systems share the encoder's states, and every answer goes to
            <out_dir>/eval-answers.jsonl (a stopped evaluation resumes there; the cascade reuses the Whisper
            transcripts BLSP's evaluation made of the same clean clips); BLSP (instruction prompts) is evaluated too
            when listed in `--variants`. Paired differences with 95 % intervals over the same items: MI and TMI
            minus T, each trained system minus the cascade and minus the untrained adapter, each joint system minus
            its variant's own answers and minus the cascade
Training stages of different variants may run at once in separate processes (`--stage train --variants T`).
A variant's training minutes (its CTC stage + its own steps) are in the JSON. Writes
benchmarks/results/mit_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import time
from pathlib import Path

import torch
from _common import RESULTS, history, peak_rss_mb, write_result

from polyvox.config import BLSPConfig, MITConfig, config_to_dict, load_config
from polyvox.data.instructions import MIT_VARIANTS
from polyvox.eval.generation import evaluate_generation
from polyvox.eval.report import generation_markdown, write_generation_report
from polyvox.eval.systems import CascadeSystem, EncoderStates, OracleTextSystem, SpeechLLMSystem
from polyvox.eval.tasks import build_tasks
from polyvox.models.answers import read_cache
from polyvox.models.asr import Transcriber
from polyvox.models.export import read_meta
from polyvox.models.speech_llm import SpeechLLM, build_speech_llm
from polyvox.recipes import blsp, mit
from polyvox.recipes.speech_llm import joint_systems, run_ctc, sample_utterances, untrained_like

log = logging.getLogger("polyvox.mit_quality")

VARIANTS = tuple(MIT_VARIANTS)  # T, MI, TMI
BASELINES = ("cascade", "cascade front-end", "untrained", "oracle")
EVALUATED = ("cascade", "untrained", "oracle")  # the baselines `--baselines` chooses from


def variant_cfg(base: MITConfig, name: str, init_from: str | None = None) -> MITConfig:
    """The config of a variant (T, MI, TMI), starting from the shared CTC stage's export `init_from`."""
    cfg = copy.deepcopy(base)
    cfg.targets.variant = name
    cfg.out_dir = str(Path(base.out_dir) / name)
    if init_from is not None:
        cfg.init_from, cfg.ctc.steps = init_from, 0
    return cfg


def stage_ctc(base: MITConfig, init_from: str) -> str:
    """The CTC stage the variants start from: `init_from` if it exists, else the config's stage trained (resumably)
    under <out_dir>/ctc. Returns the export's folder."""
    if Path(init_from).exists():
        return init_from
    model = build_speech_llm(base.model, base.train.seed)
    run_ctc(model, sample_utterances(base.data, None, base.train.seed), base.ctc, base.train, base.data, Path(base.out_dir))
    return str(Path(base.out_dir) / "ctc" / "model")


def training_stats(run: Path) -> dict:
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines() if r.strip()]
    tenth = max(1, len(rows) // 10)
    first, last = rows[:tenth], rows[-tenth:]
    out = {"steps": rows[-1]["step"], "step_s_median": statistics.median(r["step_s"] for r in rows),
           "train_min": round(sum(r["step_s"] * (r["step"] - p["step"]) for p, r in zip([{"step": 0}, *rows], rows)) / 60, 1)}
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


def stage_train(base: MITConfig, variants: list[str], init_from: str, blsp_config: tuple[str, list[str]]) -> None:
    for v in variants:
        if v == "BLSP":
            blsp.run_train(load_config(*blsp_config, BLSPConfig))
            continue
        cfg = variant_cfg(base, v, init_from)
        shared = Path(cfg.out_dir) / "cache"  # the encoder-state cache (content-keyed) of the CTC stage's run
        if not shared.exists() and (Path(init_from).parents[1] / "cache").exists():
            shared.parent.mkdir(parents=True, exist_ok=True)
            shared.symlink_to((Path(init_from).parents[1] / "cache").resolve())
        t = time.perf_counter()
        mit.run_train(cfg)
        Path(cfg.out_dir, "train_timing.json").write_text(json.dumps({"seconds": time.perf_counter() - t}))


def reused_transcripts(cache: Path, asr_model: str, bcfg: BLSPConfig) -> dict[str, str]:
    """Item id -> the transcript BLSP's evaluation got from the same Whisper front-end for the same clean clip:
    the cascade's transcripts do not depend on how its LLM is prompted, and Whisper is most of its cost."""
    if bcfg.eval.asr_model != asr_model or not cache.exists():
        return {}
    return {r["item"]: r["transcript"] for r in read_cache(cache).values()
            if r.get("system") == "cascade" and "transcript" in r and ":" not in r["task"]}


def stage_eval(base: MITConfig, variants: list[str], blsp_config: tuple[str, list[str]], with_blsp: bool,
               baselines: list[str]) -> dict:
    """Every system on the same items (with `eval.joint_ctc_weight`, each variant's joint CTC/LLM decoder and the
    LLM answering from its transcripts too); BLSP (which has its own benchmark) only `with_blsp`."""
    e = base.eval
    gen = {"max_new_tokens": e.max_new_tokens, "stop_at_newline": base.targets.stop_at_newline,
           **({"no_repeat_ngram": e.no_repeat_ngram} if e.no_repeat_ngram else {})}
    models = {f"mit-{v}": SpeechLLM.load(Path(base.out_dir) / v / "model") for v in variants}
    if e.ctc_readout is not None:
        models = {name: m.with_ctc_readout(e.ctc_readout) for name, m in models.items()}
    any_model = next(iter(models.values()))
    states = EncoderStates(any_model)  # every speech system here reads the same frozen encoder
    systems = {name: SpeechLLMSystem(m, style="pair", states=states, **gen) for name, m in models.items()}
    bcfg = load_config(*blsp_config, BLSPConfig)
    if with_blsp:
        blsp_model = SpeechLLM.load(Path(bcfg.out_dir) / "model")
        if blsp_model.cfg.encoder != any_model.cfg.encoder:
            raise ValueError(f"BLSP's encoder {blsp_model.cfg.encoder!r} is not the variants' {any_model.cfg.encoder!r}")
        systems["blsp"] = SpeechLLMSystem(blsp_model, style="instruction", states=states, **gen)
    if "cascade" in baselines:
        systems["cascade"] = CascadeSystem(any_model, Transcriber(e.asr_model), style="pair", **gen)
        reused = reused_transcripts(Path(bcfg.out_dir) / "eval-answers.jsonl", e.asr_model, bcfg)
        systems["cascade"].transcripts.update(reused)
        log.info("cascade: %d transcripts reused from BLSP's evaluation", len(reused))
    if "untrained" in baselines:
        systems["untrained"] = SpeechLLMSystem(untrained_like(any_model), style="pair", states=states, **gen)
    if "oracle" in baselines:
        systems["oracle"] = OracleTextSystem(any_model, style="pair", **gen)
    seen = set(read_meta(Path(base.out_dir) / variants[0] / "model", "speech_llm")["train_languages"])
    tasks = build_tasks(base.data.manifest, e, base.data.pivot_lang, bank=mit.bank_of(base),
                        other_langs=base.targets.other_langs)
    mit.fill_heldout_references(variant_cfg(base, "TMI"), any_model, tasks)
    t = time.perf_counter()
    names = [f"mit-{v}" for v in variants]
    compare = [(a, names[0]) for a in names[1:]] + [(a, b) for a in names + ["blsp"] * ("blsp" in systems)
                                                    for b in ("cascade", "untrained") if b in systems]
    for name in names:
        joint, pairs = joint_systems(models[name], name, states, e, tasks, {**gen, "style": "pair"},
                                     with_cascade="cascade" in systems)
        systems.update(joint)
        compare += pairs
    result = evaluate_generation(systems, tasks, Path(base.data.manifest).parent, seen, e.batch_size,
                                 cache=Path(base.out_dir) / "eval-answers.jsonl", compare=compare)
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
                      if group in r["averages"] and s not in BASELINES}
            if scores:
                out.setdefault(task, {})[group] = max(scores, key=lambda s: sign * scores[s])
    return out


def beats_cascade(differences: dict) -> dict[str, list[str]]:
    """System -> the tasks where its paired difference with the cascade favours it (over all languages)."""
    out: dict[str, list[str]] = {}
    for task, d in differences.items():
        for pair, groups in d.items():
            name, _, other = pair.partition(" - ")
            if other == "cascade":
                out.setdefault(name, [])
                out[name] += [task] * (groups.get("all", {}).get("better") == name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/mit-demo.yaml")
    ap.add_argument("--blsp-config", default="configs/blsp-demo.yaml")
    ap.add_argument("--blsp-set", action="append", default=[], help="overrides of the BLSP config")
    ap.add_argument("--init-from", default="runs/blsp-demo/ctc/model",
                    help="the CTC stage export every variant starts from (trained under <out_dir>/ctc if missing)")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--stage", choices=["targets", "train", "eval", "all"], default="all")
    ap.add_argument("--variants", nargs="+", default=[*VARIANTS, "BLSP"], choices=[*VARIANTS, "BLSP"])
    ap.add_argument("--baselines", nargs="*", default=list(EVALUATED), choices=EVALUATED,
                    help="the baselines evaluated beside the variants (default: all)")
    args = ap.parse_args()
    base = load_config(args.config, args.set, MITConfig)
    root = Path(base.out_dir)
    base.targets.cache = base.targets.cache or str(root / "targets.jsonl")  # one cache for every variant
    root.mkdir(parents=True, exist_ok=True)
    if args.stage in ("targets", "all"):
        stage_targets(base)
    init_from = stage_ctc(base, args.init_from) if args.stage in ("train", "all") else args.init_from
    if args.stage in ("train", "all"):
        stage_train(base, args.variants, init_from, (args.blsp_config, args.blsp_set))
    if args.stage not in ("eval", "all"):
        return
    variants = [v for v in args.variants if v != "BLSP"]
    with_blsp = "BLSP" in args.variants
    result = stage_eval(base, variants, (args.blsp_config, args.blsp_set), with_blsp, args.baselines)
    summary = {task: {s: {"averages": r["averages"], "intervals": r.get("intervals", {})}
                      for s, r in t["systems"].items()} for task, t in result["tasks"].items()}
    differences = {task: t["differences"] for task, t in result["tasks"].items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mit_quality.md").write_text(generation_markdown(result, "T, MI, TMI and BLSP on the demo corpus"))
    timing = json.loads((root / "targets_timing.json").read_text())
    ctc_run = Path(read_meta(root / variants[0] / "model", "speech_llm").get("init_from") or root / "ctc" / "model").parent
    ctc_stage = training_stats(ctc_run) if (ctc_run / "metrics.jsonl").exists() else {}
    earlier = history("mit_quality", ("config", "overrides", "training", "summary", "differences", "items"))
    write_result("mit_quality", {
        "config": args.config, "blsp_config": args.blsp_config, "overrides": args.set,
        "targets": timing, "llm_answers_per_s": timing["llm"]["generated"] / timing["seconds"]
        if timing["llm"]["generated"] else None,
        "ctc_stage": {"run": str(ctc_run), **ctc_stage},
        "training": {v: (st := training_stats(root / v)) | {"train_min_with_ctc": round(st["train_min"]
                                                                                         + ctc_stage.get("train_min", 0), 1)}
                     | json.loads((root / v / "train_timing.json").read_text()) for v in variants},
        "blsp_training": training_stats(Path(load_config(args.blsp_config, args.blsp_set, BLSPConfig).out_dir))
        if with_blsp else None,
        "summary": summary, "differences": differences,
        "beats_cascade": beats_cascade(differences),
        "winners": winners(result), "eval_s": result["eval_s"],
        "items": {task: len(t["languages"]) and sum(r["n"] for r in t["languages"].values())
                  for task, t in result["tasks"].items()},
        "torch_threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(), "history": earlier,
    })

if __name__ == "__main__":
    main()
