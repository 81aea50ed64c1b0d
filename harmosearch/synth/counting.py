"""Scenes for counting and negation, in the flat world of coloured shapes.

Counting scenes hold 1 to MAX_COUNT copies of one colour-shape (one of COUNTED, a colour and a
shape each of its own, so that every (thing, count) has scenes enough for a top 5) and up to
MAX_DISTRACTORS objects of other classes, every object INSTANCE_SIDE px on its side (20-60 px in
a 224-px image: a few patches of the bundled model). Scene i counts COUNTED[i % 6], (i // 6) % 6
+ 1 times, so every pair of thing and count is equally common.

Negation pairs are two scenes that differ only by one object, the negated thing: the first holds
a kept object, the negated one and up to MAX_DISTRACTORS others; the second is the first without
the negated object. The pair's query ("a red circle without a blue square", in one of
NEGATION_FORMS) is true for the second only. Both are pure functions of (seed, index).

In the photo world (`world` "photo", or one scene in two for "mixed") the same scenes lie on a
cut of a `photos` photograph with clutter behind the objects and the photo world's finish
(synth.photo_scenes.photographed); both scenes of a negation pair share one cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import ConfigError
from harmosearch.synth.photo import photo_names
from harmosearch.synth.photo_scenes import WORLDS, draws_photo, photographed
from harmosearch.synth.scenes import BACKGROUND_TONES, BACKGROUNDS, COLOURS, SHAPES, Scene, SceneObject
from harmosearch.synth.text import article
from harmosearch.synth.writer import (
    collect_annotations,
    draw_all,
    draw_photo_record,
    draw_record,
    images_folder,
    write_annotations,
)

COUNTED: tuple[str, ...] = ("red circle", "blue square", "green triangle", "yellow star", "white cross", "purple ring")
MAX_COUNT = 6
MAX_DISTRACTORS = 2
INSTANCE_SIDE = (20.0, 60.0)  # px of a 224-px image, scaled with the image
NEGATION_FORMS: tuple[str, ...] = (
    "{kept} without {negated}",
    "{kept} with no {bare}",
    "{kept} but no {bare}",
    "{kept} and no {bare}",
    "no {bare}, only {kept}",
)
_GAP = 4.0  # free pixels between objects
_STREAMS = {"counting": 3, "negation": 4}  # random streams of their own (pairs.py uses 1 and 2)
_CLASSES = [f"{c} {s}" for c in COLOURS for s in SHAPES]


def plural(phrase: str) -> str:
    """ "red circle" -> "red circles" (the shapes' names all take an -s, "cross" an -es)."""
    return phrase + ("es" if phrase.endswith(("s", "x", "ch", "sh")) else "s")


def count_query(phrase: str, n: int) -> str:
    """The query asking for n copies: "one red circle", "two red circles"."""
    words = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return f"{words[n - 1]} {phrase if n == 1 else plural(phrase)}"


def counting_scene(seed: int, index: int, size: int = 224) -> tuple[Scene, str, int]:
    """Counting scene `index`: the scene, the thing it counts and how many copies it holds."""
    rng = np.random.default_rng([seed, _STREAMS["counting"], index])
    thing, count = COUNTED[index % len(COUNTED)], (index // len(COUNTED)) % MAX_COUNT + 1
    others = [c for c in _CLASSES if c != thing]
    distractors = [str(c) for c in rng.choice(others, size=int(rng.integers(0, MAX_DISTRACTORS + 1)), replace=False)]
    objects = _placed(rng, [thing] * count, distractors, size)
    return _scene(rng, index, size, objects), thing, count


def negation_pair(seed: int, index: int, size: int = 224, first_id: int = 0) -> tuple[Scene, Scene, str, str, str]:
    """Negation pair `index`: (the scene with the negated thing, the scene without it, the
    query, the kept thing, the negated thing); the scenes get ids first_id and first_id + 1."""
    rng = np.random.default_rng([seed, _STREAMS["negation"], index])
    kept, negated = (str(c) for c in rng.choice(_CLASSES, size=2, replace=False))
    others = [c for c in _CLASSES if c not in (kept, negated)]
    distractors = [str(c) for c in rng.choice(others, size=int(rng.integers(0, MAX_DISTRACTORS + 1)), replace=False)]
    objects = _placed(rng, [kept, negated], distractors, size)
    with_it = _scene(rng, first_id, size, objects)
    without = Scene(
        first_id + 1, size, with_it.background, with_it.tones, with_it.noise_seed, objects[:1] + objects[2:]
    )
    form = NEGATION_FORMS[index % len(NEGATION_FORMS)]
    query = form.format(kept=article(kept), negated=article(negated), bare=negated)
    return with_it, without, query, kept, negated


def _placed(rng: np.random.Generator, needed: list[str], extra: list[str], size: int) -> tuple[SceneObject, ...]:
    """Objects of the `needed` classes, all placed (an object that does not fit shrinks towards
    the smallest side), then of the `extra` ones where they fit; none overlaps another."""
    low, high = (side * size / 224 for side in INSTANCE_SIDE)
    objects: list[SceneObject] = []
    for n, name in enumerate(needed + extra):
        colour, shape = name.split()
        side = float(rng.uniform(low, high))
        placed = None
        while placed is None:
            placed = _free_spot(rng, side / 2, objects, size)
            if placed is None and (n >= len(needed) or side <= low):
                break
            side = max(low, side * 0.85)
        if placed is None:
            if n < len(needed):
                raise ConfigError(f"images of {size} px cannot hold {len(needed)} objects of {low:.0f} px")
            continue
        jitter = rng.integers(-12, 13, size=3)
        rgb = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(COLOURS[colour], jitter, strict=True))
        size_name = "small" if side < (low + high) / 2 else "large"
        objects.append(SceneObject(colour, shape, size_name, placed[0], placed[1], side / 2, rgb))  # type: ignore[arg-type]
    return tuple(objects)


def _free_spot(
    rng: np.random.Generator, half: float, objects: list[SceneObject], size: int
) -> tuple[float, float] | None:
    margin = half + 2
    for _attempt in range(200):
        cx, cy = (float(v) for v in rng.uniform(margin, size - margin, size=2))
        if all(abs(cx - o.cx) > half + o.half + _GAP or abs(cy - o.cy) > half + o.half + _GAP for o in objects):
            return cx, cy
    return None


def _scene(rng: np.random.Generator, index: int, size: int, objects: tuple[SceneObject, ...]) -> Scene:
    background = str(rng.choice(list(BACKGROUNDS)))
    t1, t2 = rng.choice(len(BACKGROUND_TONES), size=2, replace=False)
    tones = (BACKGROUND_TONES[int(t1)], BACKGROUND_TONES[int(t2)])
    return Scene(index, size, background, tones, int(rng.integers(2**31)), objects)


def _drawn(scenes: tuple[Scene, ...], key: list[int], images_dir: str, where: tuple[str, str]) -> list[dict[str, Any]]:
    """The records of scenes drawn flat, or moved into the photo world alike: one backdrop,
    clutter and finish, each object of the first scene shaded the same wherever it appears (the
    later scenes hold some of the first one's objects)."""
    world, photos = where
    if not draws_photo(world, key):
        return [draw_record(scene, images_dir) for scene in scenes]
    first = scenes[0]
    (photo,) = photographed((first,), key, photos)
    moved = [
        replace(
            photo,
            index=scene.index,
            objects=tuple(p for p, o in zip(photo.objects, first.objects, strict=True) if o in scene.objects),
        )
        for scene in scenes
    ]
    return [draw_photo_record(scene, images_dir)[0] for scene in moved]


def _counting_record(args: tuple[int, int, int, str, str, str]) -> list[dict[str, Any]]:
    seed, index, size, images_dir, world, photos = args
    scene, thing, count = counting_scene(seed, index, size)
    records = _drawn((scene,), [seed, _STREAMS["counting"], index], images_dir, (world, photos))
    records[0]["count"] = {"image_id": index, "phrase": thing, "count": count}
    return records


def _negation_records(args: tuple[int, int, int, str, str, str]) -> list[dict[str, Any]]:
    seed, index, size, images_dir, world, photos = args
    with_it, without, query, kept, negated = negation_pair(seed, index, size, 2 * index)
    records = _drawn((with_it, without), [seed, _STREAMS["negation"], index], images_dir, (world, photos))
    records[0]["negation"] = {"images": [2 * index, 2 * index + 1], "query": query, "kept": kept, "negated": negated}
    return records


def generate_counting(
    out: Path,
    n: int,
    seed: int,
    size: int = 224,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    world: str = "flat",
    photos: str = "train",
) -> dict[str, Any]:
    """Write n counting scenes to OUT/images/*.png (photo world: *.jpg) and OUT/annotations.json
    (the layout of `generate`, plus `counts`: [{"image_id", "phrase", "count"}]); returns the
    annotations."""
    return _write(out, "counting", n, seed, size, _counting_record, "count", workers, progress, (world, photos))


def generate_negation_pairs(
    out: Path,
    n_pairs: int,
    seed: int,
    size: int = 224,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    world: str = "flat",
    photos: str = "train",
) -> dict[str, Any]:
    """Write n_pairs negation pairs (two images each) like `generate_counting`, plus `negations`:
    [{"images": [with_id, without_id], "query", "kept", "negated"}]."""
    args = (world, photos)
    return _write(out, "negation", n_pairs, seed, size, _negation_records, "negation", workers, progress, args)


def _write(
    out: Path,
    kind: str,
    n: int,
    seed: int,
    size: int,
    draw: Callable[[Any], list[dict[str, Any]]],
    key: str,
    workers: int,
    progress: Callable[[int], None] | None,
    where: tuple[str, str],
) -> dict[str, Any]:
    if n < 0:
        raise ConfigError(f"the number of {kind} scenes must be at least 0, got {n}")
    world, photos = where
    if world not in WORLDS:
        raise ConfigError(f"unknown world {world!r}; choose from {', '.join(WORLDS)}")
    photo_names(photos)
    images_dir = images_folder(out)
    records = draw_all(draw, [(seed, i, size, str(images_dir), world, photos) for i in range(n)], workers, progress)
    info: dict[str, Any] = {"generator": f"harmosearch synth {kind}", "version": 1, "seed": seed, "n": n, "size": size}
    if world != "flat":  # named only when not the default, so flat sets stay byte-identical
        info.update(world=world, photos=photos)
    data = collect_annotations(info, records)
    data["counts" if kind == "counting" else "negations"] = [r[key] for r in records if key in r]
    write_annotations(Path(out), data)
    return data
