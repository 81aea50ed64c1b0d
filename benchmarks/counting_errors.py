"""Where counting goes wrong: every instance found on the validation counting scenes matched to
the scene's objects.

    python benchmarks/counting_errors.py [--detail high] [--quantile 0.6] [--overlap 0.3]
                                         [--centres] [--segments] [--world flat] [--split val]

For each scene, the instances found for its thing ("two red circles" asks for one instance's
vector: the same for every n) are matched to the annotated objects: an instance is on an object
when it overlaps its box at IoU >= 0.3 or its centre lies inside it. Prints how many instances
were right (a first box on an object of the thing), a second box on an object already counted,
on an object of another class (and which classes, most common first) or on no object, and how
many objects of the thing were missed; and per number held, how often the count was right, high
or low. Prints only: the figures it explains are in benchmarks/results/counting_val.jsonl.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from harmosearch.bench.datasets import load_bench_set
from harmosearch.bench.metrics import box_iou
from harmosearch.bench.vectors import bench_calibration, encode_images
from harmosearch.config import load_config
from harmosearch.config.load import shapes_model_unless_named
from harmosearch.model.encoder import load_encoder
from harmosearch.search.count import find_instances, presence_rule
from harmosearch.search.query import encode_query
from harmosearch.synth.counting import count_query


def kind_of(box: np.ndarray, objects: list[tuple[np.ndarray, str]], thing: str, counted: set[int]) -> str:
    """What an instance's box lies on (and marks the object counted)."""
    ious = [float(box_iou(o[None], box[None])[0, 0]) for o, _ in objects]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    inside = [k for k, (o, _) in enumerate(objects) if o[0] <= cx <= o[2] and o[1] <= cy <= o[3]]
    best = int(np.argmax(ious)) if ious else -1
    hit = best if best >= 0 and ious[best] >= 0.3 else (inside[0] if inside else None)
    if hit is None:
        return "on no object"
    if objects[hit][1] != thing:
        return f"other: {objects[hit][1]}"
    if hit in counted:
        return "second box on a counted object"
    counted.add(hit)
    return "right"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detail", default="high")
    parser.add_argument("--quantile", type=float, default=0.6)
    parser.add_argument("--overlap", type=float, default=0.3)
    parser.add_argument("--centres", action="store_true")
    parser.add_argument("--segments", action="store_true", help="search.count_segments: no window is an instance")
    parser.add_argument("--world", default="flat")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    config = shapes_model_unless_named(load_config(overrides={"regions.detail": args.detail}))
    config = replace(config, search=replace(config.search, count_quantile=args.quantile))
    encoder = load_encoder(config)
    bench = load_bench_set("synthetic", None, config.paths.cache_dir, 300, "counting", args.split, world=args.world)
    images = encode_images(encoder, config, bench)
    rule = presence_rule(bench_calibration(encoder, images), config.search, 0.5)
    objects: dict[int, list[tuple[np.ndarray, str]]] = {}
    for image, box, label in bench.boxes:
        objects.setdefault(image, []).append((np.array(box, float), bench.classes[label]))
    kinds: Counter[str] = Counter()
    verdicts: Counter[tuple[int, str]] = Counter()
    for thing in sorted({t for _, t, _ in bench.counts}):
        vector = encode_query(encoder, count_query(thing, 2)).lexeme_vectors[:1]
        scenes = [(i, k) for i, t, k in bench.counts if t == thing]
        found, rows, _ = find_instances(
            images.regions,
            np.array([i for i, _ in scenes]),
            vector,
            rule.bar,
            args.overlap,
            centres=args.centres,
            segments_only=args.segments,
        )
        for (image, held), n, kept in zip(scenes, found[:, 0], rows[:, 0], strict=True):
            verdicts[(held, "right" if n == held else "high" if n > held else "low")] += 1
            counted: set[int] = set()
            kinds.update(kind_of(images.regions.boxes[r], objects[image], thing, counted) for r in kept[kept >= 0])
            kinds["missed object"] += sum(name == thing for _, name in objects[image]) - len(counted)
    report(rule, kinds, verdicts, len(bench.counts))


def report(rule: Any, kinds: Counter[str], verdicts: Counter[tuple[int, str]], scenes: int) -> None:
    right = sum(v for (_, verdict), v in verdicts.items() if verdict == "right")
    print(f"presence bar {rule.bar:.3f}; count accuracy {right / scenes:.3f}")
    others = sum(v for k, v in kinds.items() if k.startswith("other: "))
    for kind in ("right", "second box on a counted object", "on no object", "missed object"):
        print(f"{kind}: {kinds[kind]}")
    print(f"on an object of another class: {others}")
    for kind, v in sorted(((k, v) for k, v in kinds.items() if k.startswith("other: ")), key=lambda kv: -kv[1])[:10]:
        print(f"  {kind.removeprefix('other: ')}: {v}")
    for held in sorted({h for h, _ in verdicts}):
        print(f"{held} held: " + ", ".join(f"{v} {verdicts[(held, v)]}" for v in ("right", "high", "low")))


if __name__ == "__main__":
    main()
