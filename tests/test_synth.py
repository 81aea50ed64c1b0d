import hashlib
import json
from collections import Counter

import numpy as np
from PIL import Image

from harmosearch.config import SynthConfig
from harmosearch.synth import BACKGROUNDS, COLOURS, SHAPES, categories, generate, render, sample_scene


def digest_tree(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path):
    config = SynthConfig(n=50, seed=0)
    generate(tmp_path / "a", config)
    generate(tmp_path / "b", config, workers=2)
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b")
    generate(tmp_path / "c", SynthConfig(n=50, seed=1))
    assert digest_tree(tmp_path / "a") != digest_tree(tmp_path / "c")


def test_annotations_are_valid(scenes):
    data = json.loads((scenes / "annotations.json").read_text())
    cats = {c["id"]: c for c in data["categories"]}
    assert len(cats) == len(COLOURS) * len(SHAPES) >= 48
    images = {im["id"]: im for im in data["images"]}
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= image["width"] and y + h <= image["height"]
        assert cats[ann["category_id"]]["name"] == ann["phrase"]
    per_image = Counter(c["image_id"] for c in data["captions"])
    for image_id in images:
        captions = [c["caption"] for c in data["captions"] if c["image_id"] == image_id]
        assert per_image[image_id] >= 5 and len(set(captions)) == len(captions)


def test_every_phrase_box_contains_its_object_and_colour():
    config = SynthConfig(n=40, seed=3)
    for index in range(config.n):
        scene = sample_scene(config.seed, index, config)
        image, masks = render(scene)
        pixels = np.asarray(image).astype(int)
        assert 1 <= len(scene.objects) <= 4
        for obj, mask in zip(scene.objects, masks, strict=True):
            _, xs = np.nonzero(mask)
            assert len(xs) > 30
            # The object's own colour dominates the inside of its mask.
            inside = pixels[mask]
            assert np.median(np.abs(inside - np.array(COLOURS[obj.colour])).sum(1)) < 60
            # and the mask lies inside the square the object was placed in.
            assert xs.min() >= obj.cx - obj.half - 1 and xs.max() <= obj.cx + obj.half + 1


def test_scenes_cover_the_vocabulary_and_swap_attributes(tmp_path):
    data = generate(tmp_path, SynthConfig(n=300, seed=11), workers=2)
    phrases = Counter(a["phrase"] for a in data["annotations"])
    assert {a["colour"] for a in data["annotations"]} == set(COLOURS)
    assert {a["shape"] for a in data["annotations"]} == set(SHAPES)
    assert {a["size"] for a in data["annotations"]} == {"small", "large"}
    assert {im["background"] for im in data["images"]} == set(BACKGROUNDS)
    assert len(phrases) >= 45  # nearly every colour-shape combination appears
    relations = {r["relation"] for r in data["relations"]}
    assert relations == {"to the left of", "to the right of", "above", "below"}
    captions = " ".join(c["caption"] for c in data["captions"])
    assert "next to" in captions and "background" in captions
    # Swapped combinations: red circle + blue square in one image, blue circle + red square in another.
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], set()).add((a["colour"], a["shape"]))
    swaps = 0
    for objs in by_image.values():
        for c1, s1 in objs:
            for c2, s2 in objs:
                if c1 != c2 and s1 != s2 and any({(c1, s2), (c2, s1)} <= o for o in by_image.values()):
                    swaps += 1
    assert swaps > 0


def test_images_are_rgb_png_of_the_configured_size(tmp_path):
    generate(tmp_path, SynthConfig(n=2, seed=0, size=128))
    image = Image.open(tmp_path / "images" / "000000.png")
    assert image.size == (128, 128) and image.mode == "RGB"
    assert len(categories()) == 48
