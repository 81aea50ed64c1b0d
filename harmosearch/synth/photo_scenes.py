"""A photo-world scene as a pure function of (seed, image index): a backdrop cut from a
photograph, objects of the flat world's colour x shape classes (16-120 px in 224 px, stretched
to width/height 0.7-1.4, shaded and grained, allowed to overlap: later ones hide earlier ones),
clutter that no phrase names, and the finish (brightness, blur, noise, JPEG quality)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harmosearch.config import SynthConfig
from harmosearch.synth.photo import Backdrop, sample_backdrop
from harmosearch.synth.scenes import COLOURS, SHAPES, Scene, SceneObject, object_count

# One random stream per purpose beside the flat world's [seed, index] (which the photo world
# never draws from, so flat scenes keep their bytes): the scene, and the world of a mixed set.
PHOTO_STREAM = 2
WORLD_STREAM = 3
WORLDS: tuple[str, ...] = ("flat", "photo", "mixed")
REFERENCE_SIDE = 224  # the sizes below are in pixels of a 224 px image, scaled with the image side
# The longer side of an object's box, per size name; the shorter one is never under 16 px.
PHOTO_SIZES: dict[str, tuple[float, float]] = {"small": (16, 52), "large": (68, 120)}
PHOTO_OBJECT_SIZES: dict[str, tuple[str, ...]] = {"mixed": ("small", "large"), "small": ("small",), "large": ("large",)}
ASPECTS = (0.7, 1.4)  # width / height of an object's box
HIDDEN_BELOW = 0.4  # an object showing less than this share of its pixels is marked hidden


@dataclass(frozen=True)
class PhotoObject(SceneObject):
    """`half` is the half-width of the object's box; `half_y` its half-height."""

    half_y: float
    shade_angle: float  # the direction in which the light gradient brightens, radians
    shade: float  # the gradient's strength: colour x (1 +- shade) from side to side
    grain: float  # std of the fine noise on its pixels


@dataclass(frozen=True)
class Clutter:
    kind: str  # "blob", "polygon" or "line": never a shape of SHAPES
    points: tuple[tuple[float, float], ...]  # output pixels
    rgb: tuple[int, int, int]  # grey or off-white, never an object colour
    width: int  # lines: the stroke, output pixels
    front: bool  # drawn over the objects (thin lines only, so they never hide one)


@dataclass(frozen=True)
class Finish:
    brightness: float
    blur: float  # Gaussian radius, output pixels (0: sharp)
    noise: float  # std of the pixel noise (0: none)
    quality: int  # JPEG quality


@dataclass(frozen=True)
class PhotoScene:
    index: int
    size: int
    backdrop: Backdrop
    objects: tuple[PhotoObject, ...]  # in drawing order
    clutter: tuple[Clutter, ...]
    finish: Finish
    noise_seed: int
    # Captions say "on a photo background": naming the photograph would teach its name, and the
    # test photographs' names would then be words no training caption holds.
    background_word: str = "photo"

    @property
    def background(self) -> str:
        return self.backdrop.photo


def draws_photo(world: str, key: list[int]) -> bool:
    """Whether the scene (or pair) of this stream key is a photo-world one: in a mixed set, one
    in two at random, decided by the key alone."""
    if world == "mixed":
        return bool(np.random.default_rng([*key, WORLD_STREAM]).random() < 0.5)
    return world == "photo"


def sample_photo_scene(seed: int, index: int, config: SynthConfig) -> PhotoScene:
    rng = np.random.default_rng([seed, index, PHOTO_STREAM])
    scale = config.size / REFERENCE_SIDE
    backdrop = sample_backdrop(rng, config.photos)
    low, high = object_count(config)
    n_objects = int(rng.integers(low, high + 1))
    objects: list[PhotoObject] = []
    used: set[tuple[str, str]] = set()
    for _ in range(n_objects):
        for _attempt in range(200):
            obj = _photo_object(rng, PHOTO_OBJECT_SIZES[config.objects], config.size, scale)
            if (obj.colour, obj.shape) not in used and all(_apart(obj, o) for o in objects):
                objects.append(obj)  # one object per class, so a phrase names one object
                used.add((obj.colour, obj.shape))
                break
    clutter = tuple(_clutter(rng, config.size, scale, front_lines=True) for _ in range(int(rng.integers(0, 5))))
    finish = _finish(rng, scale)
    return PhotoScene(index, config.size, backdrop, tuple(objects), clutter, finish, int(rng.integers(2**31)))


def _photo_object(rng: np.random.Generator, sizes: tuple[str, ...], side: int, scale: float) -> PhotoObject:
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    size_name = str(rng.choice(sizes))
    low, high = PHOTO_SIZES[size_name]
    longer = float(rng.uniform(low, high)) * scale
    aspect = math.exp(float(rng.uniform(math.log(ASPECTS[0]), math.log(ASPECTS[1]))))
    shortest = PHOTO_SIZES["small"][0] * scale
    if aspect >= 1:  # the longer side across
        width, height = longer, max(longer / aspect, shortest)
    else:
        width, height = max(longer * aspect, shortest), longer
    cx = float(rng.uniform(width / 2 + 2, side - width / 2 - 2))
    cy = float(rng.uniform(height / 2 + 2, side - height / 2 - 2))
    rgb = _jittered(colour, rng)
    shading = (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.08, 0.2)), float(rng.uniform(3, 9)))
    return PhotoObject(colour, shape, size_name, cx, cy, width / 2, rgb, height / 2, *shading)


