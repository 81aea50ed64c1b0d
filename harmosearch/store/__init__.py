"""The index directory: the only module that knows file formats.

    manifest.json            schema version, encoder identity, resolved config, counts, times,
                             the data files of the current generation with their SHA-256, the
                             index's calibration; written last, by an atomic rename
    images.gN.parquet        row i = global FAISS id i: path, size, mtime_ns, sha256, width, height,
                             frame_time (a video's frames are rows of their own), capture time,
                             camera, orientation, GPS position (MEDIA_COLUMNS)
    regions.gN.parquet       row j = region FAISS id j: image_id, box (pixels and normalised), scale
    global.gN.npy            float16 global vectors (exact rescoring, incremental reuse)
    regions.gN.npy           float16 region vectors
    global.gN.faiss          FAISS index over the global vectors
    regions.gN.faiss         FAISS index over the region vectors; with index.shard_size, the
                             shards regions.gN.sK.faiss over consecutive rows instead
    index.lock               held by the one writer

Every update writes a new generation N beside the old one and then swaps the manifest, so a
reader sees the old index or the new one, never a torn one. The previous generation is kept
until the next update, for readers that loaded its manifest a moment before the swap.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import signal
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import IndexStoreError
from harmosearch.folders import make_folder
from harmosearch.indexes import MANIFEST
from harmosearch.model.device import faiss_module, faiss_to_cpu, faiss_to_gpu

SCHEMA_VERSION = 2  # 2: video frames and capture metadata in the images table, calibration in the manifest
LOCK = "index.lock"
STAGING = ".staging"
STAGED_FOR = "staged_for.json"  # in STAGING: what the staged vectors were made with
# Columns of the images table after the core ones, with their Parquet types; null where unknown.
# frame_time: seconds into the video of a frame row, null for a still; the others are
# media.metadata's METADATA_FIELDS, shared by all rows of a file.
MEDIA_COLUMNS = {
    "frame_time": "float64",
    "taken": "string",
    "taken_local": "float64",
    "taken_utc": "float64",
    "time_source": "string",
    "make": "string",
    "model": "string",
    "orientation": "int8",
    "latitude": "float64",
    "longitude": "float64",
}
IMAGE_COLUMNS = ("path", "size", "mtime_ns", "sha256", "width", "height", *MEDIA_COLUMNS)
REGION_COLUMNS = ("image_id", "x0", "y0", "x1", "y1", "nx0", "ny0", "nx1", "ny1", "scale")
# The index policy (choose_index_type): IVF with SQ8 codes (d + 8 bytes a vector) up to this many
# vectors, PQ codes (at most 64 + 8 bytes) from here on.
IVF_SQ8_BELOW = 2_000_000
HNSW_BYTES = 8 * 32 + 8  # HNSW32 links per vector (bottom layer: 2 x 32 ids of 4 bytes), plus upper layers
HNSW_COARSE_FROM = 16_384  # IVF lists from which vectors find their list through an HNSW graph
ADD_BATCH = 262_144  # vectors converted to float32 and added to FAISS at a time
MMAP_ABOVE = 256 * 2**20  # FAISS files larger than this are memory-mapped when opened, not read


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, write: Any) -> None:
    """write(tmp_path) then fsync and rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Rows:
    """Row counts of anything holding `images` and `regions` column mappings."""

    images: Any
    regions: Any

    @property
    def n_images(self) -> int:
        return len(self.images["path"])

    @property
    def n_regions(self) -> int:
        return len(self.regions["image_id"])


