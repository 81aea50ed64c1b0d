"""Synthetic scenes: the offline world that tests, training, benchmarks and the demo use.

Each image holds 1-4 non-overlapping objects, each a colour x shape x size, on a textured
background. Annotations are COCO style plus `phrase`, `captions` and `relations`. Every scene
is a pure function of (seed, image index), so output is byte-identical across runs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from harmosearch.config import SynthConfig
from harmosearch.errors import DataError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 35),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
    "white": (250, 250, 250),
    "black": (12, 12, 12),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
SIZES: dict[str, tuple[float, float]] = {"small": (0.17, 0.22), "large": (0.29, 0.36)}
# Muted mid-tones, so every object colour (white and black included) stands out.
BACKGROUND_TONES: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),
    (165, 150, 120),
    (95, 112, 130),
    (118, 138, 108),
    (148, 120, 138),
    (98, 132, 140),
)
BACKGROUNDS: dict[str, str] = {  # kind -> the adjective captions use
    "solid": "plain",
    "gradient": "gradient",
    "noise": "noisy",
    "stripes": "striped",
    "checker": "checkered",
    "dots": "dotted",
}
SUPERSAMPLE = 2


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    cx: float  # centre and half-side, in output pixels
    cy: float
    half: float
    rgb: tuple[int, int, int]

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    index: int
    size: int
    background: str
    tones: tuple[tuple[int, int, int], tuple[int, int, int]]
    noise_seed: int
    objects: tuple[SceneObject, ...]


def categories() -> list[dict[str, Any]]:
    """All colour-shape classes; ids are stable and start at 1, as in COCO."""
    cats = []
    for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        cats.append({"id": i + 1, "name": f"{colour} {shape}", "colour": colour, "shape": shape})
    return cats


CATEGORY_IDS = {c["name"]: c["id"] for c in categories()}


def sample_scene(seed: int, index: int, config: SynthConfig) -> Scene:
    rng = np.random.default_rng([seed, index])
    size = config.size
    n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    background = str(rng.choice(list(BACKGROUNDS)))
    t1, t2 = rng.choice(len(BACKGROUND_TONES), size=2, replace=False)
    tones = (BACKGROUND_TONES[int(t1)], BACKGROUND_TONES[int(t2)])
    objects: list[SceneObject] = []
    used: set[tuple[str, str]] = set()
    for _ in range(n_objects):
        for _attempt in range(200):
            colour = str(rng.choice(list(COLOURS)))
            shape = str(rng.choice(SHAPES))
            if (colour, shape) in used:  # one object per class, so a phrase names one object
                continue
            size_name = str(rng.choice(list(SIZES)))
            lo, hi = SIZES[size_name]
            half = float(rng.uniform(lo, hi)) * size / 2
            margin = half + 2
            cx = float(rng.uniform(margin, size - margin))
            cy = float(rng.uniform(margin, size - margin))
            gap = 4.0
            if all(abs(cx - o.cx) > half + o.half + gap or abs(cy - o.cy) > half + o.half + gap for o in objects):
                jitter = rng.integers(-12, 13, size=3)
                rgb = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(COLOURS[colour], jitter, strict=True))
                objects.append(SceneObject(colour, shape, size_name, cx, cy, half, rgb))  # type: ignore[arg-type]
                used.add((colour, shape))
                break
    return Scene(index, size, background, tones, int(rng.integers(2**31)), tuple(objects))


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        s = r * 0.88
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=255)
    elif shape == "star":
        draw.polygon(_star(cx, cy + r * 0.08, r), fill=255)
    elif shape == "cross":
        t = r * 0.34
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=255)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=255)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        inner = r * 0.55
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    else:
        raise DataError(f"unknown shape {shape!r}")


def _background(scene: Scene, side: int) -> np.ndarray:
    a = np.array(scene.tones[0], dtype=np.float32)
    b = np.array(scene.tones[1], dtype=np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rng = np.random.default_rng(scene.noise_seed)
    kind = scene.background
    if kind == "solid":
        weight = np.zeros_like(xx)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        weight = xx * math.cos(angle) + yy * math.sin(angle)
        weight = (weight - weight.min()) / max(float(np.ptp(weight)), 1e-6)
    elif kind == "noise":
        coarse = rng.random((side // 16 + 1, side // 16 + 1)).astype(np.float32)
        weight = (
            np.asarray(
                Image.fromarray((coarse * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR),
                dtype=np.float32,
            )
            / 255
        )
        weight = weight * 0.8 + rng.random((side, side)).astype(np.float32) * 0.2
    elif kind == "stripes":
        period = rng.uniform(0.06, 0.14)
        angle = rng.choice([0.0, math.pi / 2, math.pi / 4, -math.pi / 4])
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        weight = (np.floor(phase) % 2).astype(np.float32)
    elif kind == "checker":
        period = rng.uniform(0.08, 0.16)
        weight = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    elif kind == "dots":
        period = rng.uniform(0.07, 0.12)
        fx = (xx / period) % 1 - 0.5
        fy = (yy / period) % 1 - 0.5
        weight = ((fx**2 + fy**2) < 0.09).astype(np.float32)
    else:
        raise DataError(f"unknown background {kind!r}")
    pixels = a * (1 - weight[..., None]) + b * weight[..., None]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def render(scene: Scene) -> tuple[Image.Image, list[np.ndarray]]:
    """The RGB image and, per object, a boolean mask of its pixels (output resolution)."""
    side = scene.size * SUPERSAMPLE
    canvas = Image.fromarray(_background(scene, side))
    masks = []
    for obj in scene.objects:
        mask = Image.new("L", (side, side), 0)
        _draw_shape(ImageDraw.Draw(mask), obj.shape, obj.cx * SUPERSAMPLE, obj.cy * SUPERSAMPLE, obj.half * SUPERSAMPLE)
        canvas.paste(Image.new("RGB", (side, side), obj.rgb), (0, 0), mask)
        small = mask.resize((scene.size, scene.size), Image.BOX)
        masks.append(np.asarray(small) > 0)
    image = canvas.resize((scene.size, scene.size), Image.LANCZOS)
    return image, masks


def relation(a: SceneObject, b: SceneObject) -> str:
    """Where a stands relative to b, in the image's own frame."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


