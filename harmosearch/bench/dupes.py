"""The duplicate finder's evaluation set (benchmarks/dupes.py): known duplicates and near-misses
drawn from synthetic scenes, and pairwise precision and recall of a grouping on it."""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harmosearch.config import SynthConfig
from harmosearch.synth import COLOURS, render, sample_scene


@dataclass(frozen=True)
class EvalItem:
    path: str  # relative to the set's folder
    family: int  # one picture and its copies share a family; another shot of a scene is its own family
    transform: str  # original, copy, resized, jpeg, crop, crop+resize+jpeg, moved, recoloured


def make_eval_set(out: Path, seed: int, n_scenes: int = 60, size: int = 320) -> list[EvalItem]:
    """Write a set of known duplicates and near-misses under `out`; returns what each file is.

    Every scene (synthetic, 2-4 objects, `size` pixels) is an original JPEG (quality 95, as
    cameras write). Two thirds of them
    get 1-3 copies, drawn from: a byte-identical copy, a resize to 50 or 75%, a JPEG at quality
    30, 60 or 90, a crop of 3-8% of each dimension (split at random between its two sides),
    and a crop that is also resized and re-encoded. Half of the scenes get another shot: the
    same scene drawn again with one object moved elsewhere or one object's colour changed
    (its own family; half of these have a JPEG copy of their own).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = SynthConfig(size=size, min_objects=2, max_objects=4, seed=seed)
    items: list[EvalItem] = []

    def save(image: Any, name: str, family: int, transform: str, quality: int | None = None) -> None:
        if quality is None:
            image.save(out / name, format="PNG")
        else:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality)
            (out / name).write_bytes(buffer.getvalue())
        items.append(EvalItem(name, family, transform))

    family = 0
    for k in range(n_scenes):
        rng = np.random.default_rng([seed, k, 7])
        scene = sample_scene(seed, k, config)
        original, _ = render(scene)
        stem = f"s{k:03d}"
        save(original, f"{stem}.jpg", family, "original", quality=95)
        if rng.random() < 2 / 3:
            kinds = rng.choice(
                ["copy", "resized", "jpeg", "crop", "crop+resize+jpeg"], size=rng.integers(1, 4), replace=False
            )
            for kind in kinds:
                name = f"{stem}_{kind.replace('+', '_')}"
                if kind == "copy":
                    shutil.copyfile(out / f"{stem}.jpg", out / f"{name}.jpg")
                    items.append(EvalItem(f"{name}.jpg", family, "copy"))
                elif kind == "resized":
                    scale = float(rng.choice([0.5, 0.75]))
                    save(
                        original.resize((round(size * scale),) * 2, Image.Resampling.LANCZOS),
                        f"{name}.png",
                        family,
                        kind,
                    )
                elif kind == "jpeg":
                    save(original, f"{name}.jpg", family, kind, quality=int(rng.choice([30, 60, 90])))
                elif kind == "crop":
                    save(_crop(original, rng), f"{name}.jpg", family, kind, quality=90)
                else:
                    cropped = _crop(original, rng)
                    small = cropped.resize((cropped.width * 3 // 4, cropped.height * 3 // 4), Image.Resampling.LANCZOS)
                    save(small, f"{name}.jpg", family, kind, quality=60)
        family += 1
        if rng.random() < 0.5:
            kind = "moved" if rng.random() < 0.5 else "recoloured"
            other = _moved(scene, rng) if kind == "moved" else _recoloured(scene, rng)
            shot, _ = render(other)
            save(shot, f"{stem}_{kind}.jpg", family, kind, quality=95)
            if rng.random() < 0.5:
                save(shot, f"{stem}_{kind}_jpeg.jpg", family, "jpeg", quality=80)
            family += 1
    return items


def _crop(image: Any, rng: np.random.Generator) -> Any:
    width, height = image.size
    cut_x, cut_y = rng.uniform(0.03, 0.08, size=2)
    left, top = rng.uniform(0, 1, size=2)
    x0, y0 = cut_x * left * width, cut_y * top * height
    x1, y1 = width - cut_x * (1 - left) * width, height - cut_y * (1 - top) * height
    return image.crop((round(x0), round(y0), round(x1), round(y1)))


def _moved(scene: Any, rng: np.random.Generator) -> Any:
    """The scene with one object moved to a free place at least its own size away."""
    objects = list(scene.objects)
    for _ in range(500):
        k = int(rng.integers(len(objects)))
        obj = objects[k]
        margin = obj.half + 2
        cx, cy = rng.uniform(margin, scene.size - margin, size=2)
        if max(abs(cx - obj.cx), abs(cy - obj.cy)) < 2 * obj.half:
            continue
        others = objects[:k] + objects[k + 1 :]
        if all(abs(cx - o.cx) > obj.half + o.half + 4 or abs(cy - o.cy) > obj.half + o.half + 4 for o in others):
            objects[k] = replace(obj, cx=float(cx), cy=float(cy))
            return replace(scene, objects=tuple(objects))
    return _recoloured(scene, rng)


def _recoloured(scene: Any, rng: np.random.Generator) -> Any:
    """The scene with one object in a colour no object of it has."""
    objects = list(scene.objects)
    k = int(rng.integers(len(objects)))
    unused = sorted(set(COLOURS) - {o.colour for o in objects})
    colour = str(rng.choice(unused))
    objects[k] = replace(objects[k], colour=colour, rgb=COLOURS[colour])
    return replace(scene, objects=tuple(objects))


def pair_scores(groups: Sequence[Sequence[int]], families: Sequence[int]) -> dict[str, float]:
    """Pairwise precision and recall of a grouping (lists of row numbers) against true families:
    a predicted pair is right when both rows share a family; every pair within a family should
    be predicted. Also the counts behind them."""
    predicted = {(min(a, b), max(a, b)) for g in groups for i, a in enumerate(g) for b in g[i + 1 :]}
    by_family: dict[int, list[int]] = {}
    for row, f in enumerate(families):
        by_family.setdefault(f, []).append(row)
    true = {(a, b) for rows in by_family.values() for i, a in enumerate(rows) for b in rows[i + 1 :]}
    right = len(predicted & true)
    return {
        "precision": right / len(predicted) if predicted else 1.0,
        "recall": right / len(true) if true else 1.0,
        "predicted_pairs": len(predicted),
        "true_pairs": len(true),
        "right_pairs": right,
    }
