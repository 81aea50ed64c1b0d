"""The photo world (synth world "photo"): shapes on cuts of scikit-image's photographs."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harmosearch.bench.datasets import (
    OBJECT_SEEDS,
    PAIR_SEEDS,
    WORLD_PAIR_SEEDS,
    WORLD_SEEDS,
    load_bench_set,
    load_scene_folder,
)
from harmosearch.config import SynthConfig
from harmosearch.errors import ConfigError, DataError
from harmosearch.synth import (
    HIDDEN_BELOW,
    PHOTO_SIZES,
    PHOTO_SPLITS,
    SUPERSAMPLE,
    categories,
    generate,
    generate_pairs,
    photograph,
    render_photo,
    sample_photo_scene,
)
from harmosearch.synth.photo import GREY_PHOTOS, Backdrop
from harmosearch.synth.photo_drawing import clutter_mask, object_mask
from harmosearch.synth.photo_scenes import Clutter, Finish, PhotoObject, PhotoScene
from harmosearch.synth.text import captions
from harmosearch.synth.writer import draw_photo_record
from harmosearch.train.data import load_scene_folder as load_training_folder

from .conftest import TEST_MODEL
from .test_synth import digest_tree

# A small photo set, shared by the tests that only read it: image 11 holds a hidden object, and
# image 7 one that does not show at all (so it is not annotated).
HIDDEN_SET = SynthConfig(n=12, seed=2, size=96, world="photo")


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("photo")
    return out, generate(out, HIDDEN_SET)


def test_photo_scenes_are_byte_identical_for_a_seed(tmp_path):
    config = SynthConfig(n=10, seed=5, world="photo")
    generate(tmp_path / "a", config)
    generate(tmp_path / "b", config)
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b")
    generate(tmp_path / "c", SynthConfig(n=10, seed=6, world="photo"))
    assert digest_tree(tmp_path / "a") != digest_tree(tmp_path / "c")
    assert sample_photo_scene(5, 3, config) == sample_photo_scene(5, 3, SynthConfig(world="photo", n=99))


def _pixels(root):
    digest = hashlib.sha256()
    for path in sorted((root / "images").iterdir()):
        digest.update(np.asarray(Image.open(path)).tobytes())
    return digest.hexdigest()


def test_the_flat_world_draws_what_it_drew_before_the_photo_world(tmp_path):
    """Digests of sets drawn by the code before the photo world came (commit 2c98745): the flat
    world takes no extra random draws and keeps its bytes, scenes and twin pairs alike."""
    generate(tmp_path / "s", SynthConfig(n=8, seed=0, world="flat", photos="test"))
    generate_pairs(tmp_path / "p", 3, seed=4)
    annotations = {k: hashlib.sha256((tmp_path / k / "annotations.json").read_bytes()).hexdigest() for k in "sp"}
    assert annotations == {
        "s": "6b66411f97d3c4dd4d7b127a5c98c82d102a531f84d56223ebdb436f3f2a6c3a",
        "p": "643cc8b49971a92a645f7dc4abba9bb5c9ba53dced0881dc48b13f2289bbbfd6",
    }
    assert _pixels(tmp_path / "s") == "f8f0d0ea86e8c743e6ec971f3897b9ad885470c1b72344ecb5d360a785e84f38"
    assert _pixels(tmp_path / "p") == "b8227b0e359de8be6c3de7794584b9db91d1439b2211c576896ca5397ceb5b81"


def test_a_mixed_set_is_flat_and_photo_scenes_drawn_as_in_their_own_worlds(tmp_path):
    worlds = {w: generate(tmp_path / w, SynthConfig(n=12, seed=9, world=w)) for w in ("flat", "photo", "mixed")}
    mixed = worlds["mixed"]
    assert mixed["info"]["world"] == "mixed" and "world" not in worlds["flat"]["info"]
    kinds = set()
    for image in mixed["images"]:
        world = image.get("world", "flat")
        kinds.add(world)
        name = image["file_name"]
        assert (tmp_path / "mixed" / "images" / name).read_bytes() == (tmp_path / world / "images" / name).read_bytes()
        twin = next(im for im in worlds[world]["images"] if im["id"] == image["id"])
        assert twin == image
    assert kinds == {"flat", "photo"}


def test_photo_world_images_are_jpeg_and_objects_within_sizes_and_aspects(photo_set):
    out, data = photo_set
    for image in data["images"]:
        assert image["file_name"].endswith(".jpg") and image["world"] == "photo"
        with Image.open(out / "images" / image["file_name"]) as picture:
            assert picture.format == "JPEG" and picture.mode == "RGB" and picture.size == (96, 96)
    assert data["info"]["world"] == "photo" and data["info"]["photos"] == "train"
    for size in (224, 448):
        config = SynthConfig(world="photo", size=size)
        scale = size / 224
        qualities, sides, names = set(), [], set()
        for index in range(150):
            scene = sample_photo_scene(3, index, config)
            qualities.add(scene.finish.quality)
            for obj in scene.objects:
                width, height = 2 * obj.half, 2 * obj.half_y
                assert 0.7 - 1e-9 <= width / height <= 1.4 + 1e-9
                low, high = PHOTO_SIZES[obj.size]
                assert low * scale - 1e-6 <= max(width, height) <= high * scale + 1e-6
                assert min(width, height) >= 16 * scale - 1e-6
                assert (
                    obj.half + 2 <= obj.cx <= size - obj.half - 2 and obj.half_y + 2 <= obj.cy <= size - obj.half_y - 2
                )
                sides.append(max(width, height) / scale)
                names.add(obj.size)
        assert min(qualities) >= 45 and max(qualities) <= 90 and len(qualities) > 20
        assert names == {"small", "large"} and min(sides) < 20 and max(sides) > 115  # the whole range is used


def test_drawn_masks_fit_the_boxes_they_were_given():
    config = SynthConfig(world="photo")
    for index in range(6):
        for obj in sample_photo_scene(8, index, config).objects:
            ys, xs = np.nonzero(object_mask(obj, 224 * SUPERSAMPLE))
            width, height = (xs.max() + 1 - xs.min()) / SUPERSAMPLE, (ys.max() + 1 - ys.min()) / SUPERSAMPLE
            assert 0.85 * 2 * obj.half - 1 <= width <= 2 * obj.half + 1
            assert 0.85 * 2 * obj.half_y - 1 <= height <= 2 * obj.half_y + 1


def _shrunk(mask, size):
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BOX)) > 0


def test_boxes_and_areas_are_of_the_visible_part(photo_set):
    """Against a slow reference: an object's visible pixels are its own less those of every
    object and front clutter drawn after it; its box and area are those of what shows."""
    _, data = photo_set
    anns = {}
    for a in data["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    occluded = 0
    for index in range(HIDDEN_SET.n):
        scene = sample_photo_scene(HIDDEN_SET.seed, index, HIDDEN_SET)
        _, visible, shares = render_photo(scene)
        side = scene.size * SUPERSAMPLE
        shapes = [object_mask(o, side) for o in scene.objects]
        front = [clutter_mask(c, side) for c in scene.clutter if c.front]
        for k, (mask, shown, share) in enumerate(zip(shapes, visible, shares, strict=True)):
            later = np.zeros_like(mask)
            for other in shapes[k + 1 :] + front:
                later |= other
            assert np.array_equal(shown, _shrunk(mask & ~later, scene.size))
            assert share == pytest.approx((mask & ~later).sum() / mask.sum())
            occluded += share < 1
        drawn = [(o, m, s) for o, m, s in zip(scene.objects, visible, shares, strict=True) if m.any()]
        assert len(drawn) == len(anns[index])
        for (obj, shown, share), a in zip(drawn, anns[index], strict=True):
            ys, xs = np.nonzero(shown)
            assert a["phrase"] == obj.phrase and a["area"] == int(shown.sum())
            assert a["bbox"] == [
                int(xs.min()),
                int(ys.min()),
                int(xs.max() + 1 - xs.min()),
                int(ys.max() + 1 - ys.min()),
            ]
            assert a["visible"] == round(share, 3) and a["hidden"] == (share < HIDDEN_BELOW)
    assert occluded >= 3  # the set does hold partly hidden objects


def _scene_with_a_hidden_object():
    backdrop = Backdrop("brick", (1.0, 0.0, 0.0), (False, False), (1.0, 1.0, 1.0), 1.0, 1.0)
    shade = (0.0, 0.1, 4.0)
    objects = (
        PhotoObject("red", "circle", "small", 100, 100, 18, (215, 35, 35), 18, *shade),  # mostly under the square
        PhotoObject("blue", "square", "large", 130, 104, 40, (35, 75, 215), 40, *shade),
        PhotoObject("green", "star", "small", 40, 190, 14, (35, 165, 55), 12, *shade),
    )
    line = Clutter("line", ((0.0, 10.0), (60.0, 30.0)), (150, 150, 150), 2, True)
    return PhotoScene(0, 224, backdrop, objects, (line,), Finish(1.0, 0.0, 0.0, 80), 1)


def test_a_mostly_hidden_object_is_marked_and_left_out_of_captions_and_relations(tmp_path):
    record, seen = draw_photo_record(_scene_with_a_hidden_object(), str(tmp_path))
    hidden = [a for a in record["annotations"] if a["hidden"]]
    assert [a["phrase"] for a in hidden] == ["red circle"] and hidden[0]["visible"] < HIDDEN_BELOW
    assert [o.phrase for o in seen.objects] == ["blue square", "green star"]
    assert {(r["subject"], r["object"]) for r in record["relations"]} == {(1, 2)}
    said = " ".join(captions(seen, np.random.default_rng(0), count=20))
    assert "circle" not in said and "blue square" in said and "photo background" in said


def test_hidden_objects_are_left_out_of_bench_boxes_and_training_links(photo_set):
    out, data = photo_set
    hidden = [a for a in data["annotations"] if a["hidden"]]
    assert hidden
    bench = load_scene_folder(out)
    assert len(bench.boxes) == len(data["annotations"]) - len(hidden)
    shown = {(a["image_id"], a["phrase"]) for a in data["annotations"] if not a["hidden"]}
    assert {(image, phrase) for (image, _, _), phrase in zip(bench.boxes, bench.phrases, strict=True)} == shown
    links = {(int(s.image.stem), link.text) for s in load_training_folder(out) for link in s.links}
    assert links == shown
    described = {(r["image_id"], r["subject"]) for r in data["relations"]} | {
        (r["image_id"], r["object"]) for r in data["relations"]
    }
    assert not described & {(a["image_id"], a["id"]) for a in hidden}
    for a in hidden:
        said = " ".join(c["caption"] for c in data["captions"] if c["image_id"] == a["image_id"])
        assert a["phrase"] not in said


def test_photographs_are_split_and_every_scene_uses_only_its_splits(tmp_path):
    named = [name for names in PHOTO_SPLITS.values() for name in names]
    assert len(named) == len(set(named)) == 18  # no photograph in two splits
    for name in named:
        pixels = photograph(name)
        assert pixels.dtype == np.uint8 and pixels.ndim in (2, 3) and min(pixels.shape[:2]) >= 150
        assert (pixels.ndim == 2) == (name in GREY_PHOTOS)
    for split, names in PHOTO_SPLITS.items():
        used = {sample_photo_scene(1, i, SynthConfig(world="photo", photos=split)).background for i in range(120)}
        assert used == set(names), split
    data = generate(tmp_path / "test", SynthConfig(n=16, seed=4, world="photo", photos="test"))
    assert {im["background"] for im in data["images"]} <= set(PHOTO_SPLITS["test"])
    pairs = generate_pairs(tmp_path / "pairs", 4, seed=4, world="photo", photos="test")
    assert {im["background"] for im in pairs["images"]} <= set(PHOTO_SPLITS["test"])
    with pytest.raises(ConfigError):
        SynthConfig(world="photo", photos="holdout")


def test_photographs_are_the_pixels_skimage_data_gives_and_register_nothing_with_pillow():
    """Read from scikit-image's files with Pillow, each photograph equals what `skimage.data`
    gives (asked in a process of its own: its reader, imageio, registers every Pillow plugin it
    finds, HEIF's among them, in the process that calls it), and reading them leaves Pillow's
    formats as they were."""
    import hashlib
    import subprocess
    import sys

    from PIL import Image

    named = [name for names in PHOTO_SPLITS.values() for name in names]
    script = (
        "import hashlib, sys, numpy as np, skimage.data as d\n"
        "for name in sys.argv[1:]:\n"
        "    a = getattr(d, name)()\n"
        "    a = a[0] if name == 'stereo_motorcycle' else a\n"
        "    print(name, a.shape, hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8)).hexdigest())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *named], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    Image.init()  # Pillow's own formats, which it registers on the first file it opens
    formats = set(Image.OPEN)
    photograph.cache_clear()
    ours = [f"{name} {photograph(name).shape} {hashlib.sha256(photograph(name)).hexdigest()}" for name in named]
    assert ours == done.stdout.splitlines()
    assert set(Image.OPEN) == formats and "HEIF" not in formats


def test_photo_twins_differ_only_where_flat_twins_do(tmp_path):
    data = generate_pairs(tmp_path, 4, seed=11, world="photo", photos="val")
    images = {im["id"]: im for im in data["images"]}
    boxes = {}
    for a in data["annotations"]:
        assert not a["hidden"] and a["visible"] == 1.0
        boxes.setdefault(a["image_id"], []).append((a["phrase"], a["bbox"]))
    for pair in data["pairs"]:
        first, second = (images[i] for i in pair["images"])
        assert first["background"] == second["background"] and first["file_name"].endswith(".jpg")
        a, b = (boxes[i] for i in pair["images"])
        if pair["kind"] == "relation":  # the same objects, places exchanged
            assert sorted(p for p, _ in a) == sorted(p for p, _ in b) and dict(a) != dict(b)
        else:  # the same places, colours exchanged
            assert sorted(box for _, box in a) == sorted(box for _, box in b)
            assert {p.split()[1] for p, _ in a} == {p.split()[1] for p, _ in b} and dict(a) != dict(b)
    assert data["info"]["world"] == "photo" and data["info"]["photos"] == "val"


def test_photo_bench_sets_have_their_own_seeds_photographs_and_folders(tmp_path):
    seeds = [s for splits in (*OBJECT_SEEDS.values(), PAIR_SEEDS, *WORLD_SEEDS.values()) for s in splits.values()]
    seeds += [s for splits in WORLD_PAIR_SEEDS.values() for s in splits.values()]
    assert len(set(seeds)) == len(seeds)
    bench = load_bench_set("synthetic", None, tmp_path, n=4, task="search", split="val", world="photo")
    assert bench.root == tmp_path / "bench" / f"synthetic-photo-{WORLD_SEEDS['photo']['val']}-4"
    assert "photo world val" in bench.name and all(p.suffix == ".jpg" for p in bench.images)
    data = json.loads((bench.root / "annotations.json").read_text())
    assert data["info"]["photos"] == "val" and {im["background"] for im in data["images"]} <= set(PHOTO_SPLITS["val"])
    pairs = load_bench_set("synthetic", None, tmp_path, n=4, task="compositional", split="test", world="photo")
    assert pairs.root == tmp_path / "bench" / f"pairs-photo-{WORLD_PAIR_SEEDS['photo']['test']}-2"
    assert len(pairs.pairs) == 4 and "photo world test" in pairs.name
    with pytest.raises(DataError, match="--objects"):
        load_bench_set("synthetic", None, tmp_path, n=4, objects="small", world="photo")
    with pytest.raises(DataError, match="world"):
        load_bench_set("synthetic", None, tmp_path, n=4, world="mixed")
    assert len(categories()) == 48


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "harmosearch", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.slow
def test_synth_and_bench_in_the_photo_world_end_to_end(tmp_path, monkeypatch):
    """synth in a process of its own, as a user runs it; bench in this one (a new process would
    spend seconds importing torch first)."""
    from .conftest import invoke

    result = _cli("synth", str(tmp_path / "s"), "--world", "photo", "--photos", "test", "--n", "3", "--size", "64")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "s" / "annotations.json").read_text())
    assert data["info"]["world"] == "photo" and len(list((tmp_path / "s" / "images").glob("*.jpg"))) == 3
    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    bench = ["bench", "--world", "photo", "--n", "12", "--model", TEST_MODEL, "--device", "cpu", "--json"]
    result = invoke(bench)
    assert result.code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["world"] == "photo" and figures["split"] == "test"
    assert set(figures["tasks"]) == {"retrieval", "boxcls", "grounding", "search", "compositional"}
    assert all("photo world test" in task["dataset"] for task in figures["tasks"].values())
    folders = {p.name for p in Path(tmp_path / "cache" / "bench").iterdir() if p.is_dir()}
    assert folders == {
        f"synthetic-photo-{WORLD_SEEDS['photo']['test']}-12",
        f"pairs-photo-{WORLD_PAIR_SEEDS['photo']['test']}-6",
    }
