"""Synthetic scenes: the offline world that tests, training, benchmarks and the demo use.

Each image holds non-overlapping objects, each a colour x shape x size, on a textured
background: by default 1-4 objects of 17-36% of the image side, or with `objects` "small"
2-5 objects of 22-48 px in 224 px (the small things region search is for), or "large" 1-3 of
50-95 px. Annotations are COCO style plus `phrase`, `captions` and `relations`. Every scene
is a pure function of (seed, image index), so output is byte-identical across runs.

`generate_pairs` draws twin images for compositional tests instead: two objects whose positions
are exchanged (a relation pair) or whose colours are exchanged between the two shapes (an
attribute pair), everything else equal. Each twin's caption is true for it and false for the
other, and annotations.json lists the twins under `pairs`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from harmosearch.config import SynthConfig
from harmosearch.errors import ConfigError, DataError
from harmosearch.folders import make_folder

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


@dataclass(frozen=True)
class ObjectSet:
    """What objects a scene holds: size names with their side range (a fraction of the image
    side; a drawn shape's box is 88-100% of it), and how many per image (inclusive)."""

    sizes: dict[str, tuple[float, float]]
    count: tuple[int, int]


OBJECT_SETS: dict[str, ObjectSet] = {
    "mixed": ObjectSet(SIZES, (1, 4)),
    "small": ObjectSet({"small": (22 / 224, 48 / 224)}, (2, 5)),
    "large": ObjectSet({"large": (50 / 224, 95 / 224)}, (1, 3)),
}
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


def object_count(config: SynthConfig) -> tuple[int, int]:
    """The fewest and most objects per scene: the config's, else its object set's."""
    default = OBJECT_SETS[config.objects].count
    low = default[0] if config.min_objects is None else config.min_objects
    high = default[1] if config.max_objects is None else config.max_objects
    if low > high:
        raise ConfigError(f"synth: {low} to {high} objects per scene is empty; give --min-objects <= --max-objects")
    return low, high


def sample_scene(seed: int, index: int, config: SynthConfig) -> Scene:
    rng = np.random.default_rng([seed, index])
    size = config.size
    sizes = OBJECT_SETS[config.objects].sizes
    low, high = object_count(config)
    n_objects = int(rng.integers(low, high + 1))
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
            size_name = str(rng.choice(list(sizes)))
            lo, hi = sizes[size_name]
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
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


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


def _scene_record(args: tuple[int, int, SynthConfig, str]) -> list[dict[str, Any]]:
    seed, index, config, images_dir = args
    scene = sample_scene(seed, index, config)
    record = _draw_record(scene, images_dir)
    record["captions"] = captions(scene, np.random.default_rng([seed, index, 1]))
    return [record]


def _draw_record(scene: Scene, images_dir: str) -> dict[str, Any]:
    """Render and save a scene; its image entry, annotations and relations (captions: the caller)."""
    image, masks = render(scene)
    file_name = f"{scene.index:06d}.png"
    image.save(os.path.join(images_dir, file_name), optimize=False)
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
            "id": scene.index,
            "file_name": file_name,
            "width": scene.size,
            "height": scene.size,
            "background": scene.background,
        },
        "annotations": anns,
        "captions": [],
        "relations": relations,
    }


