"""Shared helpers for benchmark scripts: timing medians, peak memory, JSON results, a local server."""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from polyvox.progress import setup_logging

setup_logging()  # before transformers is imported

from polyvox.eval.report import versions  # noqa: E402

RESULTS = Path(__file__).parent / "results"


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


def history(name: str, keys: tuple[str, ...]) -> list[dict]:
    """The earlier results of benchmarks/results/<name>.json, to keep in the new one under ``history``: its own
    history plus its `keys` (every experiment's result stays, good or bad)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return []
    previous = json.loads(path.read_text())
    return previous.pop("history", []) + [{k: previous[k] for k in (*keys, "versions") if k in previous}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path | None, index: Path, port: int, extra: list[str]) -> subprocess.Popen:
    """`polyvox serve` on 127.0.0.1:`port` (the index's own model when `model` is None), once it answers /health."""
    cmd = [sys.executable, "-m", "polyvox.cli", "serve", *(["--model", str(model)] if model else []),
           "--index", str(index), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server died:\n{proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not answer /health within 180 s")