@dataclass
class IndexData(_Rows):
    """One generation's contents: tables in memory, vectors in memory or memory-mapped."""

    images: dict[str, np.ndarray]  # column -> array, one row per image; MEDIA_COLUMNS left out are null
    regions: dict[str, np.ndarray]  # column -> array, one row per region, sorted by image_id
    global_vectors: np.ndarray  # [n_images, D] float
    region_vectors: np.ndarray  # [n_regions, D] float
    # .npy files on the index's file system that already hold the vectors as stored (float16; an
    # update's assembly writes them): moved into the generation instead of written again.
    vector_files: tuple[Path, Path] | None = None


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
      (`refine`, and search's exact rescoring). 8-bit PQ keeps its lists in arrays that can be
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
# 3 and a line on stderr: FAISS refused the string. Training on too few random vectors may fail
# where the real data would not, so errors after construction are left to the real build.
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
vectors = np.random.default_rng(0).standard_normal((100, dim)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
try:
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    index.search(vectors[:2], 5)
except RuntimeError:
    pass
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
    """Raise IndexStoreError when FAISS cannot build `index_type` for `dim`-d vectors (tried in a
    child process on random vectors; takes about a second)."""
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


def refine(queries: np.ndarray, candidates: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among each query's candidate ids (-1: none), scored from the stored vectors
    (a float16 memory map: only the candidates' rows are read): (scores [nq, k], ids [nq, k]),
    padded with -inf and -1, ties to the lower id."""
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for j, (query, found) in enumerate(zip(queries, candidates, strict=True)):
        rows = np.unique(found[found >= 0])  # sorted: the map is read in order
        if not len(rows):
            continue
        scores = np.asarray(vectors[rows], dtype=np.float32) @ np.asarray(query, dtype=np.float32)
        top = np.lexsort((rows, -scores))[:k]
        out_scores[j, : len(top)], out_ids[j, : len(top)] = scores[top], rows[top]
    return out_scores, out_ids


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


class IndexLock:
    """An exclusive, non-blocking writer lock (released by the OS if the process dies)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK
        self.handle: Any = None

    def __enter__(self) -> IndexLock:
        make_folder(self.path.parent, "--index", IndexStoreError)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise IndexStoreError(f"index {self.path.parent} is locked by {holder}; wait for it to finish") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"harmosearch pid {os.getpid()}")
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        if Path(root).is_dir():
            raise IndexStoreError(
                f"{root} is not a harmosearch index (no {MANIFEST}); build one with harmosearch index"
            )
        raise IndexStoreError(f"no index at {root}; build one with: harmosearch index PHOTOS_DIR")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexStoreError(f"{path} is unreadable ({exc}); run harmosearch info --verify") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise IndexStoreError(
            f"index {root} has schema version {version}, this harmosearch reads {SCHEMA_VERSION}; "
            "rebuild it with harmosearch index --rebuild"
        )
    return manifest


# Arrow and FAISS get open Python files rather than paths: they take a path as UTF-8, so an
# index in a folder whose name is not valid UTF-8 could not be written or read otherwise.
def _faiss_write(index: Any, path: Path) -> None:
    faiss = faiss_module()

    with open(path, "wb") as f:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))


def _faiss_read(path: Path) -> Any:
    faiss = faiss_module()

    with open(path, "rb") as f:
        return faiss.read_index(faiss.PyCallbackIOReader(f.read))


def _parquet_write(path: Path, columns: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = len(columns[names[0]])
    arrays = {}
    for name in names:
        if name in MEDIA_COLUMNS:
            kind = pa.type_for_alias(MEDIA_COLUMNS[name])
            values = [_null_if_missing(v) for v in columns.get(name, [None] * rows)]
            if pa.types.is_integer(kind):  # a column read back with nulls holds floats
                values = [None if v is None else int(v) for v in values]
            arrays[name] = pa.array(values, type=kind)
        else:
            arrays[name] = pa.array(columns[name])
    with open(path, "wb") as f:
        pq.write_table(pa.table(arrays), f)


def _null_if_missing(value: Any) -> Any:
    """None for None and NaN (how tables read back nulls), numpy scalars as Python values."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _parquet_read(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        table = pq.read_table(f)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def write_generation(
    root: Path,
    data: IndexData,
    identity: dict[str, Any],
    config: dict[str, Any],
    index_type: str,
    photos_root: Path,
    previous: dict[str, Any] | None,
    stats: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write generation N+1 and swap the manifest to it; drop generations older than N.
    `extra` keys are stored in the manifest beside the standard ones."""

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    generation = (previous or {}).get("generation", 0) + 1
    policy = config["index"]
    dim = int(identity["embed_dim"])
    shard_size = int(policy.get("shard_size", 0))
    global_type, region_type = (
        choose_index_type(n, index_type, policy["exact_below"], dim, int(policy.get("hnsw_memory_mb", 0)))
        for n in (data.n_images, data.n_regions)
    )
    files: dict[str, Any] = {
        "images": f"images.g{generation}.parquet",
        "regions": f"regions.g{generation}.parquet",
        "global_vectors": f"global.g{generation}.npy",
        "region_vectors": f"regions.g{generation}.npy",
    }
    writers = {
        "images": lambda p: _parquet_write(p, data.images, IMAGE_COLUMNS),
        "regions": lambda p: _parquet_write(p, data.regions, REGION_COLUMNS),
        "global_vectors": lambda p: _save_npy(p, data.global_vectors, dim, staged[0]),
        "region_vectors": lambda p: _save_npy(p, data.region_vectors, dim, staged[1]),
    }
    staged = data.vector_files or (None, None)
    checksums = {}
    for key, name in files.items():
        write_atomic(root / name, writers[key])
        checksums[name] = {"sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size}
    for key, stem, vectors, kind in (
        ("global_index", "global", data.global_vectors, global_type),
        ("region_index", "regions", data.region_vectors, region_type),
    ):
        vectors = vectors.reshape(-1, dim)
        count = math.ceil(len(vectors) / shard_size) if shard_size and len(vectors) > shard_size else 1
        names = (
            [f"{stem}.g{generation}.faiss"]
            if count == 1
            else [f"{stem}.g{generation}.s{i:03d}.faiss" for i in range(count)]
        )
        for name, shard in zip(names, build_shards(vectors, kind, shard_size if count > 1 else 0), strict=True):
            write_atomic(root / name, lambda p, shard=shard: _faiss_write(shard, p))
            checksums[name] = {"sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size}
        files[key] = names[0] if count == 1 else names
    created = (previous or {}).get("created", now())
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "generation": generation,
        "created": created,
        "updated": now(),
        "photos_root": str(Path(photos_root).resolve()),
        "encoder": identity,
        "config": config,
        "index_types": {"global": global_type, "regions": region_type},
        "counts": {"images": data.n_images, "regions": data.n_regions, **video_counts(data.images)},
        "files": files,
        "checksums": checksums,
        "last_update": stats or {},
        **(extra or {}),
    }
    write_atomic(
        root / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2, default=list), encoding="utf-8")
    )
    keep = set(_file_names(files)) | set(_file_names((previous or {}).get("files", {})))
    for path in root.glob("*.g*.*"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
    return manifest


def _file_names(files: dict[str, Any]) -> list[str]:
    """Every file a manifest's `files` names (a sharded FAISS index names a list)."""
    return [name for value in files.values() for name in ([value] if isinstance(value, str) else value)]


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


def video_counts(images: dict[str, np.ndarray]) -> dict[str, int]:
    """How many image rows are video frames, and of how many videos."""
    times = images.get("frame_time")
    if times is None:
        return {"videos": 0, "frames": 0}
    frames = np.array([_null_if_missing(t) is not None for t in times], dtype=bool)
    return {"videos": len(set(np.asarray(images["path"])[frames])), "frames": int(frames.sum())}


def _save_npy(path: Path, vectors: np.ndarray, dim: int, staged: Path | None = None) -> None:
    if staged is not None:
        os.replace(staged, path)  # `vectors` maps it: the data stays the same, under its new name
        return
    with open(path, "wb") as f:
        np.save(f, np.asarray(vectors, dtype=np.float16).reshape(-1, dim))


class IndexReader(_Rows):
    """A consistent view of one generation: tables, vectors (memory-mapped) and FAISS indexes."""

    def __init__(self, root: Path, load_indexes: bool = True) -> None:
        self.root = Path(root)
        for _ in range(3):
            self.manifest = read_manifest(self.root)
            try:
                self._load(self.manifest["files"], load_indexes)
                break
            except (OSError, ValueError, RuntimeError) as exc:
                # Two updates committed while this reader was between the manifest and its files
                # (each update removes the generation before its previous one): read the new one.
                if read_manifest(self.root)["generation"] == self.manifest["generation"]:
                    raise IndexStoreError(
                        f"index {self.root} is damaged ({str(exc).splitlines()[0]}); run harmosearch info --verify"
                    ) from None
        else:
            raise IndexStoreError(f"index {self.root} kept changing while it was opened; try again")
        counts = np.bincount(self.regions["image_id"].astype(np.int64), minlength=self.n_images)
        self.region_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _load(self, files: dict[str, Any], load_indexes: bool) -> None:
        self.images = _parquet_read(self.root / files["images"])
        self.regions = _parquet_read(self.root / files["regions"])
        self.global_vectors = np.load(self.root / files["global_vectors"], mmap_mode="r")
        self.region_vectors = np.load(self.root / files["region_vectors"], mmap_mode="r")
        self.global_index = open_faiss(self.root, files["global_index"]) if load_indexes else None
        self.region_index = open_faiss(self.root, files["region_index"]) if load_indexes else None

    def regions_of(self, image_id: int) -> slice:
        return slice(int(self.region_start[image_id]), int(self.region_start[image_id + 1]))


def verify(root: Path) -> list[str]:
    """Problems found in an index (empty when it is sound)."""
    problems: list[str] = []
    try:
        manifest = read_manifest(root)
    except IndexStoreError as exc:
        return [str(exc)]
    for name, expected in manifest.get("checksums", {}).items():
        path = Path(root) / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != expected["bytes"]:
            problems.append(f"{name}: size {path.stat().st_size} bytes, manifest says {expected['bytes']}")
        elif sha256_file(path) != expected["sha256"]:
            problems.append(f"{name}: checksum mismatch (the file changed after it was written)")
    if problems:
        return problems
    try:
        reader = IndexReader(root)
    except IndexStoreError as exc:
        return [str(exc)]
    counts = manifest["counts"]
    checks = [
        (
            reader.n_images == counts["images"],
            f"images table has {reader.n_images} rows, manifest says {counts['images']}",
        ),
        (
            reader.n_regions == counts["regions"],
            f"regions table has {reader.n_regions} rows, manifest says {counts['regions']}",
        ),
        (len(reader.global_vectors) == reader.n_images, "global vectors and images table differ in length"),
        (len(reader.region_vectors) == reader.n_regions, "region vectors and regions table differ in length"),
        (reader.global_index.ntotal == reader.n_images, "global FAISS index and images table differ in length"),
        (reader.region_index.ntotal == reader.n_regions, "region FAISS index and regions table differ in length"),
        (bool(np.all(np.diff(reader.regions["image_id"]) >= 0)), "regions are not grouped by image"),
        (
            reader.n_regions == 0 or int(reader.regions["image_id"].max()) < reader.n_images,
            "a region points past the images table",
        ),
    ]
    problems += [message for ok, message in checks if not ok]
    return problems


def size_on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def staging_dir(root: Path) -> Path:
    """Folder for encoded-but-not-yet-committed chunks; survives crashes, removed after a commit."""
    path = Path(root) / STAGING
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim_staging(root: Path, made_by: dict[str, Any]) -> Path:
    """The staging folder for work that depends on `made_by` (the encoder's identity and the
    region settings, as JSON values): staged work that something else made (an interrupted run
    with another model or other regions) is dropped, since its vectors would not fit this index."""
    path = staging_dir(root)
    record = path / STAGED_FOR
    made_by = json.loads(json.dumps(made_by, sort_keys=True))  # as it reads back (tuples become lists)
    try:
        same = json.loads(record.read_text()) == made_by
    except (OSError, ValueError):
        same = not any(path.glob("chunk_*.npz"))  # unrecorded chunks: of unknown making
    if not same:
        for chunk in path.glob("chunk_*.npz"):
            chunk.unlink()
    write_atomic(record, lambda p: p.write_text(json.dumps(made_by, sort_keys=True)))
    return path


def clear_staging(root: Path) -> None:
    shutil.rmtree(Path(root) / STAGING, ignore_errors=True)


def save_chunk(folder: Path, number: int | str, records: list[tuple[str, Any]]) -> None:
    """Encoded images, as (sha256, pipeline.Encoded) pairs, written as one npz named by its
    number (the local engine counts its chunks) or by a key (a Ray shard's, the same on a retry);
    a video's frames are consecutive records with its hash (the caller keeps them in one chunk)."""
    if not records:
        return
    name = f"chunk_{number:06d}.npz" if isinstance(number, int) else f"chunk_{number}.npz"
    items = [item for _, item in records]
    arrays: dict[str, np.ndarray] = {
        "sha256": np.array([sha for sha, _ in records]),
        "width": np.array([r.width for r in items], dtype=np.int64),
        "height": np.array([r.height for r in items], dtype=np.int64),
        "global": np.stack([r.global_vector for r in items]).astype(np.float16),
        "counts": np.array([len(r.boxes) for r in items], dtype=np.int64),
        "boxes": np.concatenate([r.boxes for r in items]).astype(np.float32),
        "scales": np.concatenate([r.scales for r in items]).astype(np.float32),
        "vectors": np.concatenate([r.vectors for r in items]).astype(np.float16),
        "frame_time": np.array([np.nan if r.frame_time is None else r.frame_time for r in items], dtype=np.float64),
    }
    write_atomic(folder / name, lambda p: _savez(p, arrays))


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# What reading a torn or corrupted npz raises (a bad CRC is a BadZipFile; a short file an EOFError).
CHUNK_DAMAGE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


@dataclass(frozen=True)
class StagedPicture:
    """A staged picture's table fields, and where its vectors lie: picture `number` of `chunk`,
    its regions at rows `first` to `first + len(boxes)` of the chunk's vectors."""

    width: int
    height: int
    boxes: np.ndarray  # [N, 4] pixels
    scales: np.ndarray  # [N]
    frame_time: float | None
    chunk: Path
    number: int
    first: int


def staged_pictures(folder: Path) -> dict[str, list[StagedPicture]]:
    """sha256 -> its staged pictures (a still's one, a video's frames in time order) from every
    complete chunk in the staging folder, without their vectors (`read_staged` reads those a
    chunk at a time), so that what an update holds in memory does not grow with the vectors."""
    found: dict[str, list[StagedPicture]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("chunk_*.npz")):
        try:
            chunk: dict[str, list[StagedPicture]] = {}
            with np.load(path) as z:
                offsets = np.concatenate([[0], np.cumsum(z["counts"])])
                boxes, scales, times = z["boxes"], z["scales"], z["frame_time"]
                for i, sha in enumerate(z["sha256"]):
                    lo, hi = int(offsets[i]), int(offsets[i + 1])
                    seconds = float(times[i])
                    chunk.setdefault(str(sha), []).append(
                        StagedPicture(
                            int(z["width"][i]),
                            int(z["height"][i]),
                            boxes[lo:hi],
                            scales[lo:hi],
                            None if math.isnan(seconds) else seconds,
                            path,
                            i,
                            lo,
                        )
                    )
            found.update(chunk)
        except CHUNK_DAMAGE:
            path.unlink(missing_ok=True)  # a chunk torn by a crash: its images are encoded again
    return found


def read_staged(chunk: Path) -> tuple[np.ndarray, np.ndarray]:
    """(global vectors [pictures, D], region vectors [regions, D]) of one staged chunk, float16.
    A chunk whose vectors cannot be read is removed (its images are encoded again by the next
    run) and IndexStoreError says so."""
    try:
        with np.load(chunk) as z:
            return z["global"], z["vectors"]
    except CHUNK_DAMAGE as exc:
        chunk.unlink(missing_ok=True)
        raise IndexStoreError(
            f"staged batch {chunk.name} is damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "it was removed: run the update again to encode its images again"
        ) from None


def describe(root: Path) -> dict[str, Any]:
    """What `harmosearch info` shows of an index: counts, model, FAISS types, times, sizes, config."""
    manifest = read_manifest(root)
    enc = manifest["encoder"]
    photos = Path(manifest["photos_root"])
    return {
        "index": str(root),
        "photos": str(photos),
        "photos_found": photos.is_dir(),
        "images": manifest["counts"]["images"],
        "regions": manifest["counts"]["regions"],
        "videos": manifest["counts"].get("videos", 0),
        "frames": manifest["counts"].get("frames", 0),
        "calibrated": "calibration" in manifest,
        "model": enc["spec"],
        "weights": enc["weights"],
        "embed_dim": enc["embed_dim"],
        "image_size": enc["image_size"],
        "grid": list(enc["grid"]),
        "faiss": dict(manifest["index_types"]),
        "created": manifest["created"],
        "updated": manifest["updated"],
        "generation": manifest["generation"],
        "bytes": size_on_disk(root),
        "last_update": {k: v for k, v in manifest.get("last_update", {}).items() if isinstance(v, int)},
        "config": manifest["config"],
    }
