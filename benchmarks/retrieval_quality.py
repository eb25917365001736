"""Retrieval quality of the demo dual encoder next to its baselines: same data, units and candidate pools.

    python benchmarks/retrieval_quality.py [--config configs/demo.yaml] [--run-dir runs/bench]
        [--arms dual_encoder,random_init,no_translations] [--seeds 0] [--cascade-per-lang 60]
        [--text-encoder me5-small]
        [--conditions telephone,noise10db,reverb]

Systems (each scored on the same test queries, per language, among all distinct transcripts of the language):
- dual_encoder: the `polyvox demo` configuration (reused from ``<run-dir>/dual_encoder`` if trained);
- random_init: the same dual encoder with a randomly initialised backbone (claim: LLM init helps unseen languages);
- no_translations / with_translations: the dual encoder with the text<->text translation-pair loss switched
  off (or on), against the default (claim: translation pairs help cross-lingual retrieval);
- no_speech_translation: the dual encoder without the speech<->English loss (each clip against its translation);
- paper: the paper-style configuration (`configs/demo-paper.yaml`: k-means units, mean pooling, no adapter);
- "<arm>: direct paths only" / "<arm>: LLM path only": a trained dual_encoder or random_init model whose paths
  are concatenated (`model.direct_weight`), scored with one path's weight near 1: what each path carries;
- probe: the linear probe of the same units (`polyvox units probe`), no training loop;
- cascade: whisper-base transcripts (language given) ranked against the candidates by character n-gram
  TF-IDF cosine, on a fixed sample of queries per language (the same sample is scored for every system);
- "cascade -> me5-small": the same transcripts embedded by the text-only encoder `--text-encoder` (me5-small:
  multilingual-e5-small), which also ranks the English translations (X→en), as the speech systems do;
- "gold transcript -> me5-small": the text encoder reading the gold transcript, every query: the text-only
  ceiling of cross-lingual retrieval (same-language R@1 is near 100 % by construction).
Every macro number has a 95 % bootstrap interval over queries (and the spread over seeds when there are
several). Robustness: the dual encoder on degraded copies of the test audio. Writes
benchmarks/results/retrieval_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, history, peak_rss_mb, write_result

from polyvox.config import load_config
from polyvox.data.manifest import read_manifest
from polyvox.eval.metrics import best_ranks, bootstrap_macro, paired_difference
from polyvox.eval.probe import linear_probe
from polyvox.eval.retrieval import evaluate_retrieval
from polyvox.models.dual_encoder import DualEncoder
from polyvox.models.sources import load_text_encoder
from polyvox.models.units import load_speech_tokenizer
from polyvox.recipes.retrieval import (
    run_degraded_encode,
    run_eval,
    run_train,
    run_units_encode,
    run_units_fit,
    units_dir,
)

CASCADE = "cascade"
"""Systems whose names start with it are scored on the fixed sample of queries only."""
ARMS = {
    "dual_encoder": [],
    "random_init": ["model.random_init=true"],
    "no_translations": ["loss.translation_weight=0"],
    "with_translations": ["loss.translation_weight=0.5"],
    "no_speech_translation": ["loss.speech_translation_weight=0"],
}


def intervals(hits: dict[str, dict[str, list[int]]], seen: set[str], sample: dict[str, list[int]] | None = None) -> dict:
    """Macro R@1 (+ cross-lingual) with bootstrap intervals, for seen and unseen languages."""
    out = {}
    for group, keep in (("seen", True), ("unseen", False)):
        for metric in ("R@1", "xling_R@1"):
            per = {lg: [h[metric][i] for i in (sample[lg] if sample else range(len(h[metric])))]
                   for lg, h in hits.items() if (lg in seen) == keep and metric in h}
            if per:
                mean, lo, hi = bootstrap_macro(per)
                out[f"{group}_{metric}"] = {"mean": mean, "ci95": [lo, hi], "languages": len(per)}
    return out


CLAIMS = [
    ("LLM initialisation beats random initialisation", "dual_encoder", "random_init", ("unseen_R@1", "seen_R@1")),
    ("translation pairs improve cross-lingual retrieval", "dual_encoder", "no_translations",
     ("seen_xling_R@1", "unseen_xling_R@1")),
]
"""(claim, system, baseline, metrics): paired differences system - baseline over the same queries."""


def claim_result(a: dict[int, dict], b: dict[int, dict], metric: str, seen: set[str]) -> dict:
    """`paired_difference` of two arms on `metric` (e.g. ``unseen_R@1``) over their common seeds.
    `a`, `b`: seed -> hits (language -> metric -> per query)."""
    group, name = metric.split("_", 1)
    seeds = sorted(set(a) & set(b))
    pick = [lg for lg in a[seeds[0]] if (lg in seen) == (group == "seen") and name in a[seeds[0]][lg]]
    r = paired_difference([{lg: a[s][lg][name] for lg in pick} for s in seeds],
                          [{lg: b[s][lg][name] for lg in pick} for s in seeds])
    return {**r, "seeds": dict(zip(seeds, r["seeds"], strict=True))}


def whisper_transcripts(cfg, utts, sample: dict[str, list[int]]) -> dict[str, list[str]]:
    """whisper-base transcripts (language given) of each language's sampled queries."""
    from polyvox.audio import load_audio
    from polyvox.models.asr import Transcriber

    asr = Transcriber(cfg.units.encoder)
    root = Path(cfg.data.manifest).parent
    return {lang: asr.transcribe([load_audio(us[i].audio_path(root)) for i in sample[lang]], lang)
            for lang, us in sorted(by_language(utts).items())}


