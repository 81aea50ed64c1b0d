"""Duplicates: candidate pairs against a plain loop, the shot check, keepers, and the planted
groups of a generated set found exactly."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from harmosearch.bench.dupes import make_eval_set, pair_scores
from harmosearch.dupes import (
    DEFAULT_THRESHOLD,
    PIXEL_THRESHOLD,
    THUMB_SIDE,
    DupeGroup,
    find_duplicates,
    keeper_order,
    pixel_difference,
    similar_pairs,
)
from harmosearch.errors import DataError
from harmosearch.media.formats import open_still


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_similar_pairs_match_the_whole_matrix():
    rng = np.random.default_rng(0)
    base = unit(rng.standard_normal((2500, 8)))
    vectors = np.concatenate([base, unit(base[:40] + 0.05 * rng.standard_normal((40, 8)))])  # 40 near copies
    i, j, s = similar_pairs(vectors, 0.97)  # 2540 rows: three blocks of 1024 rows
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    rows, cols = np.nonzero(np.triu(vectors @ vectors.T >= 0.97, k=1))  # the whole matrix at once
    expected = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert found == expected and len(expected) >= 40
    assert np.allclose(s, np.einsum("ij,ij->i", vectors[i], vectors[j]), atol=1e-6)


def test_keeper_order():
    paths = [
        "a/copy.png",
        "b/photo.jpg",
        "c/photo.heic",
        "d/photo.dng",
        "e/small.jpg",
        "f/big.jpg",
        "g/longer_name.jpg",
    ]
    widths = np.array([400, 400, 400, 400, 200, 400, 400])
    heights = np.array([300, 300, 300, 300, 150, 300, 300])
    taken = np.array([np.nan, 50.0, np.nan, np.nan, np.nan, 50.0, 10.0])
    sizes = np.array([0, 100, 0, 0, 0, 900, 100])
    order = [paths[i] for i in keeper_order(paths, widths, heights, taken, sizes)]
    # Most pixels; then RAW, HEIC, JPEG ..., PNG; the larger file; the older capture; the shorter path.
    assert order == [
        "d/photo.dng",
        "c/photo.heic",
        "f/big.jpg",
        "g/longer_name.jpg",
        "b/photo.jpg",
        "a/copy.png",
        "e/small.jpg",
    ]


def test_groups_from_vectors_hashes_sizes_and_times():
    rng = np.random.default_rng(1)
    scene = unit(rng.standard_normal(16))
    others = unit(rng.standard_normal((3, 16)))
    vectors = np.stack([scene, scene, unit(scene + 0.01), unit(scene + 0.02), unit(scene + 0.01), *others])
    paths = ["orig.jpg", "orig_copy.jpg", "resized.jpg", "portrait.jpg", "burst.jpg", "x.jpg", "y.jpg", "z.jpg"]
    sha = ["A", "A", "B", "C", "D", "E", "F", "G"]
    widths = [400, 400, 200, 300, 400, 400, 400, 400]
    heights = [300, 300, 150, 400, 300, 300, 300, 300]
    taken = [100.0, 100.0, 100.0, 100.0, 160.0, np.nan, np.nan, np.nan]  # the burst shot came a minute later
    groups = find_duplicates(paths, sha, widths, heights, vectors, taken=taken, threshold=0.95)
    assert groups == [DupeGroup("near", (0, 1, 2), 0, pytest.approx(float(vectors[2] @ vectors[0])))]
    assert groups[0].to_dict(paths) == {
        "kind": "near",
        "keeper": "orig.jpg",
        "members": ["orig.jpg", "orig_copy.jpg", "resized.jpg"],
        "similarity": round(float(vectors[2] @ vectors[0]), 4),
    }
    exact_only = find_duplicates(paths, sha, widths, heights, vectors, taken=taken, threshold=0.9999)
    assert exact_only == [DupeGroup("exact", (0, 1), 0, 1.0)]
    with pytest.raises(DataError, match="same images"):
        find_duplicates(paths[:-1], sha, widths, heights, vectors)


def test_an_image_whose_thumbnail_cannot_be_read_joins_no_near_group():
    vectors = unit(np.ones((3, 4)) + np.eye(3, 4) * 0.01)
    picture = Image.new("RGB", (40, 30), (200, 30, 30))

    def thumbnail(i):
        if i == 2:
            raise DataError("cannot decode image: gone")
        return picture

    groups = find_duplicates(
        ["a.jpg", "b.jpg", "c.jpg"], ["A", "B", "C"], [40] * 3, [30] * 3, vectors, thumbnail=thumbnail
    )
    assert [g.members for g in groups] == [(0, 1)]


def test_pair_scores():
    scores = pair_scores([[0, 1, 2], [3, 4]], [0, 0, 1, 2, 2, 3])
    # predicted pairs: (0,1) right, (0,2) wrong, (1,2) wrong, (3,4) right; true pairs: (0,1), (3,4)
    assert scores["precision"] == 0.5 and scores["recall"] == 1.0
    assert pair_scores([], [0, 1, 2]) == {
        "precision": 1.0,
        "recall": 1.0,
        "predicted_pairs": 0,
        "true_pairs": 0,
        "right_pairs": 0,
    }


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dupes")
    return folder, make_eval_set(folder, seed=2024, n_scenes=24)


def test_the_generated_set_holds_what_it_says(planted):
    folder, items = planted
    kinds = {item.transform for item in items}
    assert {"original", "copy", "resized", "jpeg", "crop", "crop+resize+jpeg", "moved", "recoloured"} <= kinds
    by_family = {}
    for item in items:
        by_family.setdefault(item.family, []).append(item)
    for members in by_family.values():
        assert members[0].transform in ("original", "moved", "recoloured")
        first = open_still(folder / members[0].path).image
        for other in members[1:]:
            image = open_still(folder / other.path).image
            if other.transform == "copy":
                assert (folder / other.path).read_bytes() == (folder / members[0].path).read_bytes()
            if other.transform == "crop":
                cut_x, cut_y = 1 - image.width / first.width, 1 - image.height / first.height
                assert 0.025 <= cut_x <= 0.085 and 0.025 <= cut_y <= 0.085


def test_pixel_check_tells_copies_from_other_shots(planted):
    folder, items = planted
    image = {item.path: open_still(folder / item.path, min_side=THUMB_SIDE).image for item in items}
    originals = {item.path[:4]: item for item in items if item.transform == "original"}
    copies, shots = [], []
    for item in items:
        original = originals[item.path[:4]]
        if item is original:
            continue
        difference = pixel_difference(image[original.path], image[item.path])
        (copies if item.family == original.family else shots).append(difference)
    assert copies and shots
    assert max(copies) < PIXEL_THRESHOLD < min(shots)


def test_the_planted_groups_are_found_exactly_with_the_bundled_model(planted):
    import torch

    from harmosearch.config import load_config
    from harmosearch.model.encoder import load_encoder

    folder, items = planted
    encoder = load_encoder(load_config(overrides={"encoder.model": "harmo-tiny", "encoder.device": "cpu"}))
    paths = [item.path for item in items]
    decoded = [open_still(folder / p, min_side=encoder.image_size) for p in paths]
    vectors = encoder.encode_pixels(torch.stack([encoder.image_tensor(d.image) for d in decoded]))[0].numpy()
    sha = [hashlib.sha256((folder / p).read_bytes()).hexdigest() for p in paths]
    loaded = []

    def thumbnail(i):
        loaded.append(i)
        return open_still(folder / paths[i], min_side=THUMB_SIDE).image

    groups = find_duplicates(
        paths,
        sha,
        [d.width for d in decoded],
        [d.height for d in decoded],
        vectors,
        file_sizes=[(folder / p).stat().st_size for p in paths],
        thumbnail=thumbnail,
        threshold=DEFAULT_THRESHOLD,
    )
    scores = pair_scores([g.members for g in groups], [item.family for item in items])
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0 and scores["true_pairs"] >= 20
    assert len(loaded) == len(set(loaded))  # each thumbnail loaded once
    for group in groups:
        assert items[group.keeper].transform in ("original", "copy", "moved", "recoloured")
    # Without the pixel check, a re-drawn scene with an object moved joins the copies.
    blind = find_duplicates(
        paths, sha, [d.width for d in decoded], [d.height for d in decoded], vectors, threshold=DEFAULT_THRESHOLD
    )
    assert pair_scores([g.members for g in blind], [item.family for item in items])["precision"] < 1.0


def test_pixel_difference_sees_a_small_change_and_forgives_a_crop():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 255, size=(12, 16, 3)).astype(np.uint8)
    picture = Image.fromarray(base).resize((320, 240), Image.Resampling.NEAREST)
    cropped = picture.crop((10, 6, 310, 230)).resize((200, 149), Image.Resampling.LANCZOS)
    changed = np.asarray(picture).copy()
    changed[100:140, 150:190] = (255, 0, 255)
    assert pixel_difference(picture, cropped) < PIXEL_THRESHOLD
    assert pixel_difference(picture, Image.fromarray(changed)) > PIXEL_THRESHOLD
    assert pixel_difference(picture, picture) == 0.0
