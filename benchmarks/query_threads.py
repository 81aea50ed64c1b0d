"""What a query's thread pools cost it: warm `Index.search` at one thread per pool (the default,
model/device.one_thread_per_pool) against every pool at its own count, at 1M regions.

    python benchmarks/query_threads.py [--model harmo-tiny] [--regions 1000000] [--rounds 20]

Over benchmarks/search.py's index of random region vectors (48 regions per image), k = 10, in
interleaved rounds, for a one-lexeme, a two-lexeme, a relation and a counting query, at the
default settings (the everyday rivals included). Reports each way's median time per query and
the paired ratio of the pools' own counts to one thread. Appends to
benchmarks/results/query_threads.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, interleaved, paired_ratio
from search import random_index

from harmosearch.config import load_config
from harmosearch.model.encoder import load_encoder
from harmosearch.search import Index
from harmosearch.search import index as index_module

QUERIES = ("red circle", "small blue star and a white ring", "yellow square above a green cross", "two red circles")
WAYS = ("one thread per pool", "pools as they are")


def search(index: Index, query: str, way: str) -> None:
    """One query, the pools limited (the default) or left as they are."""
    limit = index_module.one_thread_per_pool
    if way == WAYS[1]:
        index_module.one_thread_per_pool = contextlib.nullcontext
    try:
        index.search(query, k=10)
    finally:
        index_module.one_thread_per_pool = limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--regions", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    config = load_config(overrides={"encoder.model": args.model, "encoder.device": "cpu"})
    encoder = load_encoder(config)
    work = Path(tempfile.mkdtemp(prefix="harmosearch-threads-"))
    try:
        manifest, _ = random_index(work, args.regions, encoder, config, np.random.default_rng(0), 48)
        index = Index(work / "idx", config, encoder=encoder)
        for query in QUERIES:  # warm: the rivals embedded, the pages read
            for way in WAYS:
                search(index, query, way)
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        per_query = {}
        for query in QUERIES:
            measured = interleaved([lambda w=w, q=query: search(index, q, w) for w in WAYS], args.rounds)
            per_query[query] = {w: statistics.median(row) * 1000 for w, row in zip(WAYS, measured, strict=True)}
            for way, row in zip(WAYS, measured, strict=True):
                times[way] += row
        from threadpoolctl import threadpool_info

        record = {
            "model": args.model,
            "n_regions": (args.regions // 48) * 48,
            "index_types": manifest["index_types"],
            "rounds": args.rounds,
            "pools": [(p["internal_api"], p["num_threads"]) for p in threadpool_info()],
            "median_ms": {w: statistics.median(times[w]) * 1000 for w in WAYS},
            "median_ms_per_query": per_query,
            "own_counts_over_one": paired_ratio(times[WAYS[1]], times[WAYS[0]]),
        }
        for query, row in per_query.items():
            print(f"{query!r}: " + ", ".join(f"{w} {ms:.1f} ms" for w, ms in row.items()))
        print(f"pools as they are: {record['own_counts_over_one']:.2f}x the time at one thread per pool")
        print(f"appended to {append_result('query_threads', record)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
