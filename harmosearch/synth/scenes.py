"""The world of the synthetic scenes: colours, shapes, sizes and backgrounds, and a scene
sampled from them as a pure function of (seed, image index)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harmosearch.config import SynthConfig
from harmosearch.errors import ConfigError

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

    @property
    def background_word(self) -> str:
        """The adjective captions use for the background."""
        return BACKGROUNDS[self.background]


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
