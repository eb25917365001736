"""Report on a built offline corpus: counts and hours per language, eSpeak's real-time factor, and a
few test clips per language transcribed by whisper-base (greedy) as a sanity check of synthesis.

    polyvox data build --preset full --out data/full
    python benchmarks/data_report.py --corpus data/full

Writes benchmarks/results/data_report.json and data_report.md.
"""

from __future__ import annotations

import argparse

from _common import RESULTS, write_result

from polyvox.eval.corpus_report import corpus_report, markdown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/full")
    ap.add_argument("--samples", type=int, default=3, help="test clips per language and manifest")
    ap.add_argument("--asr", default="whisper-base")
    ap.add_argument("--tts-clips", type=int, default=100)
    args = ap.parse_args()
    report = corpus_report(args.corpus, args.samples, args.asr, args.tts_clips)
    write_result("data_report", report)
    (RESULTS / "data_report.md").write_text(markdown(report))
    print(f"written to {RESULTS / 'data_report.md'}")


if __name__ == "__main__":
    main()
