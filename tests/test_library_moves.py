"""Photo libraries move (a new disk, a renamed folder, a drive mounted elsewhere): the index says
so, and re-indexing the new place recognises every photo by its content instead of encoding it
again."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from harmosearch.indexing import build_index
from harmosearch.search import Index
from harmosearch.store import read_manifest, verify

from .conftest import TEST_MODEL
from .test_cli_errors import CONFIG, one_error
from .test_cli_fuzz import invoke
from .test_indexing import assert_same_index


@pytest.fixture()
def library(scenes, tmp_path, test_encoder):
    """Photos at old/, indexed into idx/; returns (photos folder, index folder)."""
    photos = tmp_path / "old"
    shutil.copytree(scenes / "images", photos)
    build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    return photos, tmp_path / "idx"


def index_cli(photos, index):
    return invoke(["index", str(photos), "--index", str(index), "--model", TEST_MODEL, "--workers", "0"])


def test_a_moved_folder_is_recognised_without_encoding(library, tmp_path, test_encoder):
    photos, index = library
    before = tmp_path / "before"
    shutil.copytree(index, before)
    photos.rename(tmp_path / "new place")
    outcome = index_cli(tmp_path / "new place", index)
    assert outcome.code == 0, outcome.stderr
    assert f"the photos moved from {photos} to {tmp_path / 'new place'}; moved 12 " in outcome.stdout
    assert "added 0, changed 0, renamed 0, removed 0, unchanged 12; encoded 0 " in outcome.stdout
    assert read_manifest(index)["photos_root"] == str(tmp_path / "new place")
    assert verify(index) == []
    assert_same_index(index, before)  # the very same vectors, carried over
    response = Index(index, encoder=test_encoder).search("red", k=3)
    assert response.warnings == [] and all(r.absolute.is_file() for r in response.results)
    again = index_cli(tmp_path / "new place", index)
    assert again.code == 0 and "up to date, nothing to encode" in again.stdout


def test_a_copy_with_new_times_and_another_layout_is_recognised_by_content(library, tmp_path):
    """Copied without preserving times (cp -r) into a subfolder of the new place: no name, size
    and time matches, yet every photo's content is known."""
    photos, index = library
    target = tmp_path / "disk" / "holiday"
    target.mkdir(parents=True)
    for path in photos.iterdir():
        shutil.copyfile(path, target / path.name)
    shutil.rmtree(photos)
    outcome = index_cli(tmp_path / "disk", index)
    assert outcome.code == 0, outcome.stderr
    assert "moved 12 " in outcome.stdout and "renamed 12, removed 0, unchanged 0; encoded 0 " in outcome.stdout
    assert read_manifest(index)["photos_root"] == str(tmp_path / "disk")


def test_equal_names_sizes_and_times_elsewhere_are_not_taken_for_the_same_photos(tmp_path, test_encoder):
    """Matching a moved folder by name, size and time alone would keep the old vectors for other
    pictures: content decides. (BMP files of one size all have the same length.)"""
    photos, other = tmp_path / "photos", tmp_path / "other"
    photos.mkdir()
    other.mkdir()
    for n in range(4):
        Image.new("RGB", (40, 40), (60 * n, 0, 0)).save(photos / f"{n}.bmp")
        Image.new("RGB", (40, 40), (0, 60 * n, 200)).save(other / f"{n}.bmp")
        shutil.copystat(photos / f"{n}.bmp", other / f"{n}.bmp")
        assert (other / f"{n}.bmp").stat().st_size == (photos / f"{n}.bmp").stat().st_size
    build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    outcome = index_cli(other, tmp_path / "idx")
    assert outcome.code == 0, outcome.stderr
    assert "moved 0 " in outcome.stdout and "changed 4, renamed 0, removed 0, unchanged 0; encoded 4 " in outcome.stdout


def test_query_info_and_annotation_say_what_to_run_after_a_move(library, tmp_path):
    photos, index = library
    photos.rename(tmp_path / "new place")
    hint = f"if it moved, run: harmosearch index NEW_PLACE --index {index}"
    query = invoke(["query", "red", "--index", str(index), "-k", "2"])
    assert query.code == 0 and query.stderr.splitlines() == [
        f"warning: the photo folder {photos} no longer exists; {hint}"
    ]
    info = invoke(["info", str(index)])
    assert info.code == 0 and info.stderr.splitlines() == [
        f"warning: the photo folder {photos} no longer exists; {hint}"
    ]
    annotate = invoke(["query", "red", "--index", str(index), "--save-annotated", str(tmp_path / "pictures")])
    assert annotate.code == 2 and "000" in annotate.stdout  # the results are listed, then the error
    assert annotate.stderr.splitlines() == [
        f"warning: the photo folder {photos} no longer exists; {hint}",
        f"error: the photo folder {photos} no longer exists, so no result can be drawn; {hint}",
    ]
    assert not (tmp_path / "pictures").exists()


def test_annotation_names_photos_deleted_since_indexing(library, tmp_path, test_encoder):
    photos, index = library
    first = Index(index, encoder=test_encoder).search("red", k=12).results[0]
    first.absolute.unlink()
    message = one_error(["query", "red", "--index", str(index), "-k", "12", "--save-annotated", str(tmp_path / "p")])
    assert message == (
        f"1 of 12 result photos no longer exist (e.g. {first.absolute}); update the index: "
        f"harmosearch index {photos} --index {index}"
    )
