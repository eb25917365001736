"""HTTP server under load: throughput, latency and memory of `polyvox serve` with concurrent clients.

    python benchmarks/serve_speed.py [--model runs/demo/model] [--index runs/demo/index] [--clients 16]
                                     [--seconds 60] [--audio-share 0.5]

Starts the real server (`polyvox serve`, uvicorn) as a separate process on loopback with the demo dual
encoder and an index of the demo texts (built first if `--index` does not exist). `--clients` threads each
keep one HTTP connection and send POST /search requests back to back for `--seconds`: a share of them upload
a real demo test clip (speech -> text), the rest send a demo text (text -> text), k = 10. Reports requests/s,
latency p50/p95/p99 overall and per modality, every non-200 answer, the server's mean batch size, and its
resident memory sampled each second (after a warm-up phase of 10 s: first, last, max, the least-squares slope
in MB/min and the means of the first and last thirds). Writes benchmarks/results/serve_speed.json
(serve_speed_<seconds>s.json for another length).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
from _common import free_port, start_server, write_result

from polyvox.data.manifest import read_manifest

WARMUP_S = 10.0
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise


def percentiles(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0}
    p = np.percentile(ms, [50, 95, 99])
    return {"n": len(ms), "p50_ms": round(float(p[0]), 1), "p95_ms": round(float(p[1]), 1),
            "p99_ms": round(float(p[2]), 1), "mean_ms": round(float(np.mean(ms)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("runs/demo/model"))
    ap.add_argument("--index", type=Path, default=Path("runs/demo/index"))
    ap.add_argument("--manifest", type=Path, default=Path("data/demo/manifest.jsonl"))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--audio-share", type=float, default=0.5)
    ap.add_argument("--clips", type=int, default=64, help="distinct test clips to upload")
    ap.add_argument("--server-arg", action="append", default=[], help="passed on to polyvox serve, e.g. --max-batch=8")
    args = ap.parse_args()

    for path, what in ((args.model / "model.safetensors", "trained model"), (args.manifest, "demo manifest")):
        if not path.exists():
            raise SystemExit(f"no {what} at {path}: run `polyvox demo` first")
    if not (args.index / "current").exists():
        from polyvox.index import build_index, read_texts

        print(f"building the index {args.index} over {args.manifest}")
        build_index(args.model, read_texts(args.manifest), args.index)
    utts = read_manifest(args.manifest, split="test")
    rng = random.Random(0)
    clips = [(u.lang, (args.manifest.parent / u.audio).read_bytes(), u.audio) for u in rng.sample(utts, args.clips)]
    texts = [(u.lang, u.text) for u in utts]

    port = free_port()
    server = start_server(args.model, args.index, port, args.server_arg)
    proc = psutil.Process(server.pid)
    url = f"http://127.0.0.1:{port}"
    latencies: dict[str, list[tuple[float, float]]] = {"speech": [], "text": []}  # (finish time, ms)
    statuses: Counter = Counter()
    failures: list[str] = []
    rss: list[tuple[float, float]] = []
    t0 = time.time()
    stop = t0 + WARMUP_S + args.seconds

    def client(seed: int) -> None:
        r = random.Random(seed)
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.time() < stop:
                speech = r.random() < args.audio_share
                if speech:
                    lang, data, name = r.choice(clips)
                    kw = {"data": {"lang": lang, "k": "10"}, "files": {"audio": (Path(name).name, data)}}
                else:
                    lang, text = r.choice(texts)
                    kw = {"data": {"lang": lang, "k": "10", "text": text}}
                start = time.time()
                try:
                    resp = http.post("/search", **kw)
                    code = resp.status_code
                    ok = code == 200 and len(resp.json()["hits"]) == 10
                except httpx.HTTPError as e:
                    code, ok = type(e).__name__, False
                end = time.time()
                statuses[code] += 1
                if ok:
                    latencies["speech" if speech else "text"].append((end, 1000 * (end - start)))
                elif len(failures) < 10:
                    failures.append(f"{code}: {getattr(resp, 'text', '')[:200]}")

    def monitor() -> None:
        while time.time() < stop:
            rss.append((time.time() - t0, proc.memory_info().rss / 2**20))
            time.sleep(1.0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    threads.append(threading.Thread(target=monitor))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    health = httpx.get(f"{url}/health").json()
    server.terminate()
    server.wait(timeout=30)

    measured = {m: [ms for end, ms in v if end - t0 >= WARMUP_S] for m, v in latencies.items()}
    all_ms = measured["speech"] + measured["text"]
    steady = [(t, mb) for t, mb in rss if t >= WARMUP_S]
    slope = float(np.polyfit([t for t, _ in steady], [mb for _, mb in steady], 1)[0]) * 60 if len(steady) > 2 else None
    third = len(steady) // 3
    thirds = ([round(float(np.mean([mb for _, mb in part])), 1) for part in (steady[:third], steady[-third:])]
              if third else [None, None])
    batches = health["batches"]["search"]
    result = {
        "setup": {"clients": args.clients, "seconds": args.seconds, "warmup_s": WARMUP_S, "audio_share": args.audio_share,
                  "k": 10, "index_size": health["index"]["size"], "index_kind": health["index"]["kind"],
                  "model": str(args.model), "distinct_clips": len(clips), "server_args": args.server_arg,
                  "server_torch_threads": os.environ.get("OMP_NUM_THREADS", "default")},
        "requests_per_s": round(len(all_ms) / args.seconds, 2),
        "speech_per_s": round(len(measured["speech"]) / args.seconds, 2),
        "text_per_s": round(len(measured["text"]) / args.seconds, 2),
        "latency": {"all": percentiles(all_ms), "speech": percentiles(measured["speech"]),
                    "text": percentiles(measured["text"])},
        "answers": {str(k): v for k, v in statuses.items()},
        "errors": sum(v for k, v in statuses.items() if k != 200),
        "failures": failures,
        "mean_batch": round(batches["requests"] / max(1, batches["batches"]), 2),
        "server_rss_mb": {"after_warmup": round(steady[0][1], 1) if steady else None,
                          "end": round(steady[-1][1], 1) if steady else None,
                          "max": round(max(mb for _, mb in steady), 1) if steady else None,
                          "slope_mb_per_min": round(slope, 2) if slope is not None else None,
                          "mean_first_third": thirds[0], "mean_last_third": thirds[1],
                          "samples": [[round(t, 1), round(mb, 1)] for t, mb in rss]},
    }
    write_result("serve_speed" if args.seconds == 60 else f"serve_speed_{args.seconds:g}s", result)
    print(json.dumps({k: result[k] for k in ("requests_per_s", "latency", "errors", "mean_batch")}, indent=1))


if __name__ == "__main__":
    main()
