"""End to end with a tiny random model on synthetic scenes: build, change files, update."""

import json
import os
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from harmosearch.config import load_config
from harmosearch.errors import DataError, IndexStoreError
from harmosearch.indexes import latest_index
from harmosearch.indexing import build_index, load_user_boxes
from harmosearch.media.scan import scan
from harmosearch.search import Index
from harmosearch.store import MEDIA_COLUMNS, IndexLock, IndexReader, read_manifest, verify

from .conftest import TEST_MODEL, invoke

# Batch size 1: an image's vectors then do not depend on which other images share its batch, so
# an incremental build can be compared with a fresh one exactly (batching itself is tested in
# test_encoder against single images).
CONFIG = load_config(
    overrides={
        "encoder.model": TEST_MODEL,
        "encoder.device": "cpu",
        "index.workers": 0,
        "regions.max_regions": 12,
        "encoder.batch_size": 1,
    }
)


def table_rows(reader):
    """Images with their regions and vectors, keyed by path: independent of row order."""
    rows = {}
    for i, path in enumerate(reader.images["path"]):
        sl = reader.regions_of(i)
        boxes = np.stack([reader.regions[c][sl] for c in ("x0", "y0", "x1", "y1")], 1)
        rows[str(path)] = (
            str(reader.images["sha256"][i]),
            np.asarray(reader.global_vectors[i], np.float32),
            boxes,
            np.asarray(reader.region_vectors[sl], np.float32),
        )
    return rows


def assert_same_index(a, b):
    ra, rb = table_rows(IndexReader(a)), table_rows(IndexReader(b))
    assert ra.keys() == rb.keys()
    for path in ra:
        assert ra[path][0] == rb[path][0]
        np.testing.assert_allclose(ra[path][1], rb[path][1], atol=2e-3)
        np.testing.assert_allclose(ra[path][2], rb[path][2], atol=1e-4)
        np.testing.assert_allclose(ra[path][3], rb[path][3], atol=2e-3)


def test_index_layout_is_row_aligned_and_readable_by_pyarrow(photos, tmp_path, test_encoder):
    report = build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    assert report.committed and report.images == 12 and report.encoded == 12
    manifest = read_manifest(tmp_path / "idx")
    assert manifest["counts"] == {"images": 12, "regions": report.regions, "videos": 0, "frames": 0}
    assert manifest["encoder"]["spec"] == TEST_MODEL and manifest["config"]["regions"]["max_regions"] == 12
    images = pq.read_table(tmp_path / "idx" / manifest["files"]["images"]).to_pandas()
    regions = pq.read_table(tmp_path / "idx" / manifest["files"]["regions"]).to_pandas()
    assert list(images.columns) == ["path", "size", "mtime_ns", "sha256", "width", "height", *MEDIA_COLUMNS]
    assert images["frame_time"].isna().all() and (images["time_source"] == "mtime").all()
    assert manifest["calibration"]["n_images"] == 12
    assert list(images["path"]) == sorted(images["path"])
    assert regions["image_id"].is_monotonic_increasing and regions["image_id"].max() == 11
    assert (regions["x1"] > regions["x0"]).all() and (regions["nx1"] <= 1.0001).all()
    assert verify(tmp_path / "idx") == []
    reader = IndexReader(tmp_path / "idx")
    assert reader.global_index.ntotal == 12 and reader.region_index.ntotal == len(regions)


def test_unchanged_folder_encodes_nothing(photos, tmp_path, test_encoder):
    build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    again = build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    assert not again.committed and again.encoded == 0 and again.unchanged == 12
    assert read_manifest(tmp_path / "idx")["generation"] == 1


