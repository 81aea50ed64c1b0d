"""Work in batches and stages: stills are batched and each video is a batch of its own; the chunks
an interrupted build leaves behind keep each picture (and each video frame with its time), are
resumed only by the same model, and a damaged one is removed and named; assembly copies each
vector from where it lies."""

import numpy as np
import pytest

from harmosearch.errors import IndexStoreError
from harmosearch.indexing import build_index
from harmosearch.media.scan import scan

from .test_indexing import CONFIG, assert_same_index


def test_staged_chunks_keep_each_video_frame_with_its_time(tmp_path):
    from harmosearch.indexing.encode import Encoded
    from harmosearch.store import read_staged, save_chunk, staged_pictures

    rng = np.random.default_rng(0)

    def encoded(seconds, regions):
        return Encoded(
            64,
            48,
            rng.standard_normal(8).astype(np.float32),
            rng.uniform(0, 40, (regions, 4)).astype(np.float32),
            np.full(regions, 0.5, np.float32),
            rng.standard_normal((regions, 8)).astype(np.float32),
            frame_time=seconds,
        )

    records = [("still", encoded(None, 2)), ("video", encoded(0.0, 1)), ("video", encoded(2.5, 3))]
    save_chunk(tmp_path, 0, records)
    loaded = staged_pictures(tmp_path)
    assert [e.frame_time for e in loaded["video"]] == [0.0, 2.5] and loaded["still"][0].frame_time is None
    global_vectors, region_vectors = read_staged(tmp_path / "chunk_000000.npz")
    for (_, original), again in zip(records, [*loaded["still"], *loaded["video"]], strict=True):
        np.testing.assert_array_equal(again.boxes, original.boxes)
        np.testing.assert_allclose(global_vectors[again.number], original.global_vector, atol=2e-3)
        vectors = region_vectors[again.first : again.first + len(again.boxes)]
        np.testing.assert_allclose(vectors, original.vectors, atol=2e-3)  # stored in float16


def test_stills_are_batched_and_each_video_is_a_batch_of_its_own():
    from pathlib import Path

    from harmosearch.indexing.encode import file_batches

    paths = [Path(p) for p in ("a.jpg", "b.mp4", "c.png", "d.heic", "e.MOV", "f.jpg")]
    assert file_batches(paths, 2) == [[1], [0, 2], [4], [3, 5]]


def test_assembly_copies_each_vector_from_where_it_lies_without_holding_them(tmp_path, monkeypatch):
    """An update's vectors are copied from staged chunks (a chunk read once) and the old
    generation's files into memory-mapped float16 files: equal to stacking every image's vectors
    in memory (the obvious reference), while the Python heap holds about one chunk at a time."""
    import tracemalloc
    from types import SimpleNamespace

    from harmosearch.indexing import assemble
    from harmosearch.indexing.assemble import _vectors
    from harmosearch.indexing.encode import Encoded
    from harmosearch.store import read_staged, save_chunk, staged_pictures

    rng = np.random.default_rng(5)
    dim = 512
    old_counts = rng.integers(0, 100, 100)
    old_starts = np.concatenate([[0], np.cumsum(old_counts)])
    np.save(tmp_path / "g.npy", rng.standard_normal((100, dim)).astype(np.float16))
    np.save(tmp_path / "r.npy", rng.standard_normal((old_starts[-1], dim)).astype(np.float16))
    old = SimpleNamespace(
        global_vectors=np.load(tmp_path / "g.npy", mmap_mode="r"),
        region_vectors=np.load(tmp_path / "r.npy", mmap_mode="r"),
    )
    stage = tmp_path / "stage"
    stage.mkdir()
    for chunk in range(20):
        records = []
        for picture in range(5):
            n = int(rng.integers(0, 100))
            vectors = rng.standard_normal((n, dim)).astype(np.float32)
            boxes = np.tile(np.float32([0, 0, 8, 8]), (n, 1))
            item = Encoded(64, 64, rng.standard_normal(dim).astype(np.float32), boxes, np.ones(n, np.float32), vectors)
            records.append((f"sha{chunk}-{picture}", item))
        save_chunk(stage, chunk, records)
    staged = [p for pictures in staged_pictures(stage).values() for p in pictures]
    # New and kept images interleaved, as sorting by path mixes them.
    order = rng.permutation([("new", i) for i in range(len(staged))] + [("old", i) for i in range(100)])
    sources, counts, want_global, want_regions = [], [], [], []
    for kind, i in order:
        i = int(i)
        if kind == "old":
            sources.append((None, i, int(old_starts[i])))
            counts.append(int(old_counts[i]))
            want_global.append(old.global_vectors[i])
            want_regions.append(old.region_vectors[old_starts[i] : old_starts[i + 1]])
        else:
            p = staged[i]
            sources.append((p.chunk, p.number, p.first))
            counts.append(len(p.boxes))
            with np.load(p.chunk) as z:
                want_global.append(z["global"][p.number])
                want_regions.append(z["vectors"][p.first : p.first + len(p.boxes)])
    want = np.concatenate(want_regions)
    largest = max(p.chunk.stat().st_size for p in staged)
    reads = []
    monkeypatch.setattr(assemble, "read_staged", lambda chunk: reads.append(chunk) or read_staged(chunk))
    tracemalloc.start()
    got_global, got_regions = _vectors(sources, np.array(counts), old, dim, stage)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(got_regions, np.memmap) and got_regions.dtype == np.float16
    assert np.array_equal(got_global, np.stack(want_global)) and np.array_equal(got_regions, want)
    assert sorted(reads) == sorted({p.chunk for p in staged})  # each chunk read once
    # Reading one chunk holds its bytes about twice (the zip member, then the array).
    assert peak < 3 * largest < want.nbytes / 4, f"assembly held {peak / 1e6:.2f} MB; a chunk is {largest / 1e6:.2f} MB"


