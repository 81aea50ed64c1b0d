"""FAISS, the approximate nearest neighbour (ANN) part of an index: which index type to build,
whether FAISS can build a requested one, building it (in shards, on the GPUs when faiss has any),
opening it from disk, tuning it, searching it (with ID selectors) and rescoring its candidates
exactly from the stored vectors. GPU resources come from `model.device`, the only module that
knows about them."""

from __future__ import annotations

import math
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import IndexStoreError
from harmosearch.model.device import faiss_module, faiss_to_cpu, faiss_to_gpu
from harmosearch.store.vectors import rows_as_float32

# The index policy (choose_index_type): IVF with SQ8 codes (d + 8 bytes a vector) up to this many
# vectors, PQ codes (at most 64 + 8 bytes) from here on.
IVF_SQ8_BELOW = 2_000_000
HNSW_BYTES = 8 * 32 + 8  # HNSW32 links per vector (bottom layer: 2 x 32 ids of 4 bytes), plus upper layers
HNSW_COARSE_FROM = 16_384  # IVF lists from which vectors find their list through an HNSW graph
ADD_BATCH = 262_144  # vectors converted to float32 and added to FAISS at a time
MMAP_ABOVE = 256 * 2**20  # FAISS files larger than this are memory-mapped when opened, not read


def choose_index_type(n: int, requested: str, exact_below: int, dim: int = 512, hnsw_memory_mb: int = 0) -> str:
    """index_factory string for n vectors of `dim` dimensions (`requested` unless "auto"):

    - below exact_below: SQfp16, exact. harmosearch stores its vectors in float16, so float16
      codes hold them without loss: as exact as Flat with half the memory, and FAISS scans it
      about twice as fast (half the bytes to read).
    - HNSW32 over SQ8 codes when its graph fits in hnsw_memory_mb (0: never): the fastest
      search, but slow to build on few cores, and about d + 264 bytes a vector.
    - below IVF_SQ8_BELOW: IVF with 4 sqrt(n) lists and SQ8 codes (d + 8 bytes a vector; recall@10
      0.98 at 1M vectors, nprobe 16).
    - above: IVF with 8-bit PQ codes of d/4 bytes, at most 64 (32 at 128-d: 40 bytes a vector
      with its id), and lists the power of two at or above sqrt(n), found through an HNSW graph
      from HNSW_COARSE_FROM lists on (assigning each vector would otherwise scan every centroid).
      PQ distances are coarse: candidates are rescored exactly from the stored float16 vectors
      (`rescore_exact`, and search's exact rescoring). 8-bit PQ keeps its lists in arrays that can be
      memory-mapped (MMAP_ABOVE), so such an index may be larger than RAM; 4-bit fast-scan PQ
      (PQ{m}x4fs: faster scans, lower recall at the same bytes) is read whole.
    Every type is trained on a sample (`training_sample`) and rebuilt from the kept vectors at
    every generation, so deletions hold for all of them."""
    if requested != "auto":
        return requested
    if n < exact_below:
        return "SQfp16"
    if hnsw_memory_mb and n * (dim + HNSW_BYTES) <= hnsw_memory_mb * 2**20:
        return "HNSW32,SQ8"
    if n < IVF_SQ8_BELOW:
        return f"IVF{int(4 * np.sqrt(n))},SQ8"
    nlist = 1 << math.ceil(math.log2(math.sqrt(n)))
    coarse = f"IVF{nlist}_HNSW32" if nlist >= HNSW_COARSE_FROM else f"IVF{nlist}"
    return f"{coarse},PQ{_pq_bytes(dim)}"


