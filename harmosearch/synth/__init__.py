"""Synthetic scenes: the offline world that tests, training, benchmarks and the demo use.

Each image holds non-overlapping objects, each a colour x shape x size, on a textured
background: by default 1-4 objects of 17-36% of the image side, or with `objects` "small"
2-5 objects of 22-48 px in 224 px (the small things region search is for), or "large" 1-3 of
50-95 px. Annotations are COCO style plus `phrase`, `captions` and `relations`. Every scene
is a pure function of (seed, image index), so output is byte-identical across runs.

That is the flat world. The photo world (`world` "photo", or "mixed": either, one scene in two
at random) puts the same colour x shape classes on cuts of the photographs that ship inside
scikit-image, split by photograph (PHOTO_SPLITS: test scenes use photographs no train or val
scene uses): 16-120 px objects in 224 px, stretched to width/height 0.7-1.4, shaded and grained,
overlapping (later ones hide earlier ones), among grey and off-white clutter, under brightness,
blur, noise and JPEG (quality 45-90; the images are .jpg). Boxes and areas are of the visible
part; an object showing under 40% of itself is annotated `"hidden": true`, and captions,
relations, the bench and training leave it out.

`generate_pairs` draws twin images for compositional tests instead: two objects whose positions
are exchanged (a relation pair) or whose colours are exchanged between the two shapes (an
attribute pair), everything else equal. Each twin's caption is true for it and false for the
other, and annotations.json lists the twins under `pairs`. Twins too can be in the photo world.

The rooms: scenes (the world, and a scene sampled from it), drawing (a scene as pixels and
masks), text (relations and captions), writer (`generate`: a set of scenes written to a folder)
and pairs (`generate_pairs`); for the photo world, photo (the photographs, their split and the
backdrops cut from them), photo_scenes (a photo-world scene sampled) and photo_drawing (drawn).
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
from harmosearch.synth.photo import PHOTO_SPLITS, photograph
from harmosearch.synth.photo_drawing import render_photo
from harmosearch.synth.photo_scenes import (
    HIDDEN_BELOW,
    PHOTO_SIZES,
    WORLDS,
    PhotoObject,
    PhotoScene,
    sample_photo_scene,
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
    "HIDDEN_BELOW",
    "INVERSE",
    "NUMBERS",
    "OBJECT_SETS",
    "PAIR_DRIFT",
    "PAIR_JOINERS",
    "PAIR_KINDS",
    "PAIR_PHRASES",
    "PAIR_SEPARATION",
    "PHOTO_SIZES",
    "PHOTO_SPLITS",
    "SHAPES",
    "SIZES",
    "SUPERSAMPLE",
    "WORLDS",
    "ObjectSet",
    "PhotoObject",
    "PhotoScene",
    "Scene",
    "SceneObject",
    "ScenePair",
    "captions",
    "categories",
    "generate",
    "generate_pairs",
    "object_count",
    "photograph",
    "relation",
    "render",
    "render_photo",
    "sample_pair",
    "sample_photo_scene",
    "sample_scene",
]
