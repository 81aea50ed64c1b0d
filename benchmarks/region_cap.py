"""What the per-image region cap (regions.max_regions) keeps out on cluttered pictures, and what
a higher one costs: the bundled model at the default detail (or --detail high, which keeps 1.5
times the cap, rounded up; twice it before 3781d3c) on the validation scenes of both worlds, at
each cap. Each record names the regions a picture may keep (`kept`).

    python benchmarks/region_cap.py [--caps 96,128,192,256,400] [--n 200] [--detail normal]

Per cap and world: phrase search P@5 (and its box), grounding and its proposal ceiling (the
share of annotated objects some kept region fits), caption text->image R@1 fused and
relation-aware, and the regions an image keeps (what the index stores and a query scores, per
picture). Appends one record per cap and world to results/region_cap_val.jsonl. Validation scenes
only: the records are for choosing the cap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, search_and_grounding

from harmosearch.bench import run_bench
from harmosearch.bench.datasets import load_bench_set
from harmosearch.bench.vectors import encode_images
from harmosearch.config import SHAPES_MODEL, load_config
from harmosearch.model.encoder import load_encoder
from harmosearch.regions.proposals import high_detail_cap


def figures(cap: int, world: str, n: int, detail: str = "normal") -> dict:
    overrides = {"encoder.model": SHAPES_MODEL, "encoder.device": "cpu", "regions.max_regions": cap}
    config = load_config(overrides={**overrides, "regions.detail": detail})
    encoder = load_encoder(config)
    tasks = ("search", "grounding", "retrieval")
    out = run_bench(config, "synthetic", tasks, n=n, split="val", world=world, encoder=encoder)["tasks"]
    bench = load_bench_set("synthetic", None, config.paths.cache_dir, n, "search", "val", world=world)
    start = encode_images(encoder, config, bench).regions.start  # cached by the bench
    modes = out["retrieval"]["modes"]
    return {
        **search_and_grounding(out),
        "t2i_r1_fused": modes["fused"]["t2i_R@1"],
        "t2i_r1_relations": modes["relations"]["t2i_R@1"],
        "regions_per_image": float(start[-1]) / (len(start) - 1),
        "model": encoder.identity.to_dict(),
        "config": config.to_json(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", default="96,128,192,256,400")
    parser.add_argument("--n", type=int, default=200, help="validation scenes per world")
    parser.add_argument("--detail", default="normal", help="normal or high (which keeps 1.5 times the cap)")
    args = parser.parse_args()
    for cap in (int(c) for c in args.caps.split(",")):
        for world in ("photo", "flat"):
            got = figures(cap, world, args.n, args.detail)
            shown = {k: round(v, 3) for k, v in got.items() if isinstance(v, float)}
            print(f"max_regions {cap}, {world}, {args.detail} detail: {shown}", flush=True)
            kept = cap if args.detail == "normal" else high_detail_cap(cap)
            record = {
                "max_regions": cap,
                "kept": kept,
                "detail": args.detail,
                "world": world,
                "split": "val",
                "n": args.n,
            }
            append_result("region_cap_val", {**record, **got})


if __name__ == "__main__":
    main()
