"""Twin pairs for compositional tests: two objects whose positions are exchanged (a relation
pair) or whose colours are exchanged between the two shapes (an attribute pair)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import ConfigError
from harmosearch.synth.photo import photo_names
from harmosearch.synth.photo_scenes import WORLDS, draws_photo, photographed
from harmosearch.synth.scenes import BACKGROUND_TONES, BACKGROUNDS, COLOURS, SHAPES, SIZES, Scene, SceneObject
from harmosearch.synth.text import article
from harmosearch.synth.writer import (
    collect_annotations,
    draw_all,
    draw_photo_record,
    draw_record,
    images_folder,
    write_annotations,
)

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
            (f"{article(first)} {phrase} {article(second)}", f"{article(second)} {phrase} {article(first)}"),
            relation,
        )
    centres = _separate_centres(rng, halves, size)
    order = [int(i) for i in rng.permutation(2)]
    joiner = str(rng.choice(PAIR_JOINERS))

    def caption(paint: list[str]) -> str:
        return f" {joiner} ".join(article(name(i, paint[i])) for i in order)

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


def _pair_records(args: tuple[int, str, int, int, int, str, str, str]) -> list[dict[str, Any]]:
    seed, kind, index, size, first_id, images_dir, world, photos = args
    pair = sample_pair(seed, kind, index, size, first_id)
    key = [seed, _PAIR_STREAMS[kind], index]
    if draws_photo(world, key):
        records = [draw_photo_record(scene, images_dir)[0] for scene in photographed(pair.scenes, key, photos)]
    else:
        records = [draw_record(scene, images_dir) for scene in pair.scenes]
    for record, caption in zip(records, pair.captions, strict=True):
        record["captions"] = [caption]
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
    world: str = "flat",
    photos: str = "train",
) -> dict[str, Any]:
    """Write n_pairs twin pairs of every kind to OUT/images/*.png and OUT/annotations.json (the
    layout of `generate`, plus `pairs`: [{"kind", "images": [id_a, id_b], "captions": [caption_a,
    caption_b], "relation"}]); returns the annotations. Pair i of a kind is the same whatever
    other kinds are drawn. progress gets the number of images written. In the photo world (or
    for half the pairs, in the mixed one) both twins lie on one cut of a `photos` photograph
    with the same clutter and finish, as JPEG."""
    kinds = tuple(dict.fromkeys(kinds))
    unknown = [k for k in kinds if k not in _PAIR_STREAMS]
    if unknown or not kinds:
        named = ", ".join(map(repr, unknown)) if unknown else "(none)"
        raise ConfigError(f"unknown pair kind {named}; choose from {', '.join(PAIR_KINDS)}")
    if n_pairs < 0:
        raise ConfigError(f"the number of pairs must be at least 0, got {n_pairs}")
    if world not in WORLDS:
        raise ConfigError(f"unknown world {world!r}; choose from {', '.join(WORLDS)}")
    photo_names(photos)
    images_dir = images_folder(out)
    jobs = [
        (seed, kind, i, size, 2 * (k * n_pairs + i), str(images_dir), world, photos)
        for k, kind in enumerate(kinds)
        for i in range(n_pairs)
    ]
    records = draw_all(_pair_records, jobs, workers, progress)
    info = {
        "generator": "harmosearch synth pairs",
        "version": 1,
        "seed": seed,
        "n_pairs": n_pairs,
        "kinds": list(kinds),
        "size": size,
    }
    if world != "flat":
        info.update(world=world, photos=photos)
    data = collect_annotations(info, records)
    data["pairs"] = [record["pair"] for record in records if "pair" in record]
    write_annotations(Path(out), data)
    return data
