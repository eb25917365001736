"""Shared helpers for benchmark scripts: timing medians, peak memory and JSON results."""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import statistics
import time
from pathlib import Path

from polyvox.eval.report import versions

RESULTS = Path(__file__).parent / "results"
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def median_time(fn, repeats: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, result: dict) -> Path:
    """Print `result` and write it (with machine and versions) to benchmarks/results/<name>.json."""
    import torch

    RESULTS.mkdir(exist_ok=True)
    result = {**result, "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                    "platform": platform.platform(), "processor": platform.machine()},
              "versions": versions()}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"written to {path}")
    return path
