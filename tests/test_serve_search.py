"""The library side of the server: more like this, search by a region, files by image id, info.

Rankings are checked against brute-force references over the stored vectors, written here
independently of `Index`."""

import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from harmosearch.config import Config, SearchConfig, load_config
from harmosearch.errors import DataError, QueryError
from harmosearch.indexing import build_index
from harmosearch.limits import MAX_K, MAX_NEGATIVES
from harmosearch.search import Index
from harmosearch.store import size_on_disk, write_generation

from .conftest import TEST_MODEL
from .fakes import FakeEncoder
from .test_indexing import CONFIG  # batch size 1: an image's vectors do not depend on its batch
from .test_search import make_data

# A window penalty, which box queries must leave out: their references score plain regions.
EXACT_BOXES = SearchConfig(box_margin=0.0, window_penalty=0.3)


@pytest.fixture(scope="module")
def index(scenes, test_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-search")
    photos = root / "photos"
    shutil.copytree(scenes / "images", photos)
    wide = Image.new("RGB", (320, 180), (90, 120, 150))
    ImageDraw.Draw(wide).ellipse((200, 40, 280, 120), fill=(220, 30, 30))
    wide.save(photos / "wide.png")
    build_index(photos, root / "index", CONFIG, encoder=test_encoder)
    return Index(root / "index", Config(search=EXACT_BOXES), encoder=test_encoder)


def vectors(array):
    return np.asarray(array, dtype=np.float32)


def similar_reference(index, image_id, k):
    stored = vectors(index.reader.global_vectors)
    query = stored[image_id] / np.linalg.norm(stored[image_id])
    scores = stored @ query
    order = sorted((i for i in range(len(stored)) if i != image_id), key=lambda i: (-scores[i], i))
    return [(i, float(scores[i])) for i in order[:k]]


def region_reference(index, image_id, query, k):
    """Every other image's best region against the query vector, one region at a time."""
    best = {}
    regions = index.reader.regions
    for row, owner in enumerate(regions["image_id"]):
        owner = int(owner)
        if owner == image_id:
            continue
        score = float(vectors(index.reader.region_vectors[row]) @ query)
        if owner not in best or score > best[owner][0]:
            best[owner] = (score, tuple(float(regions[c][row]) for c in ("x0", "y0", "x1", "y1")))
    order = sorted(best, key=lambda i: (-best[i][0], i))
    return [(i, *best[i]) for i in order[:k]]


def test_similar_ranks_the_other_images_by_global_similarity(index):
    for image_id in (0, 5, index.n_images - 1):
        response = index.similar(image_id, k=6)
        expected = similar_reference(index, image_id, 6)
        assert [r.image_id for r in response.results] == [i for i, _ in expected]
        np.testing.assert_allclose([r.score for r in response.results], [s for _, s in expected], atol=1e-5)
        assert all(r.lexemes == () and r.score == r.global_score for r in response.results)
        assert response.query == index.reader.images["path"][image_id] and response.lexemes == []
    everything = index.similar(3, k=100)
    assert len(everything.results) == index.n_images - 1  # all but the image itself
    cut = everything.results[4].score
    assert [r.image_id for r in index.similar(3, k=100, min_score=cut).results] == [
        r.image_id for r in everything.results[:5]
    ]


def test_region_vector_of_an_indexed_box_is_the_indexed_region(index):
    """Pooling a stored proposal box from a fresh encoding gives back the stored vector."""
    regions = index.reader.regions
    checked = 0
    for image_id in (1, 7, index.n_images - 1):
        rows = index.reader.regions_of(image_id)
        for row in range(rows.start, rows.stop, 4):
            box = tuple(float(regions[c][row]) for c in ("x0", "y0", "x1", "y1"))
            stored = vectors(index.reader.region_vectors[row])
            fresh = index.region_vector(image_id, box)
            cosine = float(fresh @ stored / np.linalg.norm(stored))
            assert cosine > 0.995, (image_id, box, cosine)
            checked += 1
    assert checked >= 6


def test_search_region_ranks_images_by_their_best_region(index):
    wide = list(index.reader.images["path"]).index("wide.png")
    for image_id, box in ((0, (20.0, 30.0, 120.0, 150.0)), (wide, (200.0, 40.0, 280.0, 120.0))):
        query = index.region_vector(image_id, box)
        response = index.search_region(image_id, box, k=5)
        expected = region_reference(index, image_id, query, 5)
        assert [r.image_id for r in response.results] == [i for i, _, _ in expected]
        np.testing.assert_allclose([r.score for r in response.results], [s for _, s, _ in expected], atol=1e-4)
        assert [r.lexemes[0].box for r in response.results] == [b for _, _, b in expected]
        assert response.lexemes == ["region"] and all(r.lexemes[0].text == "region" for r in response.results)


def test_search_region_alpha_mixes_in_the_global_similarity(index):
    box = (10.0, 10.0, 150.0, 150.0)
    query = index.region_vector(2, box)
    best = {i: s for i, s, _ in region_reference(index, 2, query, 100)}
    glob = vectors(index.reader.global_vectors) @ query
    response = index.search_region(2, box, k=100, alpha=0.3)
    for r in response.results:
        assert r.score == pytest.approx(0.3 * glob[r.image_id] + 0.7 * best[r.image_id], abs=1e-4)
    assert [r.score for r in response.results] == sorted((r.score for r in response.results), reverse=True)


def test_boxes_are_clipped_to_the_image_and_empty_ones_refused(index):
    inside = index.search_region(0, (-50.0, -50.0, 100.0, 100.0), k=3)
    assert inside.query.startswith("region (0, 0, 100, 100) of ")
    assert index.region_vector(0, (-50.0, -50.0, 100.0, 100.0)) == pytest.approx(
        index.region_vector(0, (0.0, 0.0, 100.0, 100.0)), abs=1e-6
    )
    for box in ((300.0, 300.0, 400.0, 400.0), (50.0, 50.0, 50.0, 80.0), (60.0, 10.0, 20.0, 40.0)):
        with pytest.raises(QueryError, match="holds no pixels"):
            index.search_region(0, box)
    for box in ((0.0, 0.0, float("nan"), 5.0), (1.0, 2.0, 3.0)):
        with pytest.raises(QueryError, match="four finite numbers"):
            index.search_region(0, box)
    for image_id in (-1, index.n_images):
        with pytest.raises(QueryError, match="image ids run from 0"):
            index.similar(image_id)
    with pytest.raises(QueryError, match="k must be at least 1"):
        index.similar(0, k=0)
    with pytest.raises(QueryError, match="alpha must lie in"):
        index.search_region(0, (0, 0, 10, 10), alpha=1.5)


def test_limits_and_messages_a_server_can_send_as_they_are(index):
    """k and the --not phrases have a ceiling (harmosearch.limits); refusals print numbers as
    written and name no folder of the machine the index lies on."""
    with pytest.raises(QueryError, match=f"k must be at most {MAX_K}, got {10**9}"):
        index.search("red circle", k=10**9)
    with pytest.raises(QueryError, match=f"k must be at most {MAX_K}, got {MAX_K + 1}"):
        index.similar(0, k=MAX_K + 1)
    assert len(index.similar(0, k=MAX_K).results) == index.n_images - 1  # the ceiling itself is a k
    with pytest.raises(QueryError, match=f"at most {MAX_NEGATIVES} --not phrases"):
        index.search("red circle", negatives=tuple(f"thing {i}" for i in range(MAX_NEGATIVES + 1)))
    assert index.search("red circle", k=2, negatives=("blue",) * MAX_NEGATIVES).results
    messages = []
    for call in (
        lambda: index.search_region(0, np.array([50.0, 50.0, 10.0, 80.5])),
        lambda: index.search_region(0, (1.0, float("inf"), 3.0, 4.0)),
        lambda: index.search_region(0, ("a", "b", "c", "d")),
        lambda: index.similar(-1),
        lambda: index.search("red", min_score="auto", under=["/nowhere/else"]),
    ):
        with pytest.raises(QueryError) as refused:
            call()
        messages.append(str(refused.value))
    assert messages[0] == "box [50, 50, 10, 80.5] holds no pixels of image 0 (224x224)"
    assert messages[1] == "a box is four finite numbers x0, y0, x1, y1, got [1, inf, 3, 4]"
    assert messages[2] == "a box is four finite numbers x0, y0, x1, y1"
    assert messages[3] == f"no image -1 in this index: image ids run from 0 to {index.n_images - 1}"
    for message in messages:
        assert str(index.path.parent) not in message and "np." not in message and "array" not in message


def test_image_file_is_the_indexed_file(index):
    for image_id, path in enumerate(index.reader.images["path"]):
        assert index.image_file(image_id) == (index.photos_root / path).resolve()


def test_info_reports_counts_model_and_size(index):
    info = index.info()
    assert (info["images"], info["regions"]) == (index.n_images, index.reader.n_regions)
    assert info["model"]["spec"] == TEST_MODEL and info["generation"] == 1
    assert info["size_bytes"] == size_on_disk(index.path) > 0
    assert info["config"]["search"]["box_margin"] == 0.0


@pytest.fixture()
def tampered(tmp_path):
    """An index whose images table names files inside, beside and outside its photo folder."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("inside.png", "sub/linked_target.png"):
        Image.new("RGB", (160, 120)).save(photos / name)
    Image.new("RGB", (160, 120)).save(tmp_path / "secret.png")
    (photos / "escape.png").symlink_to(tmp_path / "secret.png")
    (photos / "linked.png").symlink_to(photos / "sub" / "linked_target.png")
    (photos / "sub" / "up").symlink_to(tmp_path)
    names = ["inside.png", "../secret.png", "escape.png", str(tmp_path / "secret.png"), "missing.png", "linked.png"]
    names += ["sub/up/secret.png", "sub"]
    data = make_data([[("red circle", (10, 10, 50, 50))]] * len(names))
    data.images["path"] = np.asarray(names, dtype=object)
    encoder = FakeEncoder()
    config = load_config(overrides={"index.index_type": "Flat"})
    write_generation(tmp_path / "idx", data, encoder.identity.to_dict(), config.to_dict(), "Flat", photos, None)
    return Index(tmp_path / "idx", Config(), encoder=encoder), names


def test_image_file_refuses_paths_that_leave_the_photo_folder(tampered):
    index, names = tampered
    assert index.image_file(names.index("inside.png")).name == "inside.png"
    assert index.image_file(names.index("linked.png")).name == "linked_target.png"  # a link kept inside
    for name in ("../secret.png", "escape.png", names[3], "sub/up/secret.png"):
        with pytest.raises(QueryError, match="outside the photo folder"):
            index.image_file(names.index(name))
    with pytest.raises(DataError, match="no longer in"):
        index.image_file(names.index("missing.png"))
    with pytest.raises(DataError, match="not a file"):
        index.image_file(names.index("sub"))
