"""How much region trust moves with the arithmetic, and with the size of its sample.

    python benchmarks/trust_noise.py [--images 16,64] [--paths fp32,int8] [--n 300]

Region trust (regions/trust.py) weighs the regions in fusion through a ramp from search.trust_low
to trust_high (0.1 to 0.2): a trust that moves by 0.05 moves the weight by half. On the counting
test scenes the fp32 and int8 paths, whose vectors agree to a cosine of 0.9999, measured 0.164
and 0.214 on the 16 pictures version 1 of the measurement sampled. For each benchmark set below (test seeds, the
bundled model) and each inference path, the trust measured on TRUST_IMAGES pictures and on more
(regions/trust.sample_images asked for more), and the weight each gives. Nothing is chosen here:
it says whether a larger sample would make the weight agree across paths, and at what cost.
Appends one record to benchmarks/results/trust_noise.jsonl.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench.datasets import load_bench_set
from harmosearch.bench.vectors import bench_trust, encode_images
from harmosearch.config import load_config
from harmosearch.config.load import shapes_model_unless_named
from harmosearch.model.encoder import load_encoder
from harmosearch.regions import trust as trust_module

# (label, task, world): the sets whose trust the published figures hang on
SETS = (
    ("counting, flat", "counting", "flat"),
    ("search, flat", "search", "flat"),
    ("search, photo", "search", "photo"),
)


def measured(encoder: Any, bench: Any, images: Any, count: int) -> dict[str, float]:
    """Trust on `count` sampled pictures, and the weight it gives at today's ramp."""
    sample = trust_module.sample_images
    # the count the measurement asks for (TRUST_IMAGES) is replaced by this one
    trust_module.sample_images = lambda n_images, _asked=None: sample(n_images, count)
    try:
        started = time.perf_counter()
        found = bench_trust(encoder, bench, images)
        seconds = time.perf_counter() - started
    finally:
        trust_module.sample_images = sample
    search = load_config().search
    weight = trust_module.region_weight(found.trust, search.trust_low, search.trust_high)
    return {"trust": found.trust, "weight": weight, "regions": found.regions, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="16,64", help="pictures sampled, comma-separated")
    parser.add_argument("--paths", default="fp32,int8", help="encoder.precision values, comma-separated")
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    counts = [int(v) for v in args.images.split(",")]
    record: dict[str, Any] = {"n": args.n, "split": "test", "images": counts}
    for precision in args.paths.split(","):
        config = shapes_model_unless_named(load_config(overrides={"encoder.precision": precision}))
        encoder = load_encoder(config)
        record["model"] = config.encoder.model
        for label, task, world in SETS:
            bench = load_bench_set("synthetic", None, config.paths.cache_dir, args.n, task, "test", world=world)
            images = encode_images(encoder, config, bench)
            for count in counts:
                row = measured(encoder, bench, images, count)
                record[f"{label}, {precision}, {count} pictures"] = row
                print(label, precision, count, {k: round(v, 3) for k, v in row.items()}, flush=True)
    print(f"appended to {append_result('trust_noise', record)}")


if __name__ == "__main__":
    main()