def _apart(front: PhotoObject, back: PhotoObject) -> bool:
    """Objects may overlap, but a later object's centre never lies inside an earlier one's box,
    so the two stay apart by at least half the earlier one along some axis (and the relation
    between them is plain). An earlier one whose centre the later one covers is mostly hidden."""
    return abs(front.cx - back.cx) > back.half or abs(front.cy - back.cy) > back.half_y


def _jittered(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    jitter = rng.integers(-12, 13, size=3)
    r, g, b = (int(np.clip(v + j, 0, 255)) for v, j in zip(COLOURS[colour], jitter, strict=True))
    return (r, g, b)


def _clutter(rng: np.random.Generator, side: int, scale: float, front_lines: bool) -> Clutter:
    """An elongated blob, an irregular polygon of 5-8 corners or a thin line, grey or off-white."""
    kind = str(rng.choice(["blob", "polygon", "line"]))
    if rng.random() < 0.35:  # off-white: the colour nearest the white objects
        level = float(rng.uniform(218, 238))
        rgb = (int(level + 4), int(level + 2), int(level - 4))
    else:
        level = float(rng.uniform(70, 190))
        rgb = tuple(int(level + t) for t in rng.integers(-6, 7, size=3))  # type: ignore[assignment]
    cx, cy = (float(v) for v in rng.uniform(0, side, size=2))
    radius = float(rng.uniform(6, 30)) * scale
    if kind == "line":
        steps = rng.uniform(-2 * radius, 2 * radius, size=(int(rng.integers(1, 3)), 2))
        points = [(cx, cy)] + [(cx + float(x), cy + float(y)) for x, y in np.cumsum(steps, axis=0)]
        width = max(1, round(float(rng.uniform(1, 2.5)) * scale))
        return Clutter(kind, tuple(points), rgb, width, front_lines and bool(rng.random() < 0.5))  # type: ignore[arg-type]
    if kind == "blob":
        corners, stretch = 14, float(rng.uniform(1.8, 3.0))
        radii = rng.uniform(0.75, 1.0, size=corners)
        angles = np.linspace(0, 2 * math.pi, corners, endpoint=False)
    else:
        corners, stretch = int(rng.integers(5, 9)), float(rng.uniform(1.0, 1.6))
        radii = rng.uniform(0.35, 1.0, size=corners)
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=corners))
    turn = float(rng.uniform(0, math.pi))
    points = []
    for a, r in zip(angles, radii, strict=True):
        x, y = radius * r * math.cos(a) * stretch, radius * r * math.sin(a)
        points.append((cx + x * math.cos(turn) - y * math.sin(turn), cy + x * math.sin(turn) + y * math.cos(turn)))
    return Clutter(kind, tuple(points), rgb, 0, False)  # type: ignore[arg-type]


def _finish(rng: np.random.Generator, scale: float) -> Finish:
    blurred, noisy = rng.random(2) < 0.5
    return Finish(
        float(rng.uniform(0.8, 1.2)),
        float(rng.uniform(0.3, 1.2)) * scale if blurred else 0.0,
        float(rng.uniform(2, 8)) if noisy else 0.0,
        int(rng.integers(45, 91)),
    )


def photographed(scenes: tuple[Scene, ...], key: list[int], photos: str) -> tuple[PhotoScene, ...]:
    """Flat scenes (twins) moved into the photo world alike: one backdrop, clutter behind the
    objects and finish for all, each object shaded and grained the same in every scene, so the
    scenes still differ only where the flat ones do. The objects keep their sizes, unstretched."""
    rng = np.random.default_rng([*key, PHOTO_STREAM])
    first = scenes[0]
    scale = first.size / REFERENCE_SIDE
    backdrop = sample_backdrop(rng, photos)
    shading = [
        (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.08, 0.2)), float(rng.uniform(3, 9)))
        for _ in first.objects
    ]
    clutter = tuple(_clutter(rng, first.size, scale, front_lines=False) for _ in range(int(rng.integers(0, 4))))
    finish, noise_seed = _finish(rng, scale), int(rng.integers(2**31))
    return tuple(
        PhotoScene(
            scene.index,
            scene.size,
            backdrop,
            tuple(PhotoObject(*_fields(o), o.half, *s) for o, s in zip(scene.objects, shading, strict=True)),
            clutter,
            finish,
            noise_seed,
        )
        for scene in scenes
    )


def _fields(o: SceneObject) -> tuple[str, str, str, float, float, float, tuple[int, int, int]]:
    return (o.colour, o.shape, o.size, o.cx, o.cy, o.half, o.rgb)