def test_a_damaged_staged_batch_is_removed_and_named(tmp_path):
    """A staged chunk whose vectors fail their checksum is removed, so that the next run encodes
    its images again, and the error names it in one line."""
    from harmosearch.indexing.assemble import _vectors
    from harmosearch.indexing.encode import Encoded
    from harmosearch.store import save_chunk, staged_pictures

    vectors = np.ones((3, 8), np.float32)
    save_chunk(
        tmp_path, 0, [("a", Encoded(8, 8, np.ones(8, np.float32), np.zeros((3, 4), np.float32), np.ones(3), vectors))]
    )
    chunk = tmp_path / "chunk_000000.npz"
    data = bytearray(chunk.read_bytes())
    at = data.index(np.float16(1.0).tobytes() * 24)  # the region vectors' payload
    data[at] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (picture,) = staged_pictures(tmp_path)["a"]  # the table members are intact
    with pytest.raises(IndexStoreError, match=r"^staged batch chunk_000000\.npz is damaged \(.*\); it was removed"):
        _vectors([(chunk, picture.number, picture.first)], np.array([3]), None, 8, tmp_path)
    assert not chunk.exists()


def test_staged_work_of_another_model_is_not_resumed(photos, tmp_path, test_encoder):
    """Chunks that an interrupted run staged with other encoder settings or other regions (here:
    other regions) are dropped, not mixed into this index: nothing is resumed, and the index
    equals a fresh build."""
    from harmosearch.indexing.encode import Encoded
    from harmosearch.store import claim_staging, save_chunk, sha256_file

    entries, _ = scan(photos, False, ())
    made_by = {"encoder": test_encoder.identity.to_dict(), "regions": CONFIG.to_json()["regions"]}
    stage = claim_staging(tmp_path / "idx", {**made_by, "regions": {**made_by["regions"], "max_regions": 3}})
    dim = test_encoder.identity.embed_dim
    wrong = Encoded(8, 8, np.ones(dim, np.float32), np.zeros((1, 4), np.float32), np.ones(1), np.ones((1, dim)))
    save_chunk(stage, 0, [(sha256_file(e.absolute), wrong) for e in entries[:4]])
    report = build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    assert report.resumed == 0 and report.encoded == len(entries)
    build_index(photos, tmp_path / "fresh", CONFIG, encoder=test_encoder)
    assert_same_index(tmp_path / "idx", tmp_path / "fresh")
    # Work of the same making is kept for the run to resume (the interrupted-run tests resume it).
    save_chunk(claim_staging(tmp_path / "again", made_by), 0, [("x", wrong)])
    assert [c.name for c in claim_staging(tmp_path / "again", made_by).glob("chunk_*.npz")] == ["chunk_000000.npz"]


def test_staged_high_detail_work_of_other_proposal_constants_is_not_resumed(photos, tmp_path, test_encoder):
    """At high detail the regions also depend on the version's proposal constants (how many
    regions it keeps beside the cap, among others): work staged without them, as a version that
    kept twice the cap staged it, is dropped, not mixed with regions kept today's way."""
    from harmosearch.indexing.encode import Encoded
    from harmosearch.store import claim_staging, save_chunk, sha256_file

    high = CONFIG.with_values({"regions.detail": "high"})
    entries, _ = scan(photos, False, ())
    older = {"encoder": test_encoder.identity.to_dict(), "regions": high.to_json()["regions"]}
    dim = test_encoder.identity.embed_dim
    wrong = Encoded(8, 8, np.ones(dim, np.float32), np.zeros((1, 4), np.float32), np.ones(1), np.ones((1, dim)))
    save_chunk(claim_staging(tmp_path / "idx", older), 0, [(sha256_file(e.absolute), wrong) for e in entries[:2]])
    report = build_index(photos, tmp_path / "idx", high, encoder=test_encoder)
    assert report.resumed == 0 and report.encoded == len(entries)