def test_add_modify_delete_rename_equals_a_fresh_build(photos, tmp_path, scenes, test_encoder):
    build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    (photos / "000000.png").unlink()  # delete
    (photos / "000001.png").rename(photos / "renamed.png")  # rename
    shutil.copy(photos / "000005.png", photos / "copy_of_5.png")  # add (a copy of indexed content)
    from PIL import Image

    Image.new("RGB", (50, 40), (200, 10, 10)).save(photos / "brand_new.png")  # add, new content
    edited = Image.open(photos / "000002.png").transpose(Image.FLIP_LEFT_RIGHT)
    edited.save(photos / "000002.png")  # modify
    os.utime(photos / "000003.png")  # touched only
    report = build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    assert report.encoded == 2  # brand_new and the edited file; the rest reuse vectors
    assert (report.removed, report.renamed, report.added, report.changed) == (1, 1, 2, 1)
    assert report.images == 13
    build_index(photos, tmp_path / "fresh", CONFIG, encoder=test_encoder)
    assert_same_index(tmp_path / "idx", tmp_path / "fresh")
    assert verify(tmp_path / "idx") == []


def test_unreadable_files_are_skipped_with_a_reason(photos, tmp_path, test_encoder):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (photos / "notes.jpg").write_text("hello")
    (photos / ".hidden.png").write_bytes((photos / "000004.png").read_bytes())
    report = build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    reasons = dict(report.skipped)
    assert set(reasons) == {"broken.png", "notes.jpg"}
    assert all("cannot decode" in r for r in reasons.values())
    assert report.images == 12  # the hidden file is not indexed unless asked


def test_user_boxes_are_kept_first(photos, tmp_path, test_encoder):
    sidecar = tmp_path / "boxes.json"
    sidecar.write_text(json.dumps({"000005.png": [[10, 20, 60, 90]]}))
    build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder, boxes_file=sidecar)
    reader = IndexReader(tmp_path / "idx")
    row = list(reader.images["path"]).index("000005.png")
    sl = reader.regions_of(row)
    assert reader.regions["scale"][sl][0] == -1
    assert [reader.regions[c][sl][0] for c in ("x0", "y0", "x1", "y1")] == [10, 20, 60, 90]
    with pytest.raises(DataError, match="x1 > x0"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"a.png": [[5, 5, 1, 1]]}))
        load_user_boxes(bad)


def test_another_model_is_refused_until_rebuild(photos, tmp_path, test_encoder):
    build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    other = load_config(
        overrides={
            "encoder.model": TEST_MODEL,
            "encoder.dense_mode": "plain",
            "index.workers": 0,
            "regions.max_regions": 12,
        }
    )
    with pytest.raises(IndexStoreError, match="--rebuild"):
        build_index(photos, tmp_path / "idx", other)
    report = build_index(photos, tmp_path / "idx", other, rebuild=True)
    assert report.encoded == 12


def test_the_manifest_records_how_vectors_were_made_and_updates_never_mix_them(photos, tmp_path, monkeypatch):
    """An index keeps the precision and runtime its image vectors were made with: an update on a
    CPU whose auto path differs makes them the same way, one that names another is refused until
    --rebuild; `info` shows the path (the resolved config) and queries take their own."""
    from harmosearch.store import describe

    index = tmp_path / "idx"
    report = build_index(photos, index, CONFIG)  # no CPU features here (conftest): auto is fp32 through torch
    assert report.made_with == "fp32 (torch)"
    manifest = read_manifest(index)
    assert (manifest["encoder"]["precision"], manifest["encoder"]["runtime"]) == ("fp32", "torch")
    assert describe(index)["config"]["encoder"]["precision"] == "fp32"
    assert describe(index)["vectors"] == "fp32 (torch)"
    assert Index(index).info()["model"]["precision"] == "fp32"
    monkeypatch.setenv("HARMOSEARCH_CPU_FEATURES", "bf16")  # now auto would be bf16
    (photos / "000000.png").unlink()
    report = build_index(photos, index, load_config(overrides={"index.workers": 0}))
    assert report.committed and report.removed == 1
    assert read_manifest(index)["encoder"]["precision"] == "fp32"
    assert Index(index).encoder.identity.precision == "bf16"  # a query is encoded the way this CPU suits
    bf16 = load_config(overrides={"index.workers": 0, "encoder.precision": "bf16"})
    with pytest.raises(IndexStoreError, match=r"made in fp32 \(torch\).*bf16 \(torch\).*--rebuild"):
        build_index(photos, index, bf16)
    build_index(photos, index, CONFIG.with_values({"encoder.precision": "bf16"}), rebuild=True)
    assert read_manifest(index)["encoder"]["precision"] == "bf16"
    assert read_manifest(index)["config"]["encoder"]["precision"] == "bf16"
    outcome = invoke(["info", str(index)])
    assert outcome.code == 0 and "made in bf16 (torch)" in " ".join(outcome.stdout.split())