def generate(
    out: Path,
    config: SynthConfig,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write OUT/images/*.png and OUT/annotations.json; returns the annotations."""
    images_dir = _images_dir(out)
    jobs = [(config.seed, i, config, str(images_dir)) for i in range(config.n)]
    records = _run(_scene_record, jobs, workers, progress)
    info: dict[str, Any] = {
        "generator": "harmosearch synth",
        "version": 1,
        "seed": config.seed,
        "n": config.n,
        "size": config.size,
    }
    if config.objects != "mixed":  # named only when not the default, so default sets stay byte-identical
        info["objects"] = config.objects
    data = _annotations(info, records)
    _write(Path(out), data)
    return data


def _images_dir(out: Path) -> Path:
    return make_folder(Path(out) / "images", "the scenes folder")


def _run(
    draw: Callable[[Any], list[dict[str, Any]]],
    jobs: list[Any],
    workers: int,
    progress: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    """The records of draw(job) for every job, in job order; progress gets the images each job wrote."""
    if workers > 1 and len(jobs) >= 64:
        with ProcessPoolExecutor(workers) as pool:
            return _gather(pool.map(draw, jobs, chunksize=32), progress)
    return _gather(map(draw, jobs), progress)


def _gather(results: Iterable[list[dict[str, Any]]], progress: Callable[[int], None] | None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for drawn in results:
        records.extend(drawn)
        if progress:
            progress(len(drawn))
    return records


def _annotations(info: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "info": info,
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
    return data


def _write(out: Path, data: dict[str, Any]) -> None:
    tmp = out / "annotations.json.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / "annotations.json")


PAIR_KINDS: tuple[str, ...] = ("relation", "attribute")
# The words pair captions use for each relation (lexemes.RELATION_PHRASES names them all).
PAIR_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
PAIR_JOINERS: tuple[str, ...] = ("and", "with")
# Free space between the two objects of a pair, as a share of the image side (along the
# relation's axis for relation pairs, whose centres stray at most PAIR_DRIFT across it), so
# the relation is plain to see and never a matter of a few pixels.
PAIR_SEPARATION = 0.08
PAIR_DRIFT = 0.05
_PAIR_STREAMS = {"relation": 1, "attribute": 2}  # one random stream per kind: kinds never shift each other


@dataclass(frozen=True)
class ScenePair:
    kind: str  # "relation" or "attribute"
    scenes: tuple[Scene, Scene]
    captions: tuple[str, str]  # caption i is true for scenes[i] and false for the other
    relation: str | None  # relation pairs: the caption's relation, as lexemes names it


def sample_pair(seed: int, kind: str, index: int, size: int = 224, first_id: int = 0) -> ScenePair:
    """Pair `index` of `kind`: a pure function of (seed, kind, index); its scenes get the image
    ids first_id and first_id + 1."""
    if kind not in _PAIR_STREAMS:
        raise ConfigError(f"unknown pair kind {kind!r}; choose from {', '.join(PAIR_KINDS)}")
    rng = np.random.default_rng([seed, _PAIR_STREAMS[kind], index])
    background = str(rng.choice(list(BACKGROUNDS)))
    t1, t2 = rng.choice(len(BACKGROUND_TONES), size=2, replace=False)
    tones = (BACKGROUND_TONES[int(t1)], BACKGROUND_TONES[int(t2)])
    noise_seed = int(rng.integers(2**31))
    colours = [str(c) for c in rng.choice(list(COLOURS), size=2, replace=False)]
    shapes = [str(c) for c in rng.choice(SHAPES, size=2, replace=False)]
    sizes = [str(c) for c in rng.choice(list(SIZES), size=2)]
    halves = [float(rng.uniform(*SIZES[name])) * size / 2 for name in sizes]
    rgb = {c: _jittered(c, rng) for c in colours}
    named_size = rng.random(2) < 0.4

    def name(i: int, colour: str) -> str:
        return f"{sizes[i]} {colour} {shapes[i]}" if named_size[i] else f"{colour} {shapes[i]}"

    def scene(offset: int, placed: list[tuple[str, tuple[float, float]]]) -> Scene:
        objects = tuple(
            SceneObject(colour, shapes[i], sizes[i], cx, cy, halves[i], rgb[colour])
            for i, (colour, (cx, cy)) in enumerate(placed)
        )
        return Scene(first_id + offset, size, background, tones, noise_seed, objects)

    if kind == "relation":
        relation, centres = _relation_layout(rng, halves, size)
        phrase = str(rng.choice(PAIR_PHRASES[relation]))
        first, second = name(0, colours[0]), name(1, colours[1])
        return ScenePair(
            kind,
            (
                scene(0, list(zip(colours, centres, strict=True))),
                scene(1, list(zip(colours, centres[::-1], strict=True))),
            ),
            (f"{_article(first)} {phrase} {_article(second)}", f"{_article(second)} {phrase} {_article(first)}"),
            relation,
        )
    centres = _separate_centres(rng, halves, size)
    order = [int(i) for i in rng.permutation(2)]
    joiner = str(rng.choice(PAIR_JOINERS))

    def caption(paint: list[str]) -> str:
        return f" {joiner} ".join(_article(name(i, paint[i])) for i in order)

    swapped = colours[::-1]
    return ScenePair(
        kind,
        (scene(0, list(zip(colours, centres, strict=True))), scene(1, list(zip(swapped, centres, strict=True)))),
        (caption(colours), caption(swapped)),
        None,
    )


def _jittered(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    jitter = rng.integers(-12, 13, size=3)
    r, g, b = (int(np.clip(v + j, 0, 255)) for v, j in zip(COLOURS[colour], jitter, strict=True))
    return (r, g, b)


def _relation_layout(rng: np.random.Generator, halves: list[float], size: int) -> tuple[str, list[tuple[float, float]]]:
    """A relation and the centres of the subject and the object for which it holds, apart along
    its axis by at least both half-sides plus PAIR_SEPARATION; either object fits either centre."""
    relation = str(rng.choice(list(PAIR_PHRASES)))
    margin = max(halves) + 2
    need = halves[0] + halves[1] + PAIR_SEPARATION * size
    room = size - 2 * margin
    if need > room:
        raise ConfigError(f"images of {size} px are too small for two clearly separated objects; draw larger ones")
    offset = float(rng.uniform(need, room))
    low = float(rng.uniform(margin, size - margin - offset))
    across = float(rng.uniform(margin, size - margin))
    drift = rng.uniform(-PAIR_DRIFT, PAIR_DRIFT, size=2) * size
    sides = [float(np.clip(across + d, margin, size - margin)) for d in drift]
    along = [low, low + offset] if relation in ("left of", "above") else [low + offset, low]
    if relation in ("left of", "right of"):
        return relation, [(along[0], sides[0]), (along[1], sides[1])]
    return relation, [(sides[0], along[0]), (sides[1], along[1])]


def _separate_centres(rng: np.random.Generator, halves: list[float], size: int) -> list[tuple[float, float]]:
    gap = PAIR_SEPARATION * size
    for _attempt in range(1000):
        centres = [(float(rng.uniform(h + 2, size - h - 2)), float(rng.uniform(h + 2, size - h - 2))) for h in halves]
        (x0, y0), (x1, y1) = centres
        if abs(x0 - x1) > halves[0] + halves[1] + gap or abs(y0 - y1) > halves[0] + halves[1] + gap:
            return centres
    raise ConfigError(f"images of {size} px are too small for two clearly separated objects; draw larger ones")


def _pair_records(args: tuple[int, str, int, int, int, str]) -> list[dict[str, Any]]:
    seed, kind, index, size, first_id, images_dir = args
    pair = sample_pair(seed, kind, index, size, first_id)
    records = []
    for scene, caption in zip(pair.scenes, pair.captions, strict=True):
        record = _draw_record(scene, images_dir)
        record["captions"] = [caption]
        records.append(record)
    records[0]["pair"] = {
        "kind": kind,
        "images": [first_id, first_id + 1],
        "captions": list(pair.captions),
        "relation": pair.relation,
    }
    return records


def generate_pairs(
    out: Path,
    n_pairs: int,
    seed: int,
    kinds: tuple[str, ...] = PAIR_KINDS,
    size: int = 224,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write n_pairs twin pairs of every kind to OUT/images/*.png and OUT/annotations.json (the
    layout of `generate`, plus `pairs`: [{"kind", "images": [id_a, id_b], "captions": [caption_a,
    caption_b], "relation"}]); returns the annotations. Pair i of a kind is the same whatever
    other kinds are drawn. progress gets the number of images written."""
    kinds = tuple(dict.fromkeys(kinds))
    unknown = [k for k in kinds if k not in _PAIR_STREAMS]
    if unknown or not kinds:
        named = ", ".join(map(repr, unknown)) if unknown else "(none)"
        raise ConfigError(f"unknown pair kind {named}; choose from {', '.join(PAIR_KINDS)}")
    if n_pairs < 0:
        raise ConfigError(f"the number of pairs must be at least 0, got {n_pairs}")
    images_dir = _images_dir(out)
    jobs = [
        (seed, kind, i, size, 2 * (k * n_pairs + i), str(images_dir))
        for k, kind in enumerate(kinds)
        for i in range(n_pairs)
    ]
    records = _run(_pair_records, jobs, workers, progress)
    info = {
        "generator": "harmosearch synth pairs",
        "version": 1,
        "seed": seed,
        "n_pairs": n_pairs,
        "kinds": list(kinds),
        "size": size,
    }
    data = _annotations(info, records)
    data["pairs"] = [record["pair"] for record in records if "pair" in record]
    _write(Path(out), data)
    return data
