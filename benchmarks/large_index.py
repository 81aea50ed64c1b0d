"""Region search at 10M vectors: memory per vector, latency and recall@10 after exact rescoring.

    python benchmarks/large_index.py [--n 10000000] [--dim 128] [--queries 200] [--threads 2]
                                     [--nprobe 16,32,64] [--candidates 200] [--shards 0] [--workdir DIR]
                                     [--index-type auto] [--faiss-gpu]

Generates clustered unit vectors (2,000 centres plus noise, as benchmarks/search.py) chunk by
chunk into a float16 .npy file, as harmosearch stores region vectors (10M x 128-d: 2.5 GB, never
all in RAM), computes the exact top 10 of each query by streaming the file, then builds the
index harmosearch's policy picks for that size (`store.choose_index_type`; `--index-type` for
another) with `store.build_shards`, writes it and opens it as an index is opened (memory-mapped
above 256 MB). Each query asks FAISS for `--candidates` ids and rescores them exactly from the
float16 file (`store.rescore_exact`); with `--faiss-gpu` the FAISS search runs on copies of the index on
the GPUs (`store.to_gpus`, as search.faiss_gpu = "replicate"; the build uses them whenever faiss
has GPUs) and the rescoring stays on the CPU. Reported: build time, bytes per vector of the FAISS file and the
resident memory the opened index adds, p50/p95 latency per query (one query at a time, search
plus rescoring) and recall@10 against exact search, for each nprobe. A memory-mapped index
adds little heap; its lists are read from the page cache as probed, like the float16 vectors. Appends to
benchmarks/results/large_index.jsonl.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.store import build_shards, choose_index_type, open_faiss, rescore_exact, search_vectors, to_gpus, tune

CHUNK = 500_000


def anonymous_mb() -> float:
    """This process's resident anonymous memory (heap, not pages of mapped files), from /proc."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024


def generate(path: Path, n: int, dim: int, seed: int, clusters: int = 2000) -> np.ndarray:
    """n clustered unit vectors as a float16 .npy memory map, written CHUNK rows at a time."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        block = centres[rng.integers(clusters, size=hi - lo)] + 0.6 * rng.standard_normal(
            (hi - lo, dim), dtype=np.float32
        )
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo:hi] = block
    out.flush()
    return np.load(path, mmap_mode="r")


def make_queries(data: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries near stored vectors (a lexeme near some regions), as benchmarks/search.py draws them."""
    rng = np.random.default_rng(seed + 1)
    picks = np.asarray(data[np.sort(rng.integers(len(data), size=count))], dtype=np.float32)
    q = picks + 0.3 * rng.standard_normal(picks.shape, dtype=np.float32) / np.sqrt(data.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_top10(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The exact top 10 of every query, streaming the stored vectors chunk by chunk."""
    best_scores = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), 10), -1, dtype=np.int64)
    for lo in range(0, len(data), CHUNK):
        scores = queries @ np.asarray(data[lo : lo + CHUNK], dtype=np.float32).T
        top = np.argpartition(-scores, 9, axis=1)[:, :10]
        scores_all = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        ids_all = np.concatenate([best_ids, top + lo], axis=1)
        order = np.argsort(-scores_all, axis=1, kind="stable")[:, :10]
        best_scores, best_ids = np.take_along_axis(scores_all, order, 1), np.take_along_axis(ids_all, order, 1)
    return best_ids


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nprobe", default="16,32,64")
    parser.add_argument("--candidates", type=int, default=200, help="ids FAISS returns per query for exact rescoring")
    parser.add_argument("--index-type", default="auto")
    parser.add_argument("--shards", type=int, default=0, help="build the index as this many shards (0: one)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the vectors and index go (default: a temp dir)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faiss-gpu", action="store_true", help="search copies of the index on the GPUs")
    return parser.parse_args()


def timed_search(searched: Any, queries: np.ndarray, truth: np.ndarray, data: np.ndarray, candidates: int) -> dict:
    """p50 and p95 of a query's time (FAISS's candidates rescored exactly) and recall@10 against
    the exact top 10, after 20 warm-up queries."""
    for q in queries[:20]:  # warm the memory-mapped lists and the page cache of the vectors
        rescore_exact(q[None], search_vectors(searched, q[None], candidates)[1], data, 10)
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        _, ids = rescore_exact(q[None], search_vectors(searched, q[None], candidates)[1], data, 10)
        times.append(time.perf_counter() - start)
        found.append(ids[0])
    return {
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p95_ms": float(np.percentile(times, 95) * 1e3),
        "recall_at_10": float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])),
    }


def main() -> None:
    args = arguments()
    faiss.omp_set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="harmosearch-large-"))
    workdir.mkdir(parents=True, exist_ok=True)
    vectors_path = workdir / f"regions_{args.n}x{args.dim}_s{args.seed}.npy"
    started = time.perf_counter()
    if vectors_path.is_file():
        data = np.load(vectors_path, mmap_mode="r")
    else:
        data = generate(vectors_path, args.n, args.dim, args.seed)
    generated_s = time.perf_counter() - started
    queries = make_queries(data, args.queries, args.seed)
    started = time.perf_counter()
    truth = exact_top10(data, queries)
    truth_s = time.perf_counter() - started
    print(f"vectors ready ({generated_s:.0f} s), exact top 10 of {args.queries} queries ({truth_s:.0f} s)", flush=True)

    index_type = choose_index_type(args.n, args.index_type, 200_000, args.dim)
    shard_size = -(-args.n // args.shards) if args.shards > 1 else 0
    started = time.perf_counter()
    names = []
    for i, shard in enumerate(build_shards(data, index_type, shard_size)):
        names.append(f"index_{i:03d}.faiss")
        faiss.write_index(shard, str(workdir / names[-1]))
        del shard
    build_s = time.perf_counter() - started
    file_bytes = sum((workdir / name).stat().st_size for name in names)
    print(f"built {index_type} in {build_s:.0f} s: {file_bytes / args.n:.1f} bytes/vector", flush=True)

    before = anonymous_mb()
    index = open_faiss(workdir, names[0] if len(names) == 1 else names)
    rows = []
    for nprobe in (int(v) for v in args.nprobe.split(",")):
        tune(index, nprobe, 64)
        searched = to_gpus(index, shard=False) if args.faiss_gpu else index  # a copy takes the CPU's nprobe
        row = {"nprobe": nprobe, **timed_search(searched, queries, truth, data, args.candidates)}
        rows.append(row)
        print(row, flush=True)
    index_heap = anonymous_mb() - before
    payload = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "threads": args.threads,
        "index_type": index_type,
        "shards": len(names),
        "candidates": args.candidates,
        "build_s": round(build_s, 1),
        "file_bytes_per_vector": round(file_bytes / args.n, 2),
        "heap_mb_of_opened_index": round(index_heap, 1),
        "heap_bytes_per_vector": round(index_heap * 2**20 / args.n, 2),
        "stored_float16_bytes_per_vector": 2 * args.dim,
        "faiss_gpu": args.faiss_gpu,
        "load_average_after": os.getloadavg(),
        "results": rows,
    }
    print(append_result("large_index", payload))


if __name__ == "__main__":
    main()