INVERSE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _listing(names: list[str]) -> str:
    named = [_article(n) for n in names]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def _position(obj: SceneObject, size: int) -> str:
    row = "top" if obj.cy < size / 3 else "bottom" if obj.cy > 2 * size / 3 else "middle"
    col = "left" if obj.cx < size / 3 else "right" if obj.cx > 2 * size / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}".replace("middle ", "")


def captions(scene: Scene, rng: np.random.Generator, count: int = 5) -> list[str]:
    """`count` different captions; relations and sizes make attribute binding matter."""
    objs = list(scene.objects)
    bg = BACKGROUNDS[scene.background]

    def name(o: SceneObject) -> str:
        return f"{o.size} {o.phrase}" if rng.random() < 0.4 else o.phrase

    candidates: list[str] = []
    if len(objs) == 1:
        o = objs[0]
        candidates += [
            _article(o.phrase),
            f"{_article(o.size + ' ' + o.phrase)} on {_article(bg)} background",
            f"a photo of {_article(o.phrase)}",
            f"{_article(o.phrase)} in the {_position(o, scene.size)} of the picture",
            f"one {o.size} {o.phrase} on {_article(bg)} background",
            f"{_article(bg)} background with {_article(o.phrase)}",
            f"a single {o.phrase}",
        ]
    else:
        order = [int(i) for i in rng.permutation(len(objs))]
        pairs = [(objs[order[i]], objs[order[(i + 1) % len(objs)]]) for i in range(len(objs))]
        a, b = pairs[0]
        rel = relation(a, b)
        candidates += [
            f"{_article(name(a))} {rel} {_article(name(b))} on {_article(bg)} background",
            f"{_article(name(b))} {INVERSE[rel]} {_article(name(a))}",
            _listing([name(objs[i]) for i in order]),
            f"{NUMBERS[len(objs)]} shapes: {_listing([o.phrase for o in objs])}",
            f"{_article(name(a))} next to {_article(name(b))}",
            f"a photo of {_listing([o.phrase for o in objs])} on {_article(bg)} background",
        ]
        for x, y in pairs[1:]:
            candidates.append(f"{_article(name(x))} {relation(x, y)} {_article(name(y))}")
        candidates.append(f"{_article(bg)} background with {_listing([o.phrase for o in objs])}")
    unique = list(dict.fromkeys(candidates))
    return unique[:count]


def _scene_record(args: tuple[int, int, SynthConfig, str]) -> dict[str, Any]:
    seed, index, config, images_dir = args
    scene = sample_scene(seed, index, config)
    image, masks = render(scene)
    file_name = f"{index:06d}.png"
    image.save(os.path.join(images_dir, file_name), optimize=False)
    rng = np.random.default_rng([seed, index, 1])
    anns = []
    for k, (obj, mask) in enumerate(zip(scene.objects, masks, strict=True)):
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        anns.append(
            {
                "local": k,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": int(mask.sum()),
                "category_id": CATEGORY_IDS[obj.phrase],
                "phrase": obj.phrase,
                "colour": obj.colour,
                "shape": obj.shape,
                "size": obj.size,
                "iscrowd": 0,
            }
        )
    relations = [
        {"subject": i, "relation": relation(a, b), "object": j}
        for i, a in enumerate(scene.objects)
        for j, b in enumerate(scene.objects)
        if i < j
    ]
    return {
        "image": {
            "id": index,
            "file_name": file_name,
            "width": scene.size,
            "height": scene.size,
            "background": scene.background,
        },
        "annotations": anns,
        "captions": captions(scene, rng),
        "relations": relations,
    }


def generate(
    out: Path,
    config: SynthConfig,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write OUT/images/*.png and OUT/annotations.json; returns the annotations."""
    out = Path(out)
    images_dir = out / "images"
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {images_dir}: {exc.strerror}") from None
    jobs = [(config.seed, i, config, str(images_dir)) for i in range(config.n)]
    records: list[dict[str, Any]] = []
    if workers > 1 and config.n >= 64:
        with ProcessPoolExecutor(workers) as pool:
            for record in pool.map(_scene_record, jobs, chunksize=32):
                records.append(record)
                if progress:
                    progress(1)
    else:
        for job in jobs:
            records.append(_scene_record(job))
            if progress:
                progress(1)

    data: dict[str, Any] = {
        "info": {
            "generator": "harmosearch synth",
            "version": 1,
            "seed": config.seed,
            "n": config.n,
            "size": config.size,
        },
        "images": [],
        "annotations": [],
        "categories": categories(),
        "captions": [],
        "relations": [],
    }
    for record in records:
        image_id = record["image"]["id"]
        data["images"].append(record["image"])
        first_id = len(data["annotations"])
        for ann in record["annotations"]:
            local = ann.pop("local")
            data["annotations"].append({"id": first_id + local, "image_id": image_id, **ann})
        for caption in record["captions"]:
            data["captions"].append({"id": len(data["captions"]), "image_id": image_id, "caption": caption})
        for rel in record["relations"]:
            data["relations"].append(
                {
                    "image_id": image_id,
                    "subject": first_id + rel["subject"],
                    "relation": rel["relation"],
                    "object": first_id + rel["object"],
                }
            )
    tmp = out / "annotations.json.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / "annotations.json")
    return data
