"""Spoken language detection (what `polyvox search` and the server do for a clip without a language):
accuracy per language on the demo test split.

    python benchmarks/lid_quality.py [--manifest data/demo/manifest.jsonl] [--model whisper-base] [--per-lang 20]

Takes the first `--per-lang` test clips of each language and reports how often Whisper's language token is
the clip's language, among every language Whisper knows (what polyvox does) and, as an upper reference, among
the manifest's languages only. Chance is 1/len(candidates). Writes benchmarks/results/lid_quality.json.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from _common import write_result

from polyvox.audio import load_audio
from polyvox.data.languages import FLEURS
from polyvox.data.manifest import read_manifest
from polyvox.models.asr import Transcriber, whisper_language


def accuracy(found: list[tuple[str, float]], truth: list[str]) -> dict:
    per: dict[str, list[bool]] = defaultdict(list)
    for (code, _), lang in zip(found, truth):
        per[lang].append(code == lang)
    return {"all": round(sum(sum(v) for v in per.values()) / len(truth), 3),
            "per_language": {lang: round(sum(v) / len(v), 3) for lang, v in sorted(per.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, default=Path("data/demo/manifest.jsonl"))
    ap.add_argument("--model", default="whisper-base")
    ap.add_argument("--per-lang", type=int, default=20)
    args = ap.parse_args()
    if not args.manifest.exists():
        raise SystemExit(f"no manifest at {args.manifest}: run `polyvox demo` first")

    by_lang: dict[str, list] = defaultdict(list)
    for u in read_manifest(args.manifest, split="test"):
        if whisper_language(u.lang) is not None and len(by_lang[u.lang]) < args.per_lang:
            by_lang[u.lang].append(u)
    utts = [u for us in by_lang.values() for u in us]
    clips = [load_audio(args.manifest.parent / u.audio) for u in utts]
    truth = [u.lang for u in utts]
    asr = Transcriber(args.model)
    t0 = time.perf_counter()
    every = asr.detect_language(clips)
    seconds = time.perf_counter() - t0
    among_manifest = asr.detect_language(clips, candidates=sorted(by_lang))
    known = [c for c in FLEURS if whisper_language(c) is not None]
    write_result("lid_quality", {
        "setup": {"manifest": str(args.manifest), "model": args.model, "clips": len(utts), "languages": len(by_lang),
                  "mean_clip_s": round(sum(len(c) for c in clips) / len(clips) / 16000, 2)},
        "among_every_whisper_language": {**accuracy(every, truth), "candidates": len(known),
                                         "chance": round(1 / len(known), 3)},
        "among_the_manifest_languages": {**accuracy(among_manifest, truth), "candidates": len(by_lang),
                                         "chance": round(1 / len(by_lang), 3)},
        "clips_per_s": round(len(clips) / seconds, 2),
    })


if __name__ == "__main__":
    main()
