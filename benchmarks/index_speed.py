"""Text-index speed: build throughput with the real model, and exact vs approximate search at 10k and 1M vectors.

    OMP_NUM_THREADS=1 python benchmarks/index_speed.py [--texts 2000] [--sizes 10000 1000000] [--queries 1000]

Part 1 embeds the first `--texts` texts of the demo manifest with the trained dual encoder (`build_index`,
flat) and reports texts embedded per second; it is skipped (with the reason) when the model or manifest is
missing. Part 2 uses synthetic L2-normalised vectors of the model's embedding size: clustered (random centres
plus Gaussian noise with a decaying per-dimension spectrum, then normalised; seeded), since uniformly random
high-dimensional vectors are a worst case for approximate search and unlike real embeddings. Queries are
held-out vectors from the same distribution. For flat (exact), hnsw and ivf `TextIndex`es it reports build
time, single-query latency p50/p95, batched queries/s and recall@10 against flat. Everything runs on one
thread (faiss, torch and OMP) so timings are reproducible. Writes benchmarks/results/index_speed.json.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from _common import median_time, peak_rss_mb, write_result

from polyvox.index import IndexedText, TextIndex, ann_recall_at_k, build_index, read_texts

THREADS = 1
K = 10


def real_model_build(model_dir: Path, manifest: Path, n_texts: int, batch_size: int) -> dict:
    """Time `build_index` (model load + embedding + save) on the first `n_texts` manifest texts."""
    if not (model_dir / "model.safetensors").exists():
        return {"skipped": f"no trained model at {model_dir}"}
    if not manifest.exists():
        return {"skipped": f"no manifest at {manifest}"}
    from polyvox.models.dual_encoder import DualEncoder

    items = read_texts(manifest)[:n_texts]
    dim = DualEncoder.load(model_dir).cfg.proj_dim  # warm-up: imports and file cache, untimed
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        index = build_index(model_dir, items, Path(tmp) / "index", kind="flat", batch_size=batch_size)
        total_s = time.perf_counter() - t
    assert len(index) == len(items)
    t = time.perf_counter()
    DualEncoder.load(model_dir)  # a warm load timed alone, to separate loading from embedding
    load_s = time.perf_counter() - t
    gc.collect()
    embed_s = max(total_s - load_s, 1e-9)
    return {"model_dir": str(model_dir), "manifest": str(manifest), "texts": len(items), "batch_size": batch_size,
            "embedding_dim": dim, "build_index_s": total_s, "texts_per_s": len(items) / total_s,
            "model_load_s": load_s, "texts_per_s_excluding_load": len(items) / embed_s,
            "note": "build_index_s includes loading the model (warm: loaded once before, untimed), embedding "
                    "and saving the flat index; texts_per_s_excluding_load subtracts a separately timed warm load"}


def clustered(n: int, centres: np.ndarray, noise_std: np.ndarray, rng: np.random.Generator,
              chunk: int = 100_000) -> np.ndarray:
    """(n, D) float32 unit vectors: a random centre each plus Gaussian noise, normalised in place by chunks."""
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for s in range(0, n, chunk):
        block = out[s : s + chunk]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block *= noise_std
        block += centres[rng.integers(0, len(centres), len(block))]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out


def latency(index: TextIndex, queries: np.ndarray, n: int) -> dict:
    """One query per `search` call over the first `n` queries (after 10 warm-up calls)."""
    for i in range(min(10, n)):
        index.search(queries[i : i + 1], K)
    times = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        index.search(queries[i : i + 1], K)
        times[i] = time.perf_counter() - t
    return {"latency_queries": n, "p50_ms": float(np.percentile(times, 50) * 1e3),
            "p95_ms": float(np.percentile(times, 95) * 1e3), "mean_ms": float(times.mean() * 1e3),
            "single_queries_per_s": float(n / times.sum())}


def bench_kind(kind: str, params: dict, x: np.ndarray, items: list[IndexedText], queries: np.ndarray,
               latency_queries: int, repeats: int) -> tuple[dict, list]:
    index = TextIndex(x.shape[1], "synthetic", kind, params)
    t = time.perf_counter()
    index.add(x, items)
    build_s = time.perf_counter() - t
    res = {"params": params, "build_s": build_s, "vectors_per_s": len(x) / build_s,
           **latency(index, queries, latency_queries)}
    hits = index.search(queries, K)
    med, times = median_time(lambda: index.search(queries, K), repeats=repeats, warmup=0)
    raw, _ = median_time(lambda: index.index.search(queries, K), repeats=repeats, warmup=0)
    res.update({"batch_queries": len(queries), "batch_s_median": med, "batch_s_all": times,
                "batch_queries_per_s": len(queries) / med, "batch_queries_per_s_faiss_only": len(queries) / raw})
    return res, hits


def synthetic(n: int, dim: int, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed + n)
    centres = rng.standard_normal((args.centres, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # per-dimension std ∝ (j+1)^-decay (0: isotropic), scaled to an expected noise norm of `args.noise_norm`
    spectrum = np.arange(1, dim + 1, dtype=np.float32) ** -args.noise_decay
    noise_std = (spectrum * args.noise_norm / np.sqrt((spectrum**2).sum())).astype(np.float32)
    t = time.perf_counter()
    x = clustered(n, centres, noise_std, rng)
    queries = clustered(args.queries, centres, noise_std, rng)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    items = [IndexedText(str(i), "", "xx") for i in range(n)]
    items_s = time.perf_counter() - t
    out: dict = {"vectors": n, "dim": dim, "queries": len(queries), "generate_s": gen_s, "items_build_s": items_s}
    nlist = round(4 * math.sqrt(n))
    configs = {"flat": {},
               "hnsw": {"m": args.hnsw_m, "ef_construction": args.hnsw_ef_construction,
                        "ef_search": args.hnsw_ef_search},
               "ivf": {"nlist": min(nlist, args.max_nlist), "nprobe": args.nprobe}}
    if nlist > args.max_nlist:
        out["shrunk"] = f"ivf nlist capped at {args.max_nlist} (4*sqrt(N) = {nlist})"
    exact = None
    for kind, params in configs.items():
        # exact single-query search scans every vector: at large N fewer latency queries keep the run short
        n_lat = min(len(queries), args.flat_latency_queries if kind == "flat" and n > 100_000 else len(queries))
        print(f"N={n:,} {kind} {params} …", flush=True)
        res, hits = bench_kind(kind, params, x, items, queries, n_lat, args.repeats)
        if exact is None:
            exact = hits
        else:
            res[f"recall@{K}"] = ann_recall_at_k(exact, hits, K)
        res["peak_rss_mb_so_far"] = peak_rss_mb()
        out[kind] = res
        print(f"  build {res['build_s']:.1f} s, p50 {res['p50_ms']:.3f} ms, "
              f"batch {res['batch_queries_per_s']:.0f} q/s" + (f", recall@{K} {res[f'recall@{K}']:.3f}"
                                                                 if f"recall@{K}" in res else ""), flush=True)
    del x, items
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/demo/model")
    ap.add_argument("--manifest", default="data/demo/manifest.jsonl")
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries (batched search, recall)")
    ap.add_argument("--flat-latency-queries", type=int, default=200,
                    help="single-query latency samples for flat search above 100k vectors (others use all)")
    ap.add_argument("--centres", type=int, default=1000)
    ap.add_argument("--noise-norm", type=float, default=0.75, help="expected norm of the noise (centres are unit)")
    ap.add_argument("--noise-decay", type=float, default=0.5,
                    help="per-dimension noise std ∝ (j+1)^-decay; 0 = isotropic")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-ef-construction", type=int, default=80)
    ap.add_argument("--hnsw-ef-search", type=int, default=64)
    ap.add_argument("--max-nlist", type=int, default=4000, help="cap on ivf nlist = 4*sqrt(N)")
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="batched-search repeats (median)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    faiss.omp_set_num_threads(THREADS)
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    result: dict = {"threads": {"faiss_omp": THREADS, "torch": torch.get_num_threads(),
                                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
                    "k": K, "args": vars(args)}
    result["real_model_build"] = real = real_model_build(Path(args.model), Path(args.manifest), args.texts,
                                                          args.batch_size)
    print("real model:", real, flush=True)
    dim = real.get("embedding_dim", 256)
    result["synthetic"] = {
        "data": f"{args.centres} random unit centres + Gaussian noise (per-dimension std ∝ (j+1)^-{args.noise_decay}, "
                f"expected norm {args.noise_norm}), L2-normalised, float32; {args.queries} held-out queries from the same "
                "distribution; seeded",
        "latency": "one query per TextIndex.search call (includes building Hit objects); p50/p95 over "
                   "latency_queries; single_queries_per_s = latency_queries / total time",
        "batched": "all queries in one TextIndex.search call; batch_queries_per_s_faiss_only times the raw "
                   "faiss search without Hit objects",
        "build": "TextIndex.add of all vectors (ivf: includes k-means training), including item/id bookkeeping",
    }
    for n in args.sizes:
        result["synthetic"][str(n)] = synthetic(n, dim, args)
    result["peak_rss_mb"] = peak_rss_mb()
    result["wall_s"] = time.perf_counter() - start
    write_result("index_speed", result)

    print("\nreal model: " + (f"{real['texts']} texts in {real['build_index_s']:.1f} s = "
                                f"{real['texts_per_s']:.1f} texts/s ({real['texts_per_s_excluding_load']:.1f} "
                                f"excluding model load), dim {real['embedding_dim']}" if "skipped" not in real
                                else real["skipped"]))
    print(f"{'N':>9} {'kind':<5} {'build s':>8} {'vec/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'1-q q/s':>8} "
          f"{'batch q/s':>10} {'recall@10':>9}")
    for n in args.sizes:
        block = result["synthetic"][str(n)]
        for kind in ("flat", "hnsw", "ivf"):
            r = block[kind]
            rec = r.get(f"recall@{K}")
            print(f"{n:>9,} {kind:<5} {r['build_s']:>8.2f} {r['vectors_per_s']:>9.0f} {r['p50_ms']:>8.3f} "
                  f"{r['p95_ms']:>8.3f} {r['single_queries_per_s']:>8.0f} {r['batch_queries_per_s']:>10.0f} "
                  f"{'exact' if rec is None else f'{rec:.3f}':>9}")
    print(f"threads: 1; peak RSS {result['peak_rss_mb']:.0f} MiB; wall {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