def _pq_bytes(dim: int) -> int:
    """Sub-quantizers (one byte each) of the PQ codes: d/4, at most 64, dividing d."""
    return next(m for m in range(max(1, min(dim // 4, 64)), 0, -1) if dim % m == 0)


def training_sample(vectors: np.ndarray, lists: int) -> np.ndarray:
    """The rows an index trains on, as float32: k-means needs a few dozen points per list (and PQ
    a few thousand in all), not every vector; a fixed sample keeps builds reproducible."""
    cap = max(64 * lists, 100_000)
    if len(vectors) <= cap:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), size=cap, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


# Tried in a child process: some FAISS checks end the process instead of raising (an assertion
# aborts; "HNSW1" crashes), and a bad --index-type must end in a message, not a crash. Exit code
# 3 and a line on stderr: FAISS refused the string, or built an index that cannot search (an IVF
# without lists; a search that fails once vectors are in). Training or adding too few random
# vectors may fail where the real data would not, so those errors are left to the real build.
_FAISS_TRIAL = """
import sys
import faiss
import numpy as np
index_type, dim = sys.argv[1], int(sys.argv[2])
try:
    index = faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
except RuntimeError as exc:
    print(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, file=sys.stderr)
    sys.exit(3)
ivf = faiss.try_extract_index_ivf(index)
if ivf is not None and ivf.nlist < 1:
    print("an IVF index needs at least one list (IVF1 or more)", file=sys.stderr)
    sys.exit(3)
vectors = np.random.default_rng(0).standard_normal((100, dim)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
try:
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
except RuntimeError:
    sys.exit(0)  # too few vectors to train or add here, or no plain add: the real build decides
try:
    index.search(vectors[:2], 5)
except RuntimeError as exc:  # it holds vectors but cannot search them
    print(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, file=sys.stderr)
    sys.exit(3)
"""
INDEX_TYPE_HINT = "give an index_factory string such as SQfp16, Flat, HNSW32 or IVF1024,SQ8"


def faiss_reason(message: str) -> str:
    """FAISS's own words, without the C++ function and source location its messages start with."""
    text = message.strip().splitlines()[0] if message.strip() else "FAISS refused it"
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", text)
    if text.startswith("could not parse index string"):
        return "FAISS cannot parse it"
    check = re.match(r"Error: '(.*)' failed(?:: (.*))?$", text)
    if check:
        return check.group(2) or f"FAISS's check {check.group(1)} failed"
    return text


def check_index_type(index_type: str, dim: int) -> None:
    """Raise IndexStoreError when FAISS cannot build `index_type` for `dim`-d vectors, or builds
    one that cannot search them (tried in a child process on random vectors; about a second)."""
    import subprocess
    import sys

    faiss_module()  # a broken faiss install is said as such, not as a bad index type
    try:
        trial = subprocess.run(
            [sys.executable, "-c", _FAISS_TRIAL, index_type, str(dim)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return  # slow to train is not wrong: the real build decides
    if trial.returncode == 3:
        raise IndexStoreError(f"bad --index-type {index_type!r}: {faiss_reason(trial.stderr)}; {INDEX_TYPE_HINT}")
    if trial.returncode < 0:
        name = signal.Signals(-trial.returncode).name
        raise IndexStoreError(
            f"bad --index-type {index_type!r}: FAISS crashed building it for {dim}-d vectors ({name}); "
            f"{INDEX_TYPE_HINT}"
        )


def build_faiss(vectors: np.ndarray, index_type: str) -> Any:
    """One FAISS index of `index_type` over `vectors` (any float array, a float16 memory map too)."""
    return next(build_shards(vectors, index_type, 0))


def build_shards(vectors: np.ndarray, index_type: str, shard_size: int) -> Iterator[Any]:
    """FAISS indexes over consecutive runs of `shard_size` rows (0: one index), trained once on
    a sample of all rows so that they share their quantizers; yielded one at a time, so only one
    is in memory. Training and adding run on the GPUs when faiss has any."""
    try:
        yield from _build_shards(vectors, index_type, shard_size)
    except RuntimeError as exc:
        raise IndexStoreError(
            f"cannot build a FAISS {index_type!r} index of {len(vectors)} vectors: {faiss_reason(str(exc))}; "
            f"{INDEX_TYPE_HINT}"
        ) from None


def _build_shards(vectors: np.ndarray, index_type: str, shard_size: int) -> Iterator[Any]:
    faiss = faiss_module()

    empty = faiss.index_factory(vectors.shape[1], index_type, faiss.METRIC_INNER_PRODUCT)
    if not empty.is_trained:
        ivf = faiss.try_extract_index_ivf(empty)
        lists = ivf.nlist if ivf is not None else 1
        # Polysemous codes only serve Hamming-filtered PQ search, which is not used here, and
        # training them takes longer than all the rest (15 s for PQ4 on 1,200 vectors).
        for part in (empty, ivf):
            if hasattr(part, "do_polysemous_training"):
                part.do_polysemous_training = False
        if len(vectors) < lists:
            raise IndexStoreError(
                f"index type {index_type!r} needs at least {lists} vectors to train, there are {len(vectors)}; "
                "use Flat or fewer IVF lists"
            )
        trainer = faiss_to_gpu(empty)
        trainer.train(training_sample(vectors, lists))
        empty = faiss_to_cpu(trainer)
    size = shard_size or max(len(vectors), 1)
    starts = range(0, max(len(vectors), 1), size)
    for lo in starts:
        index = faiss.clone_index(empty) if len(starts) > 1 else empty
        rows = vectors[lo : lo + size]
        if len(rows):
            builder = faiss_to_gpu(index)
            for at in range(0, len(rows), ADD_BATCH):
                builder.add(np.ascontiguousarray(rows[at : at + ADD_BATCH], dtype=np.float32))
            index = faiss_to_cpu(builder)
        yield index


class ShardedIndex:
    """FAISS indexes over consecutive row ranges, searched as one: each shard's top k (with its
    slice of an ID selector), ids shifted by the shard's first row, merged by score."""

    def __init__(self, shards: list[Any]) -> None:
        self.shards = shards
        sizes = [int(shard.ntotal) for shard in shards]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.ntotal = int(self.offsets[-1])
        self.d = int(shards[0].d)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        faiss = faiss_module()

        scores, ids = [], []
        for shard, lo, hi in zip(self.shards, self.offsets[:-1], self.offsets[1:], strict=True):
            part_scores, part_ids = search_vectors(shard, queries, k, None if allowed is None else allowed[lo:hi])
            scores.append(part_scores)
            ids.append(np.where(part_ids >= 0, part_ids + lo, -1))
        return faiss.merge_knn_results(np.stack(scores), np.stack(ids), keep_max=True)


def to_gpus(index: Any, shard: bool) -> Any:
    """An opened index (or each of its shards) copied onto the GPUs (device.faiss_to_gpu)."""
    if isinstance(index, ShardedIndex):
        return ShardedIndex([faiss_to_gpu(part, shard, required=True) for part in index.shards])
    return faiss_to_gpu(index, shard, required=True)


def tune(index: Any, nprobe: int, ef_search: int) -> None:
    """Set the lists an IVF index probes and the candidates an HNSW graph keeps (every shard's)."""
    faiss = faiss_module()

    for part in index.shards if isinstance(index, ShardedIndex) else [index]:
        ivf = faiss.try_extract_index_ivf(part)
        if ivf is not None:
            ivf.nprobe = nprobe
            quantizer = getattr(faiss.downcast_index(ivf.quantizer), "hnsw", None)
            if quantizer is not None:
                quantizer.efSearch = max(ef_search, nprobe)  # the HNSW coarse quantizer must return nprobe lists
        hnsw = getattr(part, "hnsw", None)
        if hnsw is not None:
            hnsw.efSearch = ef_search


def search_vectors(
    index: Any, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of each query: (scores [nq, k], ids [nq, k]), -1 ids as padding.
    With `allowed` (bool per stored vector), only allowed ids are searched: FAISS skips the others
    through an ID selector, keeping the index's own nprobe / efSearch. RuntimeError from FAISS
    when the index type takes no selector (plain PQ, for one).

    A single query on a float32 Flat CPU index is scanned with one BLAS matrix-vector product
    over FAISS's own storage (ties to the lower id): FAISS scans one query without BLAS, about
    1.5 x slower. Batches of queries and every other index type are searched by FAISS.
    """
    faiss = faiss_module()

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if isinstance(index, ShardedIndex):
        return index.search(queries, k, allowed)
    if type(index) is not faiss.IndexFlatIP or index.ntotal == 0 or len(queries) != 1:
        if allowed is None:
            return index.search(queries, k)
        bits = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        return index.search(queries, k, params=_search_parameters(index, selector))
    n = index.ntotal
    stored = faiss.rev_swig_ptr(index.get_xb(), n * index.d).reshape(n, index.d)
    scores = stored @ queries[0]
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf).astype(np.float32)
        n = int(np.count_nonzero(allowed))
    top = min(k, n)
    if top == 0:
        return np.full((1, k), -np.inf, dtype=np.float32), np.full((1, k), -1, dtype=np.int64)
    part = np.argpartition(-scores, top - 1)[:top] if top < len(scores) else np.arange(top)
    part = part[np.lexsort((part, -scores[part]))]
    out_scores = np.full((1, k), -np.inf, dtype=np.float32)
    out_ids = np.full((1, k), -1, dtype=np.int64)
    out_ids[0, :top], out_scores[0, :top] = part, scores[part]
    return out_scores, out_ids


def _search_parameters(index: Any, selector: Any) -> Any:
    """FAISS search parameters with an ID selector and the index's own nprobe / efSearch (the
    parameters of a call replace what is set on the index)."""
    faiss = faiss_module()

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)


def rescore_exact(
    queries: np.ndarray, candidates: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among each query's candidate ids (-1: none), scored from the stored vectors
    (a float16 memory map: only the candidates' rows are read): (scores [nq, k], ids [nq, k]),
    padded with -inf and -1, ties to the lower id."""
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for j, (query, found) in enumerate(zip(queries, candidates, strict=True)):
        rows = np.unique(found[found >= 0])  # sorted: the map is read in order
        if not len(rows):
            continue
        scores = rows_as_float32(vectors, rows) @ np.asarray(query, dtype=np.float32)
        top = np.lexsort((rows, -scores))[:k]
        out_scores[j, : len(top)], out_ids[j, : len(top)] = scores[top], rows[top]
    return out_scores, out_ids


def open_faiss(root: Path, names: str | list[str]) -> Any:
    """The FAISS index stored in `names` (a list: shards, searched as one ShardedIndex). Files
    larger than MMAP_ABOVE in a folder whose name is UTF-8 are memory-mapped: IVF lists in arrays,
    flat and SQ codes are then read from disk as searches need them (other types are read whole)."""
    faiss = faiss_module()

    def read(name: str) -> Any:
        path = Path(root) / name
        if path.stat().st_size > MMAP_ABOVE and _utf8(path):
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        return _faiss_read(path)

    if isinstance(names, str):
        return read(names)
    return ShardedIndex([read(name) for name in names])


def _utf8(path: Path) -> bool:
    """Whether FAISS can open `path` by name (it takes names as UTF-8; memory-mapping needs one)."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# FAISS gets open Python files rather than paths: it takes a path as UTF-8, so an index in a
# folder whose name is not valid UTF-8 could not be written or read otherwise.
def write_faiss(index: Any, path: Path) -> None:
    faiss = faiss_module()

    with open(path, "wb") as f:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))


def _faiss_read(path: Path) -> Any:
    faiss = faiss_module()

    with open(path, "rb") as f:
        return faiss.read_index(faiss.PyCallbackIOReader(f.read))
