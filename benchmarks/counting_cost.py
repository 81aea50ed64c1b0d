"""What counting and negation cost a query, at 1M regions.

    python benchmarks/counting_cost.py [--model harmo-tiny] [--regions 1000000] [--rounds 30]

Over an index of random region vectors in the model's space (benchmarks/search.py's, 48 regions
per image) with a calibration computed over them as indexing computes one, warm `Index.search` of
k = 10 for pairs of queries that differ only by a count or a negation, in interleaved rounds
(each round runs every query once, in turn): "red circles" / "two red circles", "yellow squares
above a green cross" / "three yellow squares above a green cross", "a red circle and a blue
square" / "a red circle without a blue square". Reports the median time of each query and, per
pair, the median over rounds of the ratio of the counting or negated query's time to the plain
one's in the same round (benchmarks/_common.paired_ratio), and the largest of those ratios.
Appends to benchmarks/results/counting_cost.jsonl.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, interleaved, paired_ratio
from search import clustered

from harmosearch.config import load_config
from harmosearch.model.encoder import load_encoder
from harmosearch.search import Index
from harmosearch.search.calibration import calibrate

PAIRS = (
    ("red circles", "two red circles"),
    ("yellow squares above a green cross", "three yellow squares above a green cross"),
    ("a red circle and a blue square", "a red circle without a blue square"),
)
PER_IMAGE = 48


def calibrated_index(work: Path, n_regions: int, encoder, config, rng: np.random.Generator) -> dict:
    """An index at WORK/idx of clustered random region vectors, PER_IMAGE to an image, with the
    calibration indexing would store for them."""
    from harmosearch.store import IndexData, write_generation

    dim = encoder.identity.embed_dim
    n_images = n_regions // PER_IMAGE
    regions = clustered(n_images * PER_IMAGE, dim, rng)
    image_ids = np.repeat(np.arange(n_images, dtype=np.int32), PER_IMAGE)
    boxes = rng.uniform(0, 100, size=(len(image_ids), 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2]
    names = {"x0": 0, "y0": 1, "x1": 2, "y1": 3}
    data = IndexData(
        images={
            "path": np.array([f"img{i:07d}.jpg" for i in range(n_images)], dtype=object),
            "size": np.ones(n_images, np.int64),
            "mtime_ns": np.ones(n_images, np.int64),
            "sha256": np.array([str(i) for i in range(n_images)], dtype=object),
            "width": np.full(n_images, 224, np.int32),
            "height": np.full(n_images, 224, np.int32),
        },
        regions={
            "image_id": image_ids,
            **{name: boxes[:, column] for name, column in names.items()},
            **{f"n{name}": boxes[:, column] / 224 for name, column in names.items()},
            # windows and segments; the first region of an image is the whole image
            "scale": np.where(np.arange(len(image_ids)) % PER_IMAGE == 0, 1.0, 0.5).astype(np.float32),
        },
        global_vectors=regions[::PER_IMAGE].copy(),
        region_vectors=regions,
    )
    start = np.arange(0, n_images * PER_IMAGE + 1, PER_IMAGE, dtype=np.int64)

    def encode(texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(e.global_vector.numpy(), e.lexeme_vectors.numpy()) for e in encoder.encode_queries(texts)]

    calibration = calibrate(data.global_vectors.astype(np.float16), regions.astype(np.float16), start, encode)
    extra = {"calibration": calibration.to_dict()}
    return write_generation(
        work / "idx", data, encoder.identity.to_dict(), config.to_dict(), "auto", work, None, extra=extra
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--regions", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    config = load_config(overrides={"encoder.model": args.model, "encoder.device": "cpu"})
    encoder = load_encoder(config)
    work = Path(tempfile.mkdtemp(prefix="harmosearch-counting-"))
    try:
        manifest = calibrated_index(work, args.regions, encoder, config, rng)
        index = Index(work / "idx", config, encoder=encoder)
        queries = [q for pair in PAIRS for q in pair]
        for q in queries:  # warm: the vocabulary is embedded once, caches filled
            index.search(q, k=10)
        timed = interleaved([lambda q=q: index.search(q, k=10) for q in queries], args.rounds)
        times = dict(zip(queries, timed, strict=True))
        ratios = {counted: paired_ratio(times[counted], times[plain]) for plain, counted in PAIRS}
        record = {
            "model": args.model,
            "n_regions": (args.regions // PER_IMAGE) * PER_IMAGE,
            "index_types": manifest["index_types"],
            "rounds": args.rounds,
            "median_ms": {q: statistics.median(times[q]) * 1000 for q in queries},
            "over_plain": ratios,
            "largest_ratio": max(ratios.values()),
        }
        for plain, counted in PAIRS:
            print(
                f"{counted!r}: {record['median_ms'][counted]:.1f} ms vs {plain!r} {record['median_ms'][plain]:.1f} ms,"
                f" {ratios[counted]:.2f}x"
            )
        print(f"appended to {append_result('counting_cost', record)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
