"""Duplicate finding on known duplicates and near-misses: precision and recall of the groups.

    python benchmarks/dupes.py [--scenes 150] [--val-seed 71] [--test-seed 72] [--model harmo-tiny]

Two sets are drawn with harmosearch.bench.dupes.make_eval_set (synthetic scenes as originals; copies
byte-identical, resized, JPEG re-encoded, cropped 3-8%, or cropped, resized and re-encoded;
near-misses: the same scene drawn again with an object moved or recoloured, each its own
family). Every image goes through the real path: open_still at the encoder's input size, then
the model (the bundled harmo-tiny by default) for its global vector; thumbnails for the pixel check come from
open_still at dupes.THUMB_SIDE.

On the validation seed, the cosine threshold and the pixel threshold are chosen together over
a grid (the best F1 of pairwise precision and recall; among ties, the middle of the tied
thresholds). On the test seed, find_duplicates runs with them, with the library defaults, and
with vectors only (no pixel check) for comparison. Appended to benchmarks/results/dupes.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench.dupes import make_eval_set, pair_scores
from harmosearch.config import load_config
from harmosearch.dupes import (
    DEFAULT_THRESHOLD,
    PIXEL_THRESHOLD,
    THUMB_SIDE,
    candidate_pairs,
    find_duplicates,
    group_duplicates,
    keeper_order,
    pixel_difference,
)
from harmosearch.media.formats import open_still
from harmosearch.model.encoder import load_encoder

COSINES = np.round(np.arange(0.70, 0.981, 0.01), 2)
PIXELS = np.round(np.arange(0.04, 0.301, 0.01), 2)


def encoded_set(folder: Path, seed: int, scenes: int, encoder) -> dict:
    import torch

    items = make_eval_set(folder, seed, n_scenes=scenes)
    paths = [item.path for item in items]
    vectors, widths, heights = [], [], []
    for lo in range(0, len(paths), 64):
        decoded = [open_still(folder / p, min_side=encoder.image_size) for p in paths[lo : lo + 64]]
        pixels = torch.stack([encoder.image_tensor(d.image) for d in decoded])
        vectors.append(encoder.encode_pixels(pixels)[0].numpy())
        widths += [d.width for d in decoded]
        heights += [d.height for d in decoded]
    return {
        "folder": folder,
        "items": items,
        "paths": paths,
        "families": [item.family for item in items],
        "sha256": [hashlib.sha256((folder / p).read_bytes()).hexdigest() for p in paths],
        "sizes": [(folder / p).stat().st_size for p in paths],
        "widths": widths,
        "heights": heights,
        "vectors": np.concatenate(vectors),
    }


def thumbnails(s: dict):
    return lambda i: open_still(s["folder"] / s["paths"][i], min_side=THUMB_SIDE).image


def choose(val: dict) -> tuple[float, float, dict]:
    """The (cosine, pixel) thresholds with the best validation F1; ties: the middle ones."""
    n = len(val["paths"])
    taken = np.full(n, np.nan)
    order = keeper_order(
        val["paths"], np.asarray(val["widths"]), np.asarray(val["heights"]), taken, np.asarray(val["sizes"])
    )
    pairs = candidate_pairs(val["sha256"], val["widths"], val["heights"], val["vectors"], taken, float(COSINES[0]))
    load = thumbnails(val)
    cache: dict[int, object] = {}
    difference = []
    for i, j, _ in pairs:
        for k in (i, j):
            if k not in cache:
                cache[k] = load(k)
        difference.append(pixel_difference(cache[i], cache[j]))
    scores = {}
    for cosine in COSINES:
        for pixel in PIXELS:
            accepted = [(i, j) for (i, j, s), d in zip(pairs, difference, strict=True) if s >= cosine and d <= pixel]
            groups = group_duplicates(val["paths"], val["sha256"], val["vectors"], order, accepted)
            scores[(float(cosine), float(pixel))] = with_f1(pair_scores([g.members for g in groups], val["families"]))
    best = max(s["f1"] for s in scores.values())
    tied = [key for key, s in scores.items() if s["f1"] == best]
    cosine = sorted({c for c, _ in tied})[len({c for c, _ in tied}) // 2]
    pixels = sorted(p for c, p in tied if c == cosine)
    pixel = pixels[len(pixels) // 2]
    return cosine, pixel, {"candidate_pairs": len(pairs), **scores[(cosine, pixel)]}


def with_f1(scores: dict) -> dict:
    p, r = scores["precision"], scores["recall"]
    return {**scores, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def run(s: dict, cosine: float, pixel: float | None) -> dict:
    started = time.perf_counter()
    groups = find_duplicates(
        s["paths"],
        s["sha256"],
        s["widths"],
        s["heights"],
        s["vectors"],
        file_sizes=s["sizes"],
        thumbnail=thumbnails(s) if pixel is not None else None,
        threshold=cosine,
        pixel_threshold=pixel if pixel is not None else 0.0,
    )
    scores = with_f1(pair_scores([g.members for g in groups], s["families"]))
    transforms = {i: item.transform for i, item in enumerate(s["items"])}
    near_miss_rows = {i for i, t in transforms.items() if t in ("moved", "recoloured")}
    merged = sum(
        1 for g in groups for i in g.members if i in near_miss_rows and s["families"][g.keeper] != s["families"][i]
    )
    keepers_right = sum(1 for g in groups if transforms[g.keeper] in ("original", "copy", "moved", "recoloured")) / max(
        1, len(groups)
    )
    return {
        "threshold": cosine,
        "pixel_threshold": pixel,
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()},
        "groups": len(groups),
        "near_misses_merged_into_another_family": merged,
        "keeper_is_an_original": round(keepers_right, 4),
        "seconds": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=150)
    parser.add_argument("--val-seed", type=int, default=71)
    parser.add_argument("--test-seed", type=int, default=72)
    parser.add_argument("--model", default="harmo-tiny")
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config(overrides={"encoder.model": args.model, "encoder.device": "cpu"})
    encoder = load_encoder(config)
    with tempfile.TemporaryDirectory() as tmp:
        val = encoded_set(Path(tmp) / "val", args.val_seed, args.scenes, encoder)
        test = encoded_set(Path(tmp) / "test", args.test_seed, args.scenes, encoder)
        cosine, pixel, on_val = choose(val)
        transforms: dict[str, int] = {}
        for item in test["items"]:
            transforms[item.transform] = transforms.get(item.transform, 0) + 1
        payload = {
            "model": args.model,
            "scenes_per_set": args.scenes,
            "validation_seed": args.val_seed,
            "test_seed": args.test_seed,
            "test_images": len(test["paths"]),
            "test_transforms": transforms,
            "chosen_on_validation": {"threshold": cosine, "pixel_threshold": pixel, **on_val},
            "test_at_chosen": run(test, cosine, pixel),
            "test_at_defaults": run(test, DEFAULT_THRESHOLD, PIXEL_THRESHOLD),
            "test_vectors_only": run(test, cosine, None),
            "seconds": round(time.perf_counter() - started, 1),
        }
    append_result("dupes", payload)
    print(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
