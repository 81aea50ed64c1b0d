import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from harmosearch.config import SynthConfig
from harmosearch.errors import ConfigError
from harmosearch.synth import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    categories,
    generate,
    generate_pairs,
    render,
    sample_scene,
)


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


# ---------- compositional pairs ----------


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """12 pairs of each kind, shared by the tests that only read them."""
    out = tmp_path_factory.mktemp("pairs")
    return out, generate_pairs(out, 12, seed=4)


def boxes_by_image(data):
    boxes = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["image_id"], {})[(a["colour"], a["shape"])] = np.array([x, y, x + w, y + h], float)
    return boxes


def test_pairs_are_byte_identical_on_rerun_and_with_workers(tmp_path):
    generate_pairs(tmp_path / "a", 32, seed=9, size=96)
    generate_pairs(tmp_path / "b", 32, seed=9, size=96, workers=2)  # 64 pairs: drawn in parallel
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b")
    generate_pairs(tmp_path / "c", 2, seed=10)
    assert digest_tree(tmp_path / "a") != digest_tree(tmp_path / "c")


def test_a_kinds_pairs_do_not_depend_on_the_other_kinds(tmp_path):
    both = generate_pairs(tmp_path / "both", 3, seed=2, size=96)
    alone = generate_pairs(tmp_path / "alone", 3, seed=2, kinds=("attribute",), size=96)
    attribute = [p for p in both["pairs"] if p["kind"] == "attribute"]
    assert [p["captions"] for p in attribute] == [p["captions"] for p in alone["pairs"]]
    for p, q in zip(attribute, alone["pairs"], strict=True):
        for i, j in zip(p["images"], q["images"], strict=True):
            image_a = (tmp_path / "both" / "images" / f"{i:06d}.png").read_bytes()
            assert image_a == (tmp_path / "alone" / "images" / f"{j:06d}.png").read_bytes()


def test_pair_annotations_list_every_twin_with_its_caption(pairs):
    out, data = pairs
    assert data["info"]["kinds"] == ["relation", "attribute"] and data["info"]["n_pairs"] == 12
    assert len(data["images"]) == 48 and len(data["pairs"]) == 24
    assert json.loads((out / "annotations.json").read_text()) == data
    captions = {c["image_id"]: c["caption"] for c in data["captions"]}
    assert len(captions) == len(data["captions"]) == 48
    seen = []
    for pair in data["pairs"]:
        a, b = pair["images"]
        seen += [a, b]
        assert [captions[a], captions[b]] == pair["captions"] and pair["captions"][0] != pair["captions"][1]
        assert (pair["relation"] is None) == (pair["kind"] == "attribute")
        for image_id in (a, b):
            assert (out / "images" / f"{image_id:06d}.png").is_file()
            assert len([x for x in data["annotations"] if x["image_id"] == image_id]) == 2
    assert sorted(seen) == list(range(48))


def test_relation_twins_exchange_positions_and_nothing_else():
    from harmosearch.synth import sample_pair

    for index in range(40):
        pair = sample_pair(6, "relation", index, first_id=2 * index)
        a, b = pair.scenes
        assert (a.index, b.index) == (2 * index, 2 * index + 1)
        assert (a.background, a.tones, a.noise_seed) == (b.background, b.tones, b.noise_seed)
        (a0, a1), (b0, b1) = a.objects, b.objects
        for x, y in ((a0, b0), (a1, b1)):
            assert (x.colour, x.shape, x.size, x.half, x.rgb) == (y.colour, y.shape, y.size, y.half, y.rgb)
        assert ((a0.cx, a0.cy), (a1.cx, a1.cy)) == ((b1.cx, b1.cy), (b0.cx, b0.cy))
        assert a0.colour != a1.colour and a0.shape != a1.shape


def test_relation_captions_hold_for_their_image_and_fail_for_the_twin(pairs):
    from harmosearch.model.lexemes import parse
    from harmosearch.search.relations import relation_scores

    _, data = pairs
    boxes = boxes_by_image(data)
    relations = Counter()
    for pair in (p for p in data["pairs"] if p["kind"] == "relation"):
        relations[pair["relation"]] += 1
        for own, twin, caption in zip(pair["images"], pair["images"][::-1], pair["captions"], strict=True):
            parsed = parse(caption)
            (found,) = parsed.relations
            assert found.relation == pair["relation"] and not found.negated
            subject, obj = (tuple(parsed.lexemes[i].text.split()[-2:]) for i in (found.subject, found.object))
            assert relation_scores(found.relation, boxes[own][subject], boxes[own][obj]) > 0.9
            assert relation_scores(found.relation, boxes[twin][subject], boxes[twin][obj]) < 0.1
            # The object boxes themselves keep clear of each other along the relation's axis.
            s, o = boxes[own][subject], boxes[own][obj]
            axis = 0 if found.relation in ("left of", "right of") else 1
            gap = max(o[axis] - s[axis + 2], s[axis] - o[axis + 2])
            assert gap >= 0.08 * 224 - 2
    assert set(relations) == {"left of", "right of", "above", "below"}


