"""When may region trust stop sampling? A sequential sample against the full one.

    python benchmarks/trust_sequential.py --split val [--n 300] [--orders 200]
    python benchmarks/trust_sequential.py --split test

Region trust (regions/trust.py) encodes every sampled box shown alone as a whole picture: on
TRUST_IMAGES = 128 pictures that is 768 pictures, 163 s with ViT-B-16 on a 2-core CPU (encode.jsonl
16:19:28). Fusion only needs the weight trust gives on the ramp (search.trust_low to trust_high),
and a trust far beyond the ramp gives the same weight on fewer pictures. measure_trust therefore
grows its sample TRUST_STEP pictures at a time from TRUST_FIRST and stops once trust is TRUST_Z
standard errors beyond the ramp (regions.trust.settled).

Each model and world's 128 pictures (validation or test scenes of the search task, the models
whose trust the published figures hang on plus random weights) are measured once; then in the
library's own order and in `--orders` random orders of the same pictures, the rule is played look
by look. Reported per rule: the pictures it measures (mean), and how far the weight it gives
strays from the full sample's (the share of orders off by more than 0.05, and the largest).
`--split val` plays a grid of rules (first look, z), which is where TRUST_FIRST and TRUST_Z were
chosen; `--split test` plays only the library's rule. Appends one record to
benchmarks/results/trust_sequential.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result
from trust_measures import sampled

from harmosearch.bench.datasets import load_bench_set
from harmosearch.bench.vectors import encode_images
from harmosearch.config import load_config
from harmosearch.model.encoder import load_encoder
from harmosearch.regions import trust as T
from harmosearch.search.contrast import load_vocabulary

MODELS = "harmo-tiny-vit:random,harmo-tiny-gc,harmo-tiny,harmo-mix"
GRID = [(first, z) for first in (16, 32, 48) for z in (2.0, 3.0, 4.0)]


def measured(encoder: Any, config: Any, world: str, split: str, n: int) -> tuple[np.ndarray, ...]:
    """The full sample seen through the phrases: region side, alone side, picture of each row."""
    bench = load_bench_set("synthetic", None, config.paths.cache_dir, n, "search", split, world=world)
    regions = encode_images(encoder, config, bench).regions
    every = np.ones(len(regions.scales), dtype=bool)
    rows, crops, picture_of = sampled(encoder, bench, regions, T.TRUST_IMAGES, every)
    phrases = load_vocabulary(encoder, "everyday", config.paths.cache_dir).vectors
    return T.phrase_space(regions.vectors[rows], phrases), T.phrase_space(crops, phrases), picture_of


def looks(sample: tuple[np.ndarray, ...], order: np.ndarray) -> list[tuple[int, float, float]]:
    """(pictures, trust, spread) at every TRUST_STEP pictures of `order` (image rows)."""
    region, alone, picture_of = sample
    out = []
    for count in range(T.TRUST_STEP, len(order) + T.TRUST_STEP, T.TRUST_STEP):
        keep = np.isin(picture_of, order[:count])
        trust, _, spread = T.trust_estimate(region[keep], alone[keep], picture_of[keep])
        out.append((min(count, len(order)), trust, spread))
    return out


def played(steps: list[tuple[int, float, float]], first: int, z: float, ramp: tuple[float, float]) -> tuple[int, float]:
    """(pictures measured, trust given) when the rule (first look, z) stops."""
    for pictures, trust, spread in steps:
        if pictures >= first and T.settled(trust, spread, ramp, z):
            return pictures, trust
    return steps[-1][0], steps[-1][1]


def summary(results: list[tuple[int, float]], full: float, ramp: tuple[float, float]) -> dict[str, float]:
    weight = T.region_weight(full, *ramp)
    off = np.array([abs(T.region_weight(trust, *ramp) - weight) for _, trust in results])
    return {
        "pictures": float(np.mean([p for p, _ in results])),
        "off > 0.05": float(np.mean(off > 0.05)),
        "largest off": float(off.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--models", default=MODELS)
    args = parser.parse_args()
    search = load_config().search
    ramp = (search.trust_low, search.trust_high)
    rules = GRID if args.split == "val" else [(T.TRUST_FIRST, T.TRUST_Z)]
    record: dict[str, Any] = {"n": args.n, "split": args.split, "orders": args.orders, "ramp": ramp, "rows": []}
    for model in args.models.split(","):
        config = load_config(overrides={"encoder.model": model, "encoder.precision": "fp32"})
        encoder = load_encoder(config)
        for world in ("flat", "photo"):
            sample = measured(encoder, config, world, args.split, args.n)
            own = T.sample_order(args.n)
            own = own[np.isin(own, sample[2])]
            full = looks(sample, own)[-1]
            rng = np.random.default_rng(0)
            orders = [own] + [rng.permutation(own) for _ in range(args.orders)]
            steps = [looks(sample, order) for order in orders]
            row: dict[str, Any] = {"model": model, "world": world, "trust": full[1], "spread": full[2]}
            for first, z in rules:
                results = [played(s, first, z, ramp) for s in steps]
                row[f"first {first}, z {z}"] = summary(results, full[1], ramp) | {"own order": results[0][0]}
            record["rows"].append(row)
            print(model, world, {k: v for k, v in row.items() if k not in ("model", "world")}, flush=True)
    print(f"appended to {append_result('trust_sequential', record)}")


if __name__ == "__main__":
    main()