def cached_transcripts(path: Path, cfg, utts, sample: dict[str, list[int]]) -> dict[str, list[str]]:
    """`whisper_transcripts`, reused from `path` when made from the same queries (ids, texts and audio paths)
    and the same encoder: they do not depend on any trained system, and cost ~20 min on 2 cores."""
    groups = by_language(utts)
    key = {"encoder": cfg.units.encoder, "queries": {lg: [[groups[lg][i].id, groups[lg][i].text, groups[lg][i].audio]
                                                          for i in idx] for lg, idx in sorted(sample.items())}}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached["key"] == key:
            return cached["transcripts"]
    transcripts = whisper_transcripts(cfg, utts, sample)
    path.write_text(json.dumps({"key": key, "transcripts": transcripts}, ensure_ascii=False))
    return transcripts


def tfidf_hits(queries: dict[str, list[str]], picked: dict[str, list[int]], utts, train_texts: list[str]) -> dict:
    """Query texts ranked against the language's distinct transcripts by character 1..4-gram TF-IDF cosine
    (fitted on the training transcripts); `queries[lang][j]` stands for query `picked[lang][j]`."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True).fit(train_texts)
    hits = {}
    for lang, us in sorted(by_language(utts).items()):
        cands = list(dict.fromkeys(u.text for u in us))
        scores = (vec.transform(queries[lang]) @ vec.transform(cands).T).toarray()
        ranks = best_ranks(scores, [cands.index(us[i].text) for i in picked[lang]])
        hits[lang] = {"R@1": (ranks == 0).astype(int).tolist()}
    return {"hits": hits}


class Memo:
    """A text encoder that embeds each distinct text once (the systems share their candidate pools)."""

    def __init__(self, encoder):
        self.encoder, self.rows = encoder, {}

    def encode_text(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if new:
            self.rows.update(zip(new, self.encoder.encode_text(new), strict=True))
        return np.stack([self.rows[t] for t in texts])


def text_encoder_hits(encoder, queries: dict[str, list[str]], picked: dict[str, list[int]], utts, pivot: str) -> dict:
    """Query texts (transcripts) embedded by a text-only encoder and ranked, as `evaluate_retrieval` ranks speech:
    against the language's distinct transcripts (R@1) and its distinct `pivot` translations (X→en R@1)."""
    hits = {}
    for lang, us in sorted(by_language(utts).items()):
        q = encoder.encode_text(queries[lang])
        mine = [us[i] for i in picked[lang]]
        cands = list(dict.fromkeys(u.text for u in us))
        ranks = best_ranks(q @ encoder.encode_text(cands).T, [cands.index(u.text) for u in mine])
        hits[lang] = {"R@1": (ranks == 0).astype(int).tolist()}
        if lang != pivot and all(pivot in u.translations for u in us):
            x_cands = list(dict.fromkeys(u.translations[pivot] for u in us))
            x_ranks = best_ranks(q @ encoder.encode_text(x_cands).T, [x_cands.index(u.translations[pivot]) for u in mine])
            hits[lang]["xling_R@1"] = (x_ranks == 0).astype(int).tolist()
    return {"hits": hits}


