"""Where phrase search goes wrong on small and large objects: the wrong results in each phrase's
top 5, by what the box shown on them holds, and the P@5 that ranking images by their
ground-truth boxes alone would reach (the ceiling of the region scores, the model given).

    python benchmarks/ranking_errors.py [--model harmo-tiny] [--split val] [--n 300] [--world flat|photo]
        [--objects small large]

Both figures use the validation scenes (`--split val`) and the default search settings without
refinement: the indexed ranking (alpha, box margin), the phrase's first lexeme. A wrong result
is a top-5 image without the phrase's object; its shown box is matched to the image's object it
overlaps most (IoU), which then shares the phrase's colour, its shape, neither, or no object is
under the box (IoU < 0.1). Appends to benchmarks/results/ranking_errors.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench.datasets import load_bench_set
from harmosearch.bench.metrics import box_iou
from harmosearch.bench.vectors import encode_images, encode_texts, fused_table
from harmosearch.config import load_config
from harmosearch.model.encoder import load_encoder
from harmosearch.search.calibration import in_cosines


def what_is_shown(phrase: str, box: np.ndarray, objects: list[tuple[np.ndarray, str]]) -> str:
    """What the box shown for `phrase` on an image without its object holds (see the module doc)."""
    ious = box_iou(np.stack([b for b, _ in objects]), box[None])[:, 0] if objects else np.zeros(0)
    if not len(ious) or ious.max() < 0.1:
        return "no object"
    colour, shape = objects[int(ious.argmax())][1].split(" ", 1)
    want_colour, want_shape = phrase.split(" ", 1)
    if colour == want_colour:
        return "same colour, other shape"
    return "same shape, other colour" if shape == want_shape else "other colour and shape"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--world", choices=("flat", "photo"), default="flat")
    parser.add_argument("--objects", nargs="+", default=["small", "large"], choices=("mixed", "small", "large"))
    args = parser.parse_args()
    # The README's figures were measured before search.window_penalty, search.contrast and
    # search.phrase_alpha existed: ranked as then.
    config = load_config(
        overrides={
            "encoder.model": args.model,
            "search.refine": False,
            "search.window_penalty": 0.0,
            "search.contrast": 0.0,
            "search.phrase_alpha": 0.5,
        }
    )
    encoder = load_encoder(config)
    record: dict[str, dict] = {}
    for objects in args.objects:
        bench = load_bench_set(
            "synthetic", None, config.paths.cache_dir, args.n, "search", args.split, objects, args.world
        )
        images = encode_images(encoder, config, bench)
        holders: dict[str, set[int]] = defaultdict(set)
        in_image: dict[int, list[tuple[np.ndarray, str]]] = defaultdict(list)
        for (image, box, _), phrase in zip(bench.boxes, bench.phrases, strict=True):
            holders[phrase].add(image)
            in_image[image].append((np.asarray(box, np.float32), phrase))
        phrases = sorted(holders)
        texts = encode_texts(encoder, phrases, images.global_vectors.shape[1])
        first = np.array([np.flatnonzero(texts.owners == p)[0] for p in range(len(phrases))])
        g = texts.global_vectors @ images.global_vectors.T
        s = in_cosines(config.search, None)  # the box margin in the cosines it was measured with (0.05)
        fused, rows = fused_table(g, texts.lexemes, texts.owners, images, s)
        # Each image scored by its ground-truth boxes' vectors alone (best box per phrase).
        truth_scores = images.gt_vectors @ texts.lexemes[first].T
        by_truth = np.full((len(bench.images), len(phrases)), -np.inf)
        np.maximum.at(by_truth, np.array([i for i, _, _ in bench.boxes]), truth_scores)
        wrong: Counter[str] = Counter()
        precision, ceiling = [], []
        for p, phrase in enumerate(phrases):
            top = np.lexsort((np.arange(fused.shape[1]), -fused[p]))[:5]
            precision.append(np.mean([int(i) in holders[phrase] for i in top]))
            for i in top:
                if int(i) not in holders[phrase]:
                    wrong[what_is_shown(phrase, images.regions.boxes[rows[i, first[p]]], in_image[int(i)])] += 1
            best = np.lexsort((np.arange(by_truth.shape[0]), -by_truth[:, p]))[:5]
            ceiling.append(np.mean([int(i) in holders[phrase] for i in best]))
        total = sum(wrong.values())
        record[objects] = {
            "P@5": float(np.mean(precision)),
            "P@5_ranked_by_ground_truth_boxes": float(np.mean(ceiling)),
            "wrong_in_top5": total,
            "wrong_by_what_is_shown": {k: v / total for k, v in wrong.most_common()},
        }
        print(
            f"{objects}: P@5 {np.mean(precision):.3f}, by ground-truth boxes {np.mean(ceiling):.3f}; "
            f"{total} wrong results: " + ", ".join(f"{k} {v / total:.0%}" for k, v in wrong.most_common())
        )
    path = append_result(
        "ranking_errors",
        {
            "model": args.model,
            "split": args.split,
            "n": args.n,
            "world": args.world,
            "config": config.to_json(),
            **record,
        },
    )
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
