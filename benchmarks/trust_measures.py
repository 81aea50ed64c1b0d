"""Label-free measures of region trust, side by side: which of them tells trained regions from
untrained ones on both worlds?

    python benchmarks/trust_measures.py [--n 200] [--pictures 16,64]
                                        [--models harmo-tiny-vit:random,harmo-tiny,harmo-mix,harmo-tiny-gc]

Region trust (regions/trust.py) decides how much an index's regions count in fusion. Its first
measure (each region picks out its own box shown alone, among its picture's) put harmo-mix and the
global-loss stand-in harmo-tiny-gc at the same 0.11 on the photo world's test scenes
(transfer.jsonl), although fully weighed regions lift harmo-mix's phrase P@5 there from 0.45 to
0.59 and lower harmo-tiny-gc's text->image R@1. A measure worth having puts the models whose
regions were trained (harmo-tiny, harmo-mix) above the stand-in and random weights on both
worlds. Measured on validation scenes (search task, seeds no published figure uses), each on
the first `pictures` of an evenly spaced sample, six boxes per picture as regions/trust samples:

- own box: version 1's measure (0 chance, 1 always first);
- own box, segments: the same over segment boxes only (boxes drawn around something);
- own box, phrase space: the same with both sides projected on the everyday vocabulary's
  phrases (only what text can ask for);
- phrases, global and regions: per picture, the correlation over the vocabulary between the
  global vector's phrase scores and the best region's score for each phrase (per-phrase means
  taken out over the sample);
- phrase-picked boxes: per picture, the global vector's six best phrases; each phrase's best
  region is cut out and shown alone; own-box MRR of the phrases over those crops, rescaled.

Nothing is chosen here. Appends one record to benchmarks/results/trust_measures.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench.datasets import load_bench_set
from harmosearch.bench.vectors import encode_images
from harmosearch.config import load_config
from harmosearch.model.encoder import load_encoder
from harmosearch.regions import trust as T
from harmosearch.search.contrast import load_vocabulary
from harmosearch.search.pictures import decode

PHRASES = 6  # phrases per picture for the phrase-picked boxes


def rows_of(regions: Any, i: int) -> np.ndarray:
    return np.arange(int(regions.start[i]), int(regions.start[i + 1]))


def sampled(encoder: Any, bench: Any, regions: Any, pictures: int, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    """Region rows, their boxes-alone vectors and pictures, sampled as regions/trust samples,
    among the rows `keep` marks."""

    def picture(i: int) -> Any:
        return decode(bench.images[i], float("nan"))

    images = T.sample_images(regions.n_images, pictures)
    rows, alone, picture_of = T.sampled_boxes_alone(picture, images, regions.boxes, regions.start, keep)
    return rows, T.whole_vectors(encoder, alone), picture_of


def own_box(region: np.ndarray, crops: np.ndarray, picture_of: np.ndarray) -> float:
    mrr, chance = T.own_box_mrr(region, crops, picture_of)
    return T.normalised(mrr, chance)


def phrase_correlation(images: Any, phrases: np.ndarray, pictures: int) -> float:
    regions = images.regions
    sample = T.sample_images(regions.n_images, pictures)
    whole = T._unit(images.global_vectors[sample]) @ phrases.T
    best = []
    for i in sample:
        own = rows_of(regions, int(i))
        parts = own[regions.scales[own] < 1.0] if (regions.scales[own] < 1.0).any() else own
        best.append((T._unit(regions.vectors[parts]) @ phrases.T).max(0))
    a, b = whole - whole.mean(0), np.stack(best) - np.stack(best).mean(0)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return float((T._unit(a) * T._unit(b)).sum(1).mean())


def phrase_picked(encoder: Any, bench: Any, images: Any, phrases: np.ndarray, pictures: int) -> float:
    regions = images.regions
    crops, asked, picture_of = [], [], []
    for i in T.sample_images(regions.n_images, pictures):
        own = rows_of(regions, int(i))
        parts = own[regions.scales[own] < 1.0]
        if len(parts) < 2:
            continue
        top = np.argsort(-(phrases @ T._unit(images.global_vectors[i : i + 1])[0]))[:PHRASES]
        picked = parts[(phrases[top] @ T._unit(regions.vectors[parts]).T).argmax(1)]
        kept: list[tuple[int, int]] = []
        for phrase, row in zip(top, picked, strict=True):
            if all(T._iou(regions.boxes[row], regions.boxes[other]) <= 0.5 for _, other in kept):
                kept.append((int(phrase), int(row)))
        if len(kept) < 2:
            continue
        picture = decode(bench.images[i], float("nan"))
        for phrase, row in kept:
            crops.append(T.shown_alone(picture, regions.boxes[row]))
            asked.append(phrase)
            picture_of.append(int(i))
    crop_vectors = T._unit(T.whole_vectors(encoder, crops))
    picture_of_array = np.asarray(picture_of)
    reciprocal, chance = [], []
    for picture in np.unique(picture_of_array):
        idx = np.flatnonzero(picture_of_array == picture)
        scores = phrases[np.asarray(asked)[idx]] @ crop_vectors[idx].T
        reciprocal += list(1.0 / (scores >= np.diag(scores)[:, None]).sum(1))
        chance += [T.chance_mrr(len(idx))] * len(idx)
    return T.normalised(float(np.mean(reciprocal)), float(np.mean(chance)))


def measures(encoder: Any, bench: Any, images: Any, phrases: np.ndarray, pictures: int) -> dict[str, float]:
    regions = images.regions
    every = np.ones(len(regions.scales), dtype=bool)
    rows, crops, picture_of = sampled(encoder, bench, regions, pictures, every)
    region = regions.vectors[rows]
    out = {
        "own box": own_box(region, crops, picture_of),
        "own box, phrase space": T.normalised(*T.phrase_space_mrr(region, crops, picture_of, phrases)),
    }
    rows, crops, picture_of = sampled(encoder, bench, regions, pictures, regions.scales == 0.0)
    out["own box, segments"] = own_box(regions.vectors[rows], crops, picture_of)
    out["phrases, global and regions"] = phrase_correlation(images, phrases, pictures)
    out["phrase-picked boxes"] = phrase_picked(encoder, bench, images, phrases, pictures)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--pictures", default="16,64", help="pictures sampled, comma-separated")
    parser.add_argument("--models", default="harmo-tiny-vit:random,harmo-tiny,harmo-mix,harmo-tiny-gc")
    args = parser.parse_args()
    counts = [int(v) for v in args.pictures.split(",")]
    record: dict[str, Any] = {"n": args.n, "split": "val", "task": "search", "pictures": counts, "rows": []}
    for model in args.models.split(","):
        config = load_config(overrides={"encoder.model": model, "encoder.precision": "fp32"})
        encoder = load_encoder(config)
        phrases = load_vocabulary(encoder, "everyday", config.paths.cache_dir).vectors
        for world in ("flat", "photo"):
            bench = load_bench_set("synthetic", None, config.paths.cache_dir, args.n, "search", "val", world=world)
            images = encode_images(encoder, config, bench)
            for count in counts:
                row = {"model": model, "world": world, "pictures": count}
                row.update(measures(encoder, bench, images, phrases, count))
                record["rows"].append(row)
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    print(f"appended to {append_result('trust_measures', record)}")


if __name__ == "__main__":
    main()
