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

The rooms: scenes (the world, and a scene sampled from it), drawing (a scene as pixels and
masks), text (relations and captions), writer (`generate`: a set of scenes written to a folder)
and pairs (`generate_pairs`).
"""

from harmosearch.synth.drawing import SUPERSAMPLE, render
from harmosearch.synth.pairs import (
    PAIR_DRIFT,
    PAIR_JOINERS,
    PAIR_KINDS,
    PAIR_PHRASES,
    PAIR_SEPARATION,
    ScenePair,
    generate_pairs,
    sample_pair,
)
from harmosearch.synth.scenes import (
    BACKGROUND_TONES,
    BACKGROUNDS,
    CATEGORY_IDS,
    COLOURS,
    OBJECT_SETS,
    SHAPES,
    SIZES,
    ObjectSet,
    Scene,
    SceneObject,
    categories,
    object_count,
    sample_scene,
)
from harmosearch.synth.text import INVERSE, NUMBERS, captions, relation
from harmosearch.synth.writer import generate

__all__ = [
    "BACKGROUNDS",
    "BACKGROUND_TONES",
    "CATEGORY_IDS",
    "COLOURS",
    "INVERSE",
    "NUMBERS",
    "OBJECT_SETS",
    "PAIR_DRIFT",
    "PAIR_JOINERS",
    "PAIR_KINDS",
    "PAIR_PHRASES",
    "PAIR_SEPARATION",
    "SHAPES",
    "SIZES",
    "SUPERSAMPLE",
    "ObjectSet",
    "Scene",
    "SceneObject",
    "ScenePair",
    "captions",
    "categories",
    "generate",
    "generate_pairs",
    "object_count",
    "relation",
    "render",
    "sample_pair",
    "sample_scene",
]
