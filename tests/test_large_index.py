"""Large indexes: the index policy from 10k to 1B vectors, sharded and memory-mapped FAISS files,
exact rescoring and deletions, each checked against exact search on synthetic vectors."""

from pathlib import Path

import faiss
import numpy as np
import pytest

from harmosearch.config import Config, SearchConfig, load_config
from harmosearch.search import Index
from harmosearch.store import (
    IndexReader,
    ShardedIndex,
    ann,
    build_faiss,
    build_shards,
    choose_index_type,
    rescore_exact,
    search_vectors,
    tune,
    verify,
    write_generation,
)

from .fakes import FakeEncoder
from .test_search import SCENES, make_data


def clustered(n, dim, seed, clusters=50):
    """Unit vectors around random centres, rounded to float16 as harmosearch stores them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    data = centres[rng.integers(clusters, size=n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = data[rng.integers(n, size=20)] + 0.05 * rng.standard_normal((20, dim)).astype(np.float32)
    return data.astype(np.float16), queries.astype(np.float32)


def exact_top(data, queries, k, allowed=None):
    """Brute force: every stored vector scored, the k best ids per query (ties to the lower id)."""
    scores = np.asarray(data, np.float32) @ queries.T
    if allowed is not None:
        scores[~allowed] = -np.inf
    return [list(np.lexsort((np.arange(len(data)), -scores[:, j]))[:k]) for j in range(len(queries))]


def recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])


def test_the_policy_names_an_index_for_every_size_that_faiss_builds():
    assert choose_index_type(10_000, "auto", 200_000, 512) == "SQfp16"
    assert choose_index_type(500_000, "auto", 200_000, 512) == "IVF2828,SQ8"
    assert choose_index_type(10_000_000, "auto", 200_000, 128) == "IVF4096,PQ32"
    assert choose_index_type(100_000_000, "auto", 200_000, 512) == "IVF16384_HNSW32,PQ64"
    assert choose_index_type(1_000_000_000, "auto", 200_000, 768) == "IVF32768_HNSW32,PQ64"
    assert choose_index_type(3_000_000, "auto", 200_000, 100) == "IVF2048,PQ25"  # a PQ size that divides d
    # HNSW only when its graph fits the memory allowed: 1M x (128 + 264) bytes is 374 MB.
    assert choose_index_type(1_000_000, "auto", 200_000, 128, hnsw_memory_mb=400) == "HNSW32,SQ8"
    assert choose_index_type(1_000_000, "auto", 200_000, 128, hnsw_memory_mb=300) == "IVF4000,SQ8"
    assert choose_index_type(10_000_000, "IVF1024,Flat", 200_000, 128) == "IVF1024,Flat"
    for n, dim in ((10_000_000, 128), (100_000_000, 512), (1_000_000_000, 768), (3_000_000, 100)):
        index = faiss.index_factory(dim, choose_index_type(n, "auto", 200_000, dim), faiss.METRIC_INNER_PRODUCT)
        assert index.d == dim and index.code_size <= 64


@pytest.mark.parametrize(
    "index_type", ["SQfp16", "HNSW32,SQ8", "IVF32,SQ8", "IVF32,PQ8", "IVF64_HNSW32,PQ8", "IVF32,PQ8x4fs"]
)
def test_every_index_type_rescored_from_stored_vectors_finds_the_exact_top_10(index_type):
    """Each family the policy picks, at a size this machine builds in a moment: 200 candidates
    from FAISS, rescored exactly from the float16 vectors, hold the exact top 10."""
    data, queries = clustered(6000, 32, seed=1)
    index = build_faiss(data, index_type)
    tune(index, nprobe=8, ef_search=64)
    _, candidates = search_vectors(index, queries, 200)
    scores, ids = rescore_exact(queries, candidates, data, 10)
    truth = exact_top(data, queries, 10)
    assert recall(ids, truth) >= 0.97
    np.testing.assert_allclose(
        scores[:, 0],
        [float(data[t[0]].astype(np.float32) @ q) for t, q in zip(truth, queries, strict=True)],
        rtol=1e-5,
        atol=1e-5,
    )
    if index_type == "SQfp16":
        assert [list(row) for row in ids] == truth


def test_rescoring_scores_only_the_candidates_and_pads_missing_ones():
    data, queries = clustered(300, 16, seed=2)
    candidates = np.array([[5, 7, 7, -1, 200], [-1, -1, -1, -1, -1]])
    scores, ids = rescore_exact(queries[:2], candidates, data, 4)
    by_hand = sorted(((float(data[i].astype(np.float32) @ queries[0]), i) for i in (5, 7, 200)), reverse=True)
    assert list(ids[0]) == [i for _, i in by_hand] + [-1] and list(ids[1]) == [-1] * 4
    np.testing.assert_allclose(scores[0, :3], [s for s, _ in by_hand], rtol=1e-6)
    assert np.isneginf(scores[0, 3]) and np.isneginf(scores[1]).all()


@pytest.mark.parametrize("index_type", ["SQfp16", "IVF16,SQ8"])
def test_shards_searched_together_equal_one_index_with_and_without_a_selector(index_type):
    """Shards trained once share their quantizers, so shards merged hold what one index holds."""
    data, queries = clustered(2500, 16, seed=3)
    shards = list(build_shards(data, index_type, 700))
    assert [s.ntotal for s in shards] == [700, 700, 700, 400]
    sharded, whole = ShardedIndex(shards), build_faiss(data, index_type)
    tune(sharded, 16, 64)
    tune(whole, 16, 64)
    assert all(faiss.extract_index_ivf(s).nprobe == 16 for s in shards) if "IVF" in index_type else True
    (a_scores, a_ids), (b_scores, b_ids) = search_vectors(sharded, queries, 10), search_vectors(whole, queries, 10)
    assert (a_ids == b_ids).all()
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-5, atol=1e-6)
    allowed = np.random.default_rng(4).random(len(data)) < 0.1
    _, ids = search_vectors(sharded, queries, 10, allowed)
    assert all(allowed[i] for i in ids.ravel() if i >= 0)
    if index_type == "SQfp16":
        assert [list(row) for row in ids] == exact_top(data, queries, 10, allowed)


def generation(tmp_path, data, previous=None, **index):
    """write_generation with the fake encoder's identity, for vectors of data's dimension."""
    identity = {**FakeEncoder().identity.to_dict(), "embed_dim": data.region_vectors.shape[1]}
    config = load_config(overrides={f"index.{k}": v for k, v in index.items()})
    return write_generation(
        tmp_path / "idx", data, identity, config.to_dict(), config.index.index_type, tmp_path, previous
    )


def test_a_sharded_index_is_written_verified_and_searched_like_a_whole_one(tmp_path):
    data = make_data(SCENES)
    manifest = generation(tmp_path / "a", data, shard_size=5)
    assert isinstance(manifest["files"]["region_index"], list) and len(manifest["files"]["region_index"]) > 1
    assert verify(tmp_path / "a" / "idx") == []
    assert isinstance(IndexReader(tmp_path / "a" / "idx").region_index, ShardedIndex)
    generation(tmp_path / "b", data)
    run = Config(search=SearchConfig(box_margin=0.0))
    sharded = Index(tmp_path / "a" / "idx", run, encoder=FakeEncoder())
    whole = Index(tmp_path / "b" / "idx", run, encoder=FakeEncoder())
    for text in ("a red circle", "red circle near a blue star"):
        assert [r.to_dict() for r in sharded.search(text, k=5).results] == [
            r.to_dict() for r in whole.search(text, k=5).results
        ]
    again = generation(tmp_path / "a", data, previous=manifest)  # the shards of generation 1 stay for its readers
    assert all((tmp_path / "a" / "idx" / name).is_file() for name in manifest["files"]["region_index"])
    generation(tmp_path / "a", data, previous=again)
    assert not any((tmp_path / "a" / "idx" / name).exists() for name in manifest["files"]["region_index"])


def mapped_files():
    """Files this process has memory-mapped (Linux)."""
    with open("/proc/self/maps") as f:
        return {line.split(maxsplit=5)[5].strip() for line in f if len(line.split(maxsplit=5)) == 6}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the mappings from /proc (Linux)")
@pytest.mark.parametrize("index_type", ["SQfp16", "IVF16,SQ8", "IVF16,PQ4", "sharded"])
def test_large_files_are_memory_mapped_and_find_the_exact_top_10(tmp_path, monkeypatch, index_type):
    """An index file above MMAP_ABOVE stays on disk, mapped into memory (so it may be larger than
    RAM: the kernel pages its lists in and out); searched and rescored, it finds what exact search
    finds, and the same candidates as the file read into memory."""
    data, queries = clustered(3000, 16, seed=5)
    options = {"index_type": "SQfp16", "shard_size": 1000} if index_type == "sharded" else {"index_type": index_type}
    generation(tmp_path, vectors_as_data(data), **options)
    read = IndexReader(tmp_path / "idx")
    monkeypatch.setattr(ann, "MMAP_ABOVE", 0)
    mapped = IndexReader(tmp_path / "idx")
    names = mapped.manifest["files"]["region_index"]
    assert {str(tmp_path / "idx" / name) for name in ([names] if isinstance(names, str) else names)} <= mapped_files()
    for reader in (read, mapped):
        tune(reader.region_index, 16, 64)
    _, candidates = search_vectors(mapped.region_index, queries, 100)
    assert (candidates == search_vectors(read.region_index, queries, 100)[1]).all()
    _, ids = rescore_exact(queries, candidates, mapped.region_vectors, 10)
    truth = exact_top(data, queries, 10)
    if index_type in ("SQfp16", "sharded"):
        assert [list(row) for row in ids] == truth
    else:
        assert recall(ids, truth) >= 0.95


@pytest.mark.parametrize(
    "index_type", ["Flat", "SQfp16", "HNSW32,SQ8", "IVF8,SQ8", "IVF8,PQ4", "IVF8,PQ4x4fs", "sharded"]
)
def test_deleted_rows_leave_every_index_type(tmp_path, index_type):
    """A generation keeps only the rows that remain: FAISS returns no id of a removed row, and
    rescored results equal exact search over the kept vectors."""
    data, queries = clustered(1200, 16, seed=6)
    kept = np.random.default_rng(7).random(len(data)) < 0.6
    options = {"index_type": "SQfp16", "shard_size": 300} if index_type == "sharded" else {"index_type": index_type}
    first = generation(tmp_path, vectors_as_data(data), **options)
    generation(tmp_path, vectors_as_data(data[kept]), previous=first, **options)
    reader = IndexReader(tmp_path / "idx")
    assert reader.region_index.ntotal == int(kept.sum()) and verify(tmp_path / "idx") == []
    tune(reader.region_index, 8, 64)
    _, candidates = search_vectors(reader.region_index, queries, 100)
    assert candidates.max() < kept.sum()
    _, ids = rescore_exact(queries, candidates, reader.region_vectors, 10)
    truth = exact_top(data[kept], queries, 10)
    assert recall(ids, truth) >= (1.0 if index_type in ("Flat", "SQfp16", "sharded") else 0.95)


def vectors_as_data(vectors):
    """An IndexData with one image per region vector (the region index is what is measured)."""
    from harmosearch.store import IndexData

    n = len(vectors)
    images = {
        "path": np.array([f"{i:05d}.png" for i in range(n)], dtype=object),
        "size": np.ones(n, np.int64),
        "mtime_ns": np.zeros(n, np.int64),
        "sha256": np.array([f"{i:064x}" for i in range(n)], dtype=object),
        "width": np.full(n, 10, np.int32),
        "height": np.full(n, 10, np.int32),
    }
    box = {c: np.zeros(n, np.float32) for c in ("x0", "y0", "nx0", "ny0")}
    box |= {c: np.full(n, 10, np.float32) for c in ("x1", "y1")} | {c: np.ones(n, np.float32) for c in ("nx1", "ny1")}
    regions = {"image_id": np.arange(n, dtype=np.int32), **box, "scale": np.ones(n, np.float32)}
    return IndexData(images, regions, vectors.astype(np.float32), vectors.astype(np.float32))