def test_an_index_that_records_no_path_is_updated_in_fp32(photos, tmp_path, monkeypatch):
    from harmosearch.indexing.inference import kept_settings

    older = {"spec": TEST_MODEL, "weights": "w", "config_hash": "c", "embed_dim": 32, "image_size": 32, "grid": [4, 4]}
    assert kept_settings(load_config(), older).encoder.precision == "fp32"
    assert kept_settings(load_config(overrides={"encoder.precision": "bf16"}), older).encoder.precision == "bf16"
    recorded = {**older, "precision": "int8", "runtime": "onnxruntime"}
    kept = kept_settings(load_config(), recorded).encoder
    assert (kept.precision, kept.runtime) == ("int8", "onnxruntime")
    mine = kept_settings(load_config(overrides={"encoder.precision": "fp32"}), recorded).encoder
    assert (mine.precision, mine.runtime) == ("fp32", "auto")  # a way of the user's own, not half the index's


def test_python_updates_keep_the_index_model_regions_and_type(photos, tmp_path, test_encoder):
    """What the CLI does on an update, the Python API does too: without a model or region
    settings of its own, build_index keeps the ones the index was built with."""
    built = load_config(
        overrides={
            "encoder.model": TEST_MODEL,
            "encoder.device": "cpu",
            "index.workers": 0,
            "index.index_type": "Flat",
            "regions.max_regions": 5,
            "regions.scales": "1.0,0.5",
        }
    )
    build_index(photos, tmp_path / "idx", built)
    (photos / "000000.png").unlink()
    report = build_index(photos, tmp_path / "idx", load_config(overrides={"index.workers": 0}))
    assert report.committed and report.removed == 1 and report.model == TEST_MODEL
    manifest = read_manifest(tmp_path / "idx")
    assert manifest["config"]["regions"]["max_regions"] == 5 and manifest["index_types"]["regions"] == "Flat"
    with pytest.raises(IndexStoreError, match="other region settings"):
        build_index(photos, tmp_path / "idx", load_config(overrides={"regions.max_regions": 96}))


def test_index_path_that_is_a_file_is_refused(photos, tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(IndexStoreError, match="is a file"):
        build_index(photos, tmp_path / "taken", CONFIG)


def test_second_writer_gets_a_clear_error(tmp_path):
    with IndexLock(tmp_path / "idx"), pytest.raises(IndexStoreError, match="is locked"):
        IndexLock(tmp_path / "idx").__enter__()


def test_search_through_the_real_encoder_and_latest_index(photos, tmp_path, test_encoder, monkeypatch):
    monkeypatch.setenv("HARMOSEARCH_INDEXES", str(tmp_path / "indexes"))
    build_index(photos, tmp_path / "indexes" / "a", CONFIG, encoder=test_encoder)
    build_index(photos, tmp_path / "indexes" / "b", CONFIG, encoder=test_encoder)
    assert latest_index(tmp_path / "indexes") == tmp_path / "indexes" / "b"
    index = Index(tmp_path / "indexes" / "a", encoder=test_encoder)
    response = index.search("red circle near a blue star", k=20)
    assert len(response.results) == 12 and response.lexemes == ["red circle", "blue star"]
    for r in response.results:
        assert len(r.lexemes) == 2 and all(0 <= m.box[0] < m.box[2] <= r.width for m in r.lexemes)
    image_query = index.search(image=photos / "000007.png", k=1)
    assert image_query.results[0].path == "000007.png"


def test_scan_skips_hidden_folders_and_other_extensions(tmp_path):
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "a.png").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.JPG").write_bytes(b"x")
    (tmp_path / "c.txt").write_text("x")
    entries, _ = scan(tmp_path)
    assert [e.path for e in entries] == ["sub/b.JPG"]
    assert [e.path for e in scan(tmp_path, include_hidden=True)[0]] == [".cache/a.png", "sub/b.JPG"]


