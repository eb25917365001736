"""What a built corpus holds, and whether its speech is intelligible: counts, hours, TTS speed, ASR samples.

`corpus_report` reads the manifests of a corpus folder (``manifest.jsonl`` and, when present,
``udhr.jsonl`` and ``intents.jsonl``), counts utterances and hours per language and split, times
eSpeak on a sample of test sentences (real-time factor, median of repeats), and transcribes a few
test clips per language with Whisper (greedy) so that a reader can see whether each language's
synthetic speech is recognisable. The character error rate of those samples is a rough
intelligibility check of eSpeak + Whisper together, not a measure of either.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from polyvox.audio import SAMPLE_RATE, load_audio
from polyvox.data import tts
from polyvox.data.languages import language_name
from polyvox.data.manifest import Utterance, read_manifest, speech_hours, split_counts
from polyvox.eval.metrics import cer, normalize_text
from polyvox.models.asr import Transcriber

log = logging.getLogger(__name__)

PARTS: tuple[str, ...] = ("manifest.jsonl", "udhr.jsonl", "intents.jsonl")
"""Manifests of a corpus folder that a report covers (those present)."""


def _counts(utts: list[Utterance]) -> dict[str, dict[str, Any]]:
    hours = speech_hours(utts)
    return {lang: {"train": 0, "test": 0, **c, "hours": hours[lang]} for lang, c in split_counts(utts).items()}


def tts_speed(utts: list[Utterance], n: int = 60, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """eSpeak real-time factor (seconds of audio per second of one process) on `n` sampled sentences."""
    rng = random.Random(seed)
    sample = rng.sample(utts, min(n, len(utts)))
    synth = tts.Synthesizer()
    times, audio_s = [], 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        total = 0.0
        for u in sample:
            spec = tts.VoiceSpec(u.meta["voice"], u.meta["rate"], u.meta["pitch"], u.meta.get("seed", 0))
            total += len(synth.synthesize(u.lang, u.text, spec, where=u.id)) / SAMPLE_RATE
        times.append(time.perf_counter() - t)
        audio_s = total
    synth.close()
    wall = statistics.median(times)
    return {"clips": len(sample), "audio_s": round(audio_s, 1), "median_wall_s": round(wall, 3),
            "real_time_factor_per_process": round(audio_s / wall, 1), "repeats": repeats}


def _median_cer(rows: list[dict]) -> float | None:
    scored = [r["cer"] for r in rows if r["cer"] is not None]
    return round(statistics.median(scored), 3) if scored else None


def asr_samples(utts: list[Utterance], root: Path, per_lang: int, asr: Any, seed: int = 0) -> dict[str, list[dict]]:
    """Transcribe `per_lang` test clips per language; returns lang -> [{id, text, transcript, cer}]."""
    by_lang: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        if u.split == "test":
            by_lang[u.lang].append(u)
    out = {}
    for lang, us in sorted(by_lang.items()):
        pick = sorted(random.Random(f"{seed}:{lang}").sample(us, min(per_lang, len(us))), key=lambda u: u.id)
        texts = asr.transcribe([load_audio(u.audio_path(root)) for u in pick], lang)
        out[lang] = [{"id": u.id, "text": u.text, "transcript": t,  # CER as the evaluations score it
                      "cer": round(cer([u.text], [t]), 3) if normalize_text(u.text) else None}
                     for u, t in zip(pick, texts)]
        log.info("%s: median CER %s  e.g. %r -> %r", lang, _median_cer(out[lang]), pick[0].text, texts[0])
    return out


def corpus_report(corpus_dir: str | Path, samples_per_lang: int = 3, asr_model: str | None = "whisper-base",
                  tts_clips: int = 60) -> dict[str, Any]:
    """Counts, hours, TTS speed and ASR samples of a built corpus.

    Args:
        corpus_dir: folder written by `polyvox.data.corpus.build_corpus` (or any folder of manifests).
        samples_per_lang: test clips per language (and manifest) transcribed; 0 skips ASR.
        asr_model: Whisper model for the samples (a preset, folder or hub id); None skips ASR.
        tts_clips: sentences spoken again to time eSpeak; 0 skips timing.
    """
    root = Path(corpus_dir)
    present = [name for name in PARTS if (root / name).exists()]
    if not present:
        raise FileNotFoundError(f"no manifest ({', '.join(PARTS)}) in {root}")
    info_path = root / "corpus.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    seen = set(info.get("language_sets", {}).get("seen", []))
    asr = None
    if asr_model and samples_per_lang > 0:
        asr = Transcriber(asr_model)
    report: dict[str, Any] = {"corpus": str(root), "manifests": {}}
    main: list[Utterance] = []
    for name in present:
        utts = read_manifest(root / name)
        main = main or utts  # the first manifest present: the one timed below
        part: dict[str, Any] = {
            "utterances": len(utts), "hours": round(sum(u.duration or 0.0 for u in utts) / 3600, 3),
            "languages": _counts(utts),
        }
        if any(u.intent for u in utts):
            part["intent_labels"] = len({u.intent for u in utts})
        if asr is not None:
            samples = asr_samples(utts, root, samples_per_lang, asr)
            for lang, rows in samples.items():
                part["languages"][lang]["samples"] = rows
                part["languages"][lang]["sample_cer"] = _median_cer(rows)
        report["manifests"][name] = part
    report["languages"] = {"total": len(report["manifests"][present[0]]["languages"]),
                           "seen": sorted(seen), "skipped": info.get("skipped_languages", {})}
    report["totals"] = {"utterances": sum(p["utterances"] for p in report["manifests"].values()),
                        "hours": round(sum(p["hours"] for p in report["manifests"].values()), 3)}
    spoken = [u for u in main if u.split == "test" and "voice" in u.meta]  # clips polyvox synthesised
    if tts_clips > 0 and spoken:
        report["tts"] = tts_speed(spoken, tts_clips)
    synthesis = root / "synthesis.json"
    if synthesis.exists():
        report["build_synthesis"] = json.loads(synthesis.read_text())
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: totals, one row per language, and the ASR samples."""
    lines = [f"# Corpus report: {report['corpus']}", ""]
    t = report["totals"]
    lines += [f"- {t['utterances']:,} utterances, {t['hours']:.1f} h of speech, {report['languages']['total']} languages "
              f"({len(report['languages']['seen'])} seen)"]
    for name, part in report["manifests"].items():
        extra = f", {part['intent_labels']} intent labels" if "intent_labels" in part else ""
        lines.append(f"- `{name}`: {part['utterances']:,} utterances, {part['hours']:.1f} h, "
                     f"{len(part['languages'])} languages{extra}")
    if "tts" in report:
        lines.append(f"- eSpeak NG: {report['tts']['real_time_factor_per_process']}x real time per process "
                     f"(median of {report['tts']['repeats']} runs over {report['tts']['clips']} sentences)")
    if report["languages"]["skipped"]:
        lines.append("- left out: " + "; ".join(f"{k} ({v})" for k, v in report["languages"]["skipped"].items()))
    for name, part in report["manifests"].items():
        lines += ["", f"## {name}", "", "| language | | train | test | hours | sample CER | sample: text → Whisper transcript |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for lang, row in part["languages"].items():
            sample = row.get("samples", [{}])[0]
            pair = f"{sample['text']} → {sample['transcript']}".replace("|", "/") if sample else ""
            tag = "seen" if lang in report["languages"]["seen"] else ""
            lines.append(f"| {lang} {language_name(lang)} | {tag} | {row['train']} | {row['test']} | {row['hours']:.2f} "
                         f"| {row.get('sample_cer', '')} | {pair} |")
    return "\n".join(lines) + "\n"