def test_attribute_twins_exchange_colours_between_the_shapes(pairs):
    from harmosearch.model.lexemes import parse

    out, data = pairs
    objects = {}
    for ann in data["annotations"]:
        objects.setdefault(ann["image_id"], []).append(ann)
    for pair in (p for p in data["pairs"] if p["kind"] == "attribute"):
        a, b = pair["images"]
        for x, y in zip(objects[a], objects[b], strict=True):
            assert (x["bbox"], x["shape"], x["size"]) == (y["bbox"], y["shape"], y["size"])
        assert [x["colour"] for x in objects[a]] == [y["colour"] for y in objects[b]][::-1]
        for image_id, caption in zip(pair["images"], pair["captions"], strict=True):
            named = {tuple(lexeme.split()[-2:]) for lexeme in parse(caption).lexeme_texts}
            assert named == {(o["colour"], o["shape"]) for o in objects[image_id]}
            assert not parse(caption).relations
        # The twins differ only on the objects (and the 4 px that Lanczos resampling reaches around them).
        pixels = [np.asarray(Image.open(out / "images" / f"{i:06d}.png")).astype(int) for i in (a, b)]
        differs = np.abs(pixels[0] - pixels[1]).sum(axis=2) > 0
        inside = np.zeros_like(differs)
        for o in objects[a]:
            x, y, w, h = o["bbox"]
            inside[max(y - 4, 0) : y + h + 4, max(x - 4, 0) : x + w + 4] = True
        assert differs.any() and not (differs & ~inside).any()


def test_pair_captions_use_the_parsers_relation_vocabulary():
    from harmosearch.model.lexemes import RELATION_PHRASES
    from harmosearch.synth import PAIR_PHRASES

    for relation, phrases in PAIR_PHRASES.items():
        assert all(RELATION_PHRASES[phrase] == relation for phrase in phrases)


def test_pairs_refuse_unknown_kinds_and_negative_counts(tmp_path):
    from harmosearch.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown pair kind 'colour'"):
        generate_pairs(tmp_path, 1, seed=0, kinds=("relation", "colour"))
    with pytest.raises(ConfigError, match="at least 0"):
        generate_pairs(tmp_path, -1, seed=0)
    with pytest.raises(ConfigError, match="too small"):
        generate_pairs(tmp_path, 1, seed=0, size=8)
    with pytest.raises(ConfigError, match="none"):
        generate_pairs(tmp_path, 1, seed=0, kinds=())


# ---------- object sets ----------


def test_default_object_set_is_the_mixed_set_drawn_as_before():
    """Naming the default set draws the very same scenes (the same random stream), so existing
    seeds, training sets and benchmark sets keep their bytes."""
    for index in range(30):
        plain = sample_scene(5, index, SynthConfig())
        named = sample_scene(5, index, SynthConfig(objects="mixed", min_objects=1, max_objects=4))
        assert plain == named


@pytest.mark.parametrize(("objects", "sides", "counts"), [("small", (22, 48), (2, 5)), ("large", (50, 95), (1, 3))])
def test_object_sets_draw_their_sizes_and_counts(objects, sides, counts):
    config = SynthConfig(objects=objects)
    seen_counts, seen_sides = set(), []
    for index in range(120):
        scene = sample_scene(21, index, config)
        seen_counts.add(len(scene.objects))
        seen_sides += [2 * o.half for o in scene.objects]
        assert len({o.phrase for o in scene.objects}) == len(scene.objects)
    assert min(seen_counts) >= 1 and max(seen_counts) <= counts[1] and counts[1] in seen_counts
    assert sides[0] - 0.5 <= min(seen_sides) and max(seen_sides) <= sides[1] + 0.5
    assert max(seen_sides) - min(seen_sides) > 0.8 * (sides[1] - sides[0])  # the range is used


def test_small_object_annotations_name_the_set_and_boxes_fit_the_sizes(tmp_path):
    data = generate(tmp_path, SynthConfig(n=20, seed=2, objects="small"))
    assert data["info"]["objects"] == "small"
    sides = [max(a["bbox"][2], a["bbox"][3]) for a in data["annotations"]]
    assert min(sides) >= 19 and max(sides) <= 49
    assert {a["size"] for a in data["annotations"]} == {"small"}
    assert "objects" not in generate(tmp_path / "default", SynthConfig(n=2, seed=2))["info"]


def test_object_counts_can_be_set_and_must_be_ordered():
    scene = sample_scene(0, 0, SynthConfig(objects="small", min_objects=6, max_objects=6))
    assert len(scene.objects) == 6
    with pytest.raises(ConfigError):
        SynthConfig(min_objects=3, max_objects=2)
    with pytest.raises(ConfigError):  # 5 is above the mixed set's 4
        sample_scene(0, 0, SynthConfig(min_objects=5))
