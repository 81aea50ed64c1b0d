"""What finding small objects costs: indexing time and bytes per --detail, and query latency of
the refined boxes.

    python benchmarks/small_objects.py [--model harmo-tiny] [--n 128] [--rounds 3] [--queries 12]

Indexing: on small-object scenes (a seed no benchmark split uses), the time the indexing
pipeline (`encode_files`: decoding, forward passes, proposals, pooling, selection) takes with
regions at each detail over its time for `--global-only`, as the median over interleaved rounds
of the paired ratio; and the bytes an index takes per image at each detail (`build_index`).
Goal at the default detail: ratio <= 1.3.

Query: `Index.search` with k results on the index of each detail, refine off and at each
--refine-scale (the best max(k, search.rerank) results refined and reordered): the median wall
time per query, and the added time per refined result (decoding, re-encoding and the box search
at the default detail, and the crops; at high detail the crops alone).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, interleaved, paired_ratio

from harmosearch.config import GLOBAL_ONLY_REGIONS, Config, SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.indexing.encode import encode_files
from harmosearch.model.encoder import load_encoder
from harmosearch.search import Index
from harmosearch.synth import generate

DETAILS = ("normal", "high")
QUERIES = ("red circle", "blue star", "green triangle", "white ring", "black cross", "yellow square")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--scales", default="1,1.5,2", help="refine scales timed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="harmosearch-small-"))
    try:
        generate(work / "scenes", SynthConfig(n=args.n, seed=777, objects="small"), workers=2)
        paths = sorted((work / "scenes" / "images").glob("*.png"))
        base = {"encoder.model": args.model, "encoder.device": "cpu", "index.workers": 0}
        configs = {d: load_config(overrides={**base, "regions.detail": d}) for d in DETAILS}
        configs["global"] = configs["normal"].with_values(GLOBAL_ONLY_REGIONS)
        encoder = load_encoder(configs["normal"])

        def indexing(name: str):
            def run() -> None:
                for _ in encode_files(paths, encoder, configs[name]):
                    pass

            return run

        rounds = interleaved([indexing(name) for name in ("global", *DETAILS)], rounds=args.rounds)
        ratios = {d: paired_ratio(rounds[1 + i], rounds[0]) for i, d in enumerate(DETAILS)}
        index_bytes, region_counts = {}, {}
        for detail in DETAILS:
            report = build_index(work / "scenes" / "images", work / f"index-{detail}", configs[detail], encoder=encoder)
            index_bytes[detail] = folder_bytes(work / f"index-{detail}") / report.images
            region_counts[detail] = report.regions / report.images
        for detail in DETAILS:
            print(
                f"detail {detail:6s}: regions / global-only time {ratios[detail]:.2f}, "
                f"{region_counts[detail]:.1f} regions and {index_bytes[detail] / 1024:.1f} KiB per image"
            )
        queries = [QUERIES[i % len(QUERIES)] for i in range(args.queries)]
        latency: dict[str, dict[str, float]] = {}
        settings = {"off": None, **{s: float(s) for s in args.scales.split(",")}}
        refined = max(args.k, configs["normal"].search.rerank)
        for detail in DETAILS:  # at high detail --refine keeps the boxes and looks at crops only
            index = Index(work / f"index-{detail}", configs[detail], encoder=encoder)
            latency[detail] = {}
            for name, scale in settings.items():
                times = []
                for text in queries:
                    refine = scale is not None
                    start = time.perf_counter()
                    if refine:
                        index.config = _with_scale(index.config, scale)
                    index.search(text, k=args.k, refine=refine)
                    times.append(time.perf_counter() - start)
                latency[detail][name] = statistics.median(times)
            for name, seconds in latency[detail].items():
                added = (seconds - latency[detail]["off"]) / refined
                print(
                    f"query, detail {detail:6s}, refine {name:4s}: {seconds * 1000:7.0f} ms per query, "
                    f"+{added * 1000:.0f} ms a refined result"
                )
        path = append_result(
            "small_objects_cost",
            {
                "model": args.model,
                "images": len(paths),
                "rounds": args.rounds,
                "seconds_per_round": dict(zip(["global", *DETAILS], rounds, strict=True)),
                "regions_over_global_time": ratios,
                "regions_per_image": region_counts,
                "index_bytes_per_image": index_bytes,
                "k": args.k,
                "refined_per_query": refined,
                "query_seconds": latency,
            },
        )
        print(f"appended to {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _with_scale(config: Config, scale: float) -> Config:
    from dataclasses import replace

    return replace(config, search=replace(config.search, refine_scale=scale))


if __name__ == "__main__":
    main()