def run_cli(*args, env=None, cwd=None):
    """`harmosearch ARGS` in this process, with `env` set, in folder `cwd` (the model loads in a
    second, where a new process first spends several importing torch; tests/test_demo.py and the
    real-process tests of tests/test_cli_fuzz.py run commands in processes of their own)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        if cwd is not None:
            patch.chdir(cwd)
        outcome = invoke(list(args))
    return subprocess.CompletedProcess(args, outcome.code, outcome.stdout, outcome.stderr)


def test_cli_index_query_json_annotated_and_info(photos, tmp_path):
    env = {"HARMOSEARCH_INDEXES": str(tmp_path / "indexes")}
    result = run_cli("index", str(photos), "--model", TEST_MODEL, "--workers", "0", env=env)
    assert result.returncode == 0, result.stderr
    assert "12 images" in result.stdout
    result = run_cli("index", str(photos), env=env)  # an update keeps the index's own model
    assert "up to date, nothing to encode" in result.stdout, result.stderr
    result = run_cli(
        "query", "red circle near bench", "-k", "3", "--json", "--save-annotated", str(tmp_path / "ann"), env=env
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["query"] == "red circle near bench" and payload["lexemes"] == ["red circle", "bench"]
    assert [r["rank"] for r in payload["results"]] == [1, 2, 3]
    first = payload["results"][0]
    assert set(first) == {
        "rank",
        "path",
        "frame_time",
        "score",
        "global_score",
        "confident",
        "taken",
        "lexemes",
        "relations",
    }
    assert first["frame_time"] is None and isinstance(first["confident"], bool)
    assert isinstance(payload["confident_match"], bool)
    assert [m["text"] for m in first["lexemes"]] == ["red circle", "bench"] and len(first["lexemes"][0]["box"]) == 4
    relation = first["relations"][0]
    assert (relation["subject"], relation["relation"], relation["object"]) == ("red circle", "near", "bench")
    assert 0.0 <= relation["score"] <= 1.0
    result = run_cli("query", "red circle near bench", "-k", "2", "--json", "--no-relations", env=env)
    assert all(r["relations"] == [] for r in json.loads(result.stdout)["results"])
    written = sorted(p.name for p in (tmp_path / "ann").iterdir())
    assert "contact_sheet.png" in written and len(written) == 4
    result = run_cli("info", "--verify", env=env)
    assert result.returncode == 0 and "row-aligned" in result.stdout and "12" in result.stdout
    result = run_cli("query", "red circle", "--index", str(tmp_path / "nowhere"), env=env)
    assert result.returncode == 2 and "no index at" in result.stderr and "Traceback" not in result.stderr


def test_an_index_built_in_one_folder_is_found_from_another(photos, tmp_path):
    """Where neither folder has an indexes/ of its own, `index` writes to the per-user data folder
    and `query` and `info`, run elsewhere, find the index there; a user without one is told
    where harmosearch looked."""
    data = tmp_path / "home" / "data"
    env = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(data), "HARMOSEARCH_INDEXES": ""}
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()

    def harmosearch(*args, cwd, env=env):
        return run_cli(*args, env=env, cwd=cwd)

    result = harmosearch("index", str(photos), "--model", TEST_MODEL, "--workers", "0", cwd=here)
    assert result.returncode == 0, result.stderr
    built = data / "harmosearch" / "indexes" / "photos"
    assert (built / "manifest.json").is_file() and not (here / "indexes").exists()
    result = harmosearch("query", "red circle", "-k", "2", "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["results"]) == 2
    result = harmosearch("info", "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["index"] == str(built) and json.loads(result.stdout)["images"] == 12
    stranger = {**env, "XDG_DATA_HOME": str(tmp_path / "stranger")}
    result = harmosearch("query", "red circle", cwd=elsewhere, env=stranger)
    assert result.returncode == 2
    assert f"no index found under {tmp_path / 'stranger' / 'harmosearch' / 'indexes'}/ (the per-user" in result.stderr


@pytest.mark.parametrize("resize", ["squash", "shortest"])
def test_batched_uint8_preprocessing_equals_the_open_clip_transform(resize):
    """Workers hand over resized uint8 pixels; ToTensor + Normalize then run once per batch."""
    import torch
    from PIL import Image

    from harmosearch.model.encoder import load_encoder

    encoder = load_encoder(
        load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "encoder.resize": resize})
    )
    from harmosearch.model.encoder import pixels_from_uint8, split_transform

    split = split_transform(encoder.transform)
    assert split is not None
    geometry, (mean, std) = split
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in [(50, 40), (33, 90)]]
    stacked = torch.from_numpy(np.stack([np.asarray(geometry(p)) for p in pictures]))
    fast = pixels_from_uint8(stacked, mean, std)
    slow = torch.stack([encoder.transform(p) for p in pictures])
    assert torch.allclose(fast, slow, atol=1e-6)


def test_jpeg_draft_decoding_keeps_the_full_oriented_size(tmp_path):
    from PIL import Image

    from harmosearch.media.formats import open_still

    rng = np.random.default_rng(1)
    smooth = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    picture = Image.fromarray(smooth).resize((800, 600), Image.BILINEAR)
    exif = picture.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    picture.save(tmp_path / "photo.jpg", quality=95, exif=exif)
    full, width, height = open_still(tmp_path / "photo.jpg")
    small, small_width, small_height = open_still(tmp_path / "photo.jpg", min_side=112)
    assert (width, height) == (small_width, small_height) == full.size == (600, 800)
    assert min(small.size) >= 112 and small.width < full.width  # decoded at a reduced scale
    # The same picture either way: compare after bringing both to the small size.
    reference = np.asarray(full.resize(small.size, Image.BILINEAR), dtype=np.float32)
    assert np.abs(np.asarray(small, dtype=np.float32) - reference).mean() < 4.0


def test_encoding_in_worker_processes_equals_encoding_in_the_main_process(photos, tmp_path, test_encoder, monkeypatch):
    """On CPU the workers may run the model themselves (one thread each); the index is the same."""
    from dataclasses import replace

    from harmosearch.indexing import encode as pipeline
    from harmosearch.indexing.encode import encode_in_workers

    main_pid, encode = os.getpid(), pipeline._BatchJob.encode

    def encode_elsewhere(self, batch):
        if self.encode_here and os.getpid() == main_pid:
            raise AssertionError("the main process encoded a batch meant for the workers")
        return encode(self, batch)

    monkeypatch.setattr(pipeline._BatchJob, "encode", encode_elsewhere)

    base = replace(CONFIG, index=replace(CONFIG.index, workers=2))
    in_main = replace(base, index=replace(base.index, encode_in="main"))
    in_workers = replace(base, index=replace(base.index, encode_in="workers"))
    assert encode_in_workers(replace(base.index, encode_in="auto"), "cpu", 12)
    assert not encode_in_workers(replace(base.index, encode_in="auto"), "cuda", 12)
    assert not encode_in_workers(in_main.index, "cpu", 12)
    a = build_index(photos, tmp_path / "a", in_main, encoder=test_encoder)
    b = build_index(photos, tmp_path / "b", in_workers, encoder=test_encoder)
    assert a.encoded == b.encoded == 12
    assert_same_index(tmp_path / "a", tmp_path / "b")