def share_folders(run: Path, out: Path, names: tuple[str, ...]) -> None:
    """Arms on the run's units share its tokenizer, augmented copies and encoding cache (content-keyed, so
    sharing is safe): each copy is written and encoded once for all arms and seeds."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        (run / name).mkdir(exist_ok=True)
        if not (out / name).exists():
            (out / name).symlink_to((run / name).resolve(), target_is_directory=True)


def by_language(utts) -> dict[str, list]:
    out: dict[str, list] = {}
    for u in utts:
        out.setdefault(u.lang, []).append(u)
    return out


def path_scores(model: DualEncoder, weight: float, utts, units, seen: set[str], cfg) -> dict:
    """A trained model scored with its paths re-weighted (`model.direct_weight`): how much each path carries."""
    model.cfg.direct_weight = weight
    return evaluate_retrieval(model, utts, units, seen, cfg.data.pivot_lang, tuple(cfg.eval.ks), cfg.eval.batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--run-dir", default="runs/bench")
    ap.add_argument("--manifest", default="data/demo/manifest.jsonl")
    ap.add_argument("--arms", default="dual_encoder,random_init,no_translations")
    ap.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2")
    ap.add_argument("--cascade-per-lang", type=int, default=60, help="0 skips the cascade")
    ap.add_argument("--text-encoder", default="me5-small", help="text-only baseline preset ('' skips it)")
    ap.add_argument("--conditions", default="telephone,noise10db,reverb", help="degraded test copies ('' for none)")
    ap.add_argument("--paper-config", default="configs/demo-paper.yaml", help="'' skips the paper-style arm")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    run = Path(args.run_dir)
    base = [f"data.manifest={args.manifest}", *args.set]
    cfg = load_config(args.config, [f"out_dir={run}", *base])
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not (units_dir(cfg) / "units.json").exists():
        run_units_fit(cfg)
    units, _ = run_units_encode(cfg)
    timings["units_s"] = time.perf_counter() - t
    train_utts = read_manifest(args.manifest, split=cfg.data.train_split)
    test_utts = [u for u in read_manifest(args.manifest, split=cfg.data.test_split) if u.id in units]
    seen = {u.lang for u in train_utts}
    rng = np.random.default_rng(0)
    sample = {lg: sorted(rng.choice(len(us), min(args.cascade_per_lang or len(us), len(us)), replace=False).tolist())
              for lg, us in by_language(test_utts).items()}

    systems: dict[str, dict] = {}
    seed_hits: dict[str, dict[int, dict]] = {}
    t = time.perf_counter()
    probe = linear_probe(train_utts, test_utts, units)
    timings["probe_s"] = time.perf_counter() - t
    systems["probe"] = {"hits": probe["hits"], "averages": probe["averages"]}

    runs = [(arm, ARMS[arm], args.config) for arm in args.arms.split(",") if arm]
    if args.paper_config:
        runs.append(("paper", [], args.paper_config))
    for arm, overrides, config in runs:
        seeds = {}
        for seed in [int(s) for s in args.seeds.split(",")]:
            out = run / (arm if seed == 0 else f"{arm}-seed{seed}")
            arm_cfg = load_config(config, [f"out_dir={out}", *base, *overrides, f"train.seed={seed}"])
            arm_units = units
            if config != args.config:  # its own units (e.g. k-means), fitted and encoded in its own folder
                if not (units_dir(arm_cfg) / "units.json").exists():
                    run_units_fit(arm_cfg)
                arm_units, _ = run_units_encode(arm_cfg)
            else:
                share_folders(run, out, ("units", "augmented", "cache"))
            if not (out / "model" / "model.json").exists():
                t = time.perf_counter()
                run_train(arm_cfg, arm_units)
                timings[f"{out.name}_train_s"] = time.perf_counter() - t
            seeds[seed] = run_eval(arm_cfg, units=arm_units)
        first = seeds[min(seeds)]
        systems[arm] = {"hits": first["hits"], "averages": first["averages"],
                        "seeds": {s: r["averages"] for s, r in seeds.items()}}
        seed_hits[arm] = {s: r["hits"] for s, r in seeds.items()}
        if arm in ("dual_encoder", "random_init") and arm_cfg.model.direct_weight:
            model = DualEncoder.load(run / arm / "model")
            for part, w in (("direct paths only", 0.999), ("LLM path only", 0.001)):
                r = path_scores(model, w, test_utts, arm_units, seen, arm_cfg)
                systems[f"{arm}: {part}"] = {"hits": r["hits"], "averages": r["averages"]}
        if arm == "paper":
            probe_k = linear_probe(train_utts, test_utts, arm_units)
            systems["probe_paper_units"] = {"hits": probe_k["hits"], "averages": probe_k["averages"]}

    if args.cascade_per_lang:
        t = time.perf_counter()
        transcripts = cached_transcripts(run / "cascade-transcripts.json", cfg, test_utts, sample)
        timings["cascade_s"] = time.perf_counter() - t
        systems[CASCADE] = tfidf_hits(transcripts, sample, test_utts, [u.text for u in train_utts])
        systems[CASCADE]["examples"] = {lg: ts[:5] for lg, ts in transcripts.items()}
    if args.text_encoder:  # the text-only baseline: from whisper's transcripts, and from the gold ones (its ceiling)
        encoder = Memo(load_text_encoder(args.text_encoder))
        groups = by_language(test_utts)
        every = {lg: list(range(len(us))) for lg, us in groups.items()}
        gold = {lg: [u.text for u in us] for lg, us in groups.items()}
        if args.cascade_per_lang:
            systems[f"{CASCADE} -> {args.text_encoder}"] = text_encoder_hits(encoder, transcripts, sample, test_utts,
                                                                            cfg.data.pivot_lang)
        systems[f"gold transcript -> {args.text_encoder}"] = text_encoder_hits(encoder, gold, every, test_utts,
                                                                             cfg.data.pivot_lang)

    robustness = {}
    de = run / "dual_encoder" / "model"
    for condition in [c for c in args.conditions.split(",") if c]:
        t = time.perf_counter()
        du = run_degraded_encode(cfg, test_utts, condition, load_speech_tokenizer(units_dir(cfg)))
        r = run_eval(load_config(args.config, [f"out_dir={run / 'dual_encoder'}", *base]), checkpoint=de, units=du,
                     name=f"eval-{condition}")
        p = linear_probe(train_utts, test_utts, {**units, **du})  # fitted on clean training clips
        robustness[condition] = {"dual_encoder": intervals(r["hits"], seen), "probe": intervals(p["hits"], seen)}
        timings[f"{condition}_s"] = time.perf_counter() - t

    claims = [{"claim": claim, "system": a, "baseline": b, "metric": m,
               **claim_result(seed_hits[a], seed_hits[b], m, seen)}
              for claim, a, b, metrics in CLAIMS if a in seed_hits and b in seed_hits for m in metrics]
    summary = {}
    for name, sysres in systems.items():
        full = not name.startswith(CASCADE)
        summary[name] = {"all_queries": intervals(sysres["hits"], seen) if full else None,
                         "cascade_sample": intervals(sysres["hits"], seen, None if not full else sample)
                         if args.cascade_per_lang else None}
        if "seeds" in sysres and len(sysres["seeds"]) > 1:
            r1 = [a["seen"]["R@1"] for a in sysres["seeds"].values()]
            u1 = [a["unseen"]["R@1"] for a in sysres["seeds"].values()]
            summary[name]["seed_spread"] = {"seen_R@1": [min(r1), max(r1)], "unseen_R@1": [min(u1), max(u1)]}
    earlier = history("retrieval_quality", ("config", "overrides", "summary", "claims", "robustness"))
    result = {"config": args.config, "overrides": args.set, "summary": summary, "robustness": robustness,
              "claims": claims, "per_language": {n: s.get("averages") for n, s in systems.items()},
              "cascade_examples": systems.get(CASCADE, {}).get("examples"), "sample_per_lang": args.cascade_per_lang,
              "timings_s": timings, "peak_rss_mb": peak_rss_mb(), "history": earlier}
    write_result("retrieval_quality", result)
    (RESULTS / "retrieval_quality.md").write_text(markdown(result))


def markdown(result: dict) -> str:
    def cell(x):
        return "–" if not x else f"{100 * x['mean']:.1f} [{100 * x['ci95'][0]:.1f}, {100 * x['ci95'][1]:.1f}]"

    keys = ["seen_R@1", "unseen_R@1", "seen_xling_R@1", "unseen_xling_R@1"]
    lines = ["### Speech → text retrieval, demo corpus (R@1 %, 95 % bootstrap interval over queries)", "",
             "| system | " + " | ".join(keys) + " | " + " | ".join(f"cascade sample: {k}" for k in keys) + " |",
             "|---" * (2 * len(keys) + 1) + "|"]
    for name, s in result["summary"].items():
        a, c = s["all_queries"] or {}, s["cascade_sample"] or {}
        lines.append(f"| {name} | " + " | ".join(cell(a.get(k)) for k in keys) + " | "
                     + " | ".join(cell(c.get(k)) for k in keys) + " |")
    if result.get("claims"):
        lines += ["", "### The paper's claims: paired difference system − baseline (R@1 points, mean over seeds, "
                  "95 % bootstrap interval over queries)", "",
                  "| claim | system − baseline | metric | seeds | difference | per seed | holds |", "|---|---|---|---|---|---|---|"]
        for c in result["claims"]:
            per = ", ".join(f"{100 * d:+.1f}" for d in c["seeds"].values())
            lines.append(f"| {c['claim']} | {c['system']} − {c['baseline']} | {c['metric']} | {len(c['seeds'])} | "
                         f"{100 * c['mean']:+.1f} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] | {per} | "
                         f"{'yes' if c['holds'] else 'no'} |")
    if result["robustness"]:
        lines += ["", "### Degraded test audio (R@1 %)", "", "| condition | dual encoder seen | unseen | probe seen | unseen |",
                  "|---|---|---|---|---|"]
        for cond, r in result["robustness"].items():
            d, p = r["dual_encoder"], r["probe"]
            lines.append(f"| {cond} | {cell(d.get('seen_R@1'))} | {cell(d.get('unseen_R@1'))} | "
                         f"{cell(p.get('seen_R@1'))} | {cell(p.get('unseen_R@1'))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
