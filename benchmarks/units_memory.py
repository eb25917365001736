"""Peak memory of `polyvox units encode` over a whole corpus: it must depend on the audio chunk, not the corpus.

    python benchmarks/units_memory.py [--corpus data/full] [--config configs/demo.yaml] [--limit 0]

Builds the corpus first when its manifest is missing (`polyvox data build --preset full`), fits the units
(continuous features by default, as the demo), then runs `polyvox units encode` in a child process and reads
its peak RSS (ru_maxrss). `--limit N` encodes only the first N clips of the manifest (a quick check of the
curve: run it at two sizes). Writes benchmarks/results/units_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from _common import history, write_result

from polyvox.data.manifest import iter_manifest, write_manifest


def polyvox(*args: str) -> dict:
    """Run a polyvox command in a child process: its wall seconds and peak RSS (MiB, from wait4)."""
    t = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "polyvox", *args])
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"polyvox {' '.join(args)} failed ({status})")
    return {"s": round(time.perf_counter() - t, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/full")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--out", default="runs/units-memory")
    ap.add_argument("--limit", type=int, default=0, help="encode only the first N clips (0: all)")
    args = ap.parse_args()
    manifest = Path(args.corpus) / "manifest.jsonl"
    stages = {}
    if not manifest.exists():
        stages["data_build"] = polyvox("data", "build", "--preset", args.preset, "--out", args.corpus)
    if args.limit:  # the first N clips, their audio paths made absolute
        utts = [replace(u, audio=str(u.audio_path(args.corpus).resolve()))
                for _, u in zip(range(args.limit), iter_manifest(manifest))]
        manifest = write_manifest(Path(args.out) / "manifest.jsonl", utts)
    common = ["--config", args.config, "--manifest", str(manifest), "--out", args.out]
    stages["units_fit"] = polyvox("units", "fit", *common)
    stages["units_encode"] = polyvox("units", "encode", *common)
    utts = list(iter_manifest(manifest))
    result = {"corpus": args.corpus, "config": args.config, "clips": len(utts),
              "hours": round(sum(u.duration or 0.0 for u in utts) / 3600, 2), "stages": stages,
              "target_mb": 4096, "met": stages["units_encode"]["peak_rss_mb"] <= 4096,
              "history": history("units_memory", ("corpus", "clips", "hours", "stages"))}
    write_result("units_memory", result)
    print(json.dumps({k: result[k] for k in ("clips", "hours", "met")} | {"encode": stages["units_encode"]}))


if __name__ == "__main__":
    main()
