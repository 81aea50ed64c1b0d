"""Stored float16 rows read back as float32 (store/vectors.py), against numpy's own cast."""

import threading

import numpy as np

from harmosearch.store import vectors as module
from harmosearch.store.vectors import reading_once, rows_as_float32


def stored(tmp_path, n=50, dim=8, seed=0):
    array = np.lib.format.open_memmap(tmp_path / f"v{seed}.npy", mode="w+", dtype=np.float16, shape=(n, dim))
    array[:] = np.random.default_rng(seed).standard_normal((n, dim))
    return array


def test_rows_are_the_cast_written_out_and_read_once_within_a_scope(tmp_path):
    vectors = stored(tmp_path)
    rows = np.array([4, 1, 1, 30])
    want = np.asarray(vectors[rows]).astype(np.float32)
    outside = rows_as_float32(vectors, rows)
    np.testing.assert_array_equal(outside, want)
    assert rows_as_float32(vectors, rows) is not outside  # outside a scope nothing is kept
    with reading_once():
        got = rows_as_float32(vectors, rows)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.float32 and not got.flags.writeable
        assert rows_as_float32(vectors, rows.copy()) is got  # the same rows again: kept
        assert rows_as_float32(vectors, rows[:3]) is not got  # other rows: read anew
        with reading_once():  # a scope inside another keeps the outer one's reads
            assert rows_as_float32(vectors, rows) is got
        assert rows_as_float32(vectors, rows) is got
    with reading_once():  # a new scope: nothing of the last one
        assert rows_as_float32(vectors, rows) is not got


def test_another_array_with_the_same_rows_is_read_anew(tmp_path):
    first, second = stored(tmp_path, seed=1), stored(tmp_path, seed=2)
    rows = np.arange(10)
    with reading_once():
        a, b = rows_as_float32(first, rows), rows_as_float32(second, rows)
    np.testing.assert_array_equal(b, np.asarray(second[rows], np.float32))
    assert not np.array_equal(a, b)


def test_only_the_last_reads_are_kept_and_within_their_bytes(tmp_path, monkeypatch):
    vectors = stored(tmp_path)
    with reading_once():
        reads = [rows_as_float32(vectors, np.array([i])) for i in range(module.KEPT_READS + 1)]
        assert rows_as_float32(vectors, np.array([module.KEPT_READS])) is reads[-1]
        assert rows_as_float32(vectors, np.array([0])) is not reads[0]  # the oldest was let go
        monkeypatch.setattr(module, "KEPT_BYTES", 100)
        big = rows_as_float32(vectors, np.arange(20))  # 640 bytes: over the budget, not kept
        assert rows_as_float32(vectors, np.arange(20)) is not big


def test_each_thread_keeps_its_own_reads(tmp_path):
    vectors = stored(tmp_path)
    rows = np.array([2, 3])
    theirs = []

    def read_in_a_scope():
        with reading_once():
            theirs.append(rows_as_float32(vectors, rows))

    with reading_once():
        mine = rows_as_float32(vectors, rows)
        worker = threading.Thread(target=read_in_a_scope)
        worker.start()
        worker.join()
    assert theirs[0] is not mine
    np.testing.assert_array_equal(theirs[0], mine)


def test_products_with_query_vectors_are_kept_for_the_same_rows_and_queries(tmp_path):
    from harmosearch.store.vectors import rows_dot

    vectors = stored(tmp_path)
    rows = np.array([3, 9, 9, 0])
    queries = np.random.default_rng(4).standard_normal((2, 8)).astype(np.float32)
    want = np.asarray(vectors[rows], np.float32) @ queries.T
    np.testing.assert_allclose(rows_dot(vectors, rows, queries), want, rtol=1e-6)
    with reading_once():
        got = rows_dot(vectors, rows, queries)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert not got.flags.writeable
        assert rows_dot(vectors, rows.copy(), queries.copy()) is got
        assert rows_dot(vectors, rows, queries[:1]) is not got  # other queries
        assert rows_dot(vectors, rows[::-1], queries) is not got  # other rows
    with reading_once():
        assert rows_dot(vectors, rows, queries) is not got
