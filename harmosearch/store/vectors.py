"""Stored vectors read back for scoring: rows of a float16 array (a memory map too) as float32."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

KEPT_READS = 4  # the last reads kept within reading_once
KEPT_BYTES = 64 << 20  # their most bytes together


class _Kept(threading.local):
    """A thread's last reads within reading_once, newest first: (the array, its rows, the float32
    rows), and the last products of reads with query vectors: (the array, its rows, the queries,
    the product); None outside it."""

    reads: list[tuple[Any, np.ndarray, np.ndarray]] | None = None
    products: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]] | None = None


_kept = _Kept()


@contextmanager
def reading_once() -> Iterator[None]:
    """Within it, rows_as_float32 gives the same rows of the same array once read again. Scoring
    a query reads its candidates' region rows more than once (to rank them, to count a lexeme's
    instances in them, for its --not phrases), and gathering and casting float16 rows costs
    more than scoring them, so the reads are kept, and so are their products with the query's
    vectors (rows_dot) (about 2.5 ms of a 25 ms query at 1M regions, numpy casting float16 an
    element at a time: benchmarks/counting_cost.py). The reads are let go on leaving, so no
    query sees another's."""
    outer = _kept.reads, _kept.products
    if outer[0] is None:
        _kept.reads, _kept.products = [], []
    try:
        yield
    finally:
        _kept.reads, _kept.products = outer


def rows_as_float32(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """vectors[rows] as float32; within reading_once, a read kept (read-only) and given again
    for the same rows of the same array (a kept read holds its array, so no other array can
    take its place in memory and be taken for it)."""
    reads = _kept.reads
    if reads is None:
        return np.asarray(vectors[rows], dtype=np.float32)
    rows = np.asarray(rows)
    for at, (array, read, out) in enumerate(reads):
        if array is vectors and read.shape == rows.shape and np.array_equal(read, rows):
            reads.insert(0, reads.pop(at))
            return out
    out = np.asarray(vectors[rows], dtype=np.float32)
    out.flags.writeable = False
    reads.insert(0, (vectors, rows.copy(), out))
    del reads[KEPT_READS:]
    while sum(r[2].nbytes for r in reads) > KEPT_BYTES:
        reads.pop()
    return out


def rows_dot(vectors: np.ndarray, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """rows_as_float32(vectors, rows) @ queries.T [len(rows), Q] (queries [Q, D] float32);
    within reading_once, kept (read-only) and given again for the same rows and queries: ranking
    and counting score a query's candidates for the same lexemes."""
    products = _kept.products
    if products is None:
        return rows_as_float32(vectors, rows) @ queries.T
    rows, queries = np.asarray(rows), np.asarray(queries, dtype=np.float32)
    for array, read, asked, out in products:
        same_shapes = read.shape == rows.shape and asked.shape == queries.shape
        if array is vectors and same_shapes and np.array_equal(asked, queries) and np.array_equal(read, rows):
            return out
    out = rows_as_float32(vectors, rows) @ queries.T
    out.flags.writeable = False
    products.insert(0, (vectors, rows.copy(), queries.copy(), out))
    del products[KEPT_READS:]
    return out
