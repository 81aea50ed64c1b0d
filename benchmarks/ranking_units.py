"""The unit of the ranking's amounts per model and world: how wide each model's band of region
cosines is on the benchmark scenes (issue #30, scale-free units).

    python benchmarks/ranking_units.py [--split val] [--n 200] [--models harmo-tiny,harmo-tiny-gc] [--worlds flat,photo]

For each model x world, the scenes' own calibration (as an index of them holds it) and its
spread: the standard deviation of the null at alpha 0, the unit search.window_penalty,
box_margin, relation_weight and contrast are given in (search/calibration.py, ranking_unit),
beside the spread at the other alphas, the null's mean and the model's logit scale. The
defaults in units are the cosine amounts chosen before, divided by harmo-tiny's spread on the
validation flat scenes. Appends to benchmarks/results/ranking_units.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench.datasets import load_bench_set
from harmosearch.bench.vectors import bench_calibration, encode_images
from harmosearch.config import load_config
from harmosearch.model.encoder import load_encoder
from harmosearch.search.calibration import ranking_unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--models", default="harmo-tiny,harmo-tiny-gc")
    parser.add_argument("--worlds", default="flat,photo")
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        config = load_config(overrides={"encoder.model": model})
        encoder = load_encoder(config)
        for world in args.worlds.split(","):
            bench = load_bench_set(
                "synthetic", None, config.paths.cache_dir, args.n, "search", args.split, "mixed", world
            )
            calibration = bench_calibration(encoder, encode_images(encoder, config, bench))
            row = {
                "model": model,
                "world": world,
                "dataset": bench.name,
                "unit": ranking_unit(calibration),
                "spread_at_alpha": {f"{a:g}": calibration.spread(a) for a in (0.0, 0.15, 0.5, 1.0)},
                "null_mean_alpha_0": float(np.mean(calibration.null_at(0.0))),
                "logit_scale": float(encoder.temperature),
            }
            rows.append(row)
            print(f"{model} {world}: unit {row['unit']:.4f}, null mean {row['null_mean_alpha_0']:.3f}", flush=True)
    path = append_result("ranking_units", {"split": args.split, "n": args.n, "rows": rows})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
