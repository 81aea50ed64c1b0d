"""Assembling an update's new generation from the old generation's rows and the staged chunks:
its tables, and its vectors copied into memory-mapped files beside the index."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.format import open_memmap

from harmosearch.indexing.plan import Plan
from harmosearch.media.metadata import METADATA_FIELDS
from harmosearch.store import IMAGE_COLUMNS, MEDIA_COLUMNS, IndexData, read_staged


def assemble(plan: Plan, old: Any, staged: dict[str, list[Any]], dim: int, stage: Path) -> IndexData:
    """The new generation's rows, sorted by path (a video's frames in time order); regions
    grouped by image in the same order. Its vectors are written, float16 as stored, into files in
    `stage` and returned memory-mapped, each copied from where it lies (the old generation's
    files, or a staged chunk read once): memory does not grow with the number of vectors."""
    images: dict[str, list[Any]] = {k: [] for k in IMAGE_COLUMNS}
    counts, boxes, scales = [], [], []
    sources: list[tuple[Any, int, int]] = []  # per image: (None: old generation | chunk, row or number, first region)
    for entry, sha, rows, metadata in sorted(plan.rows, key=lambda item: item[0].path):
        if rows is not None:
            pictures = [_old_picture(old, row) for row in rows]
            metadata = metadata or _old_metadata(old, rows[0])
        else:
            pictures = staged[sha]
        for item, row in zip(pictures, rows or [None] * len(pictures), strict=True):
            values = {
                "path": entry.path,
                "size": entry.size,
                "mtime_ns": entry.mtime_ns,
                "sha256": sha,
                "width": item.width,
                "height": item.height,
                "frame_time": item.frame_time,
                **(metadata or {}),
            }
            for key, column in images.items():
                column.append(values.get(key))
            counts.append(len(item.boxes))
            boxes.append(item.boxes.reshape(-1, 4))
            scales.append(item.scales)
            sources.append((None, row, item.first) if row is not None else (item.chunk, item.number, item.first))

    def stack(parts: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    n = len(images["path"])
    ids = np.repeat(np.arange(n, dtype=np.int32), np.asarray(counts, dtype=np.int64))
    xyxy = stack(boxes, (0, 4), np.float32)
    widths = np.asarray(images["width"], dtype=np.float32)[ids] if n else np.zeros(0, np.float32)
    heights = np.asarray(images["height"], dtype=np.float32)[ids] if n else np.zeros(0, np.float32)
    regions = {"image_id": ids, **{c: xyxy[:, i] for i, c in enumerate(("x0", "y0", "x1", "y1"))}}
    for i, (c, side) in enumerate(zip(("nx0", "ny0", "nx1", "ny1"), (widths, heights) * 2, strict=True)):
        regions[c] = xyxy[:, i] / np.maximum(side, 1)
    regions["scale"] = stack(scales, (0,), np.float32)
    table: dict[str, np.ndarray] = {
        "path": np.asarray(images["path"], dtype=object),
        "size": np.asarray(images["size"], dtype=np.int64),
        "mtime_ns": np.asarray(images["mtime_ns"], dtype=np.int64),
        "sha256": np.asarray(images["sha256"], dtype=object),
        "width": np.asarray(images["width"], dtype=np.int32),
        "height": np.asarray(images["height"], dtype=np.int32),
    }
    for name, kind in MEDIA_COLUMNS.items():
        values = images[name]
        table[name] = (
            np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            if kind == "float64"
            else np.asarray(values, dtype=object)
        )
    global_vectors, region_vectors = _vectors(sources, np.asarray(counts, dtype=np.int64), old, dim, stage)
    return IndexData(
        images=table,
        regions=regions,
        global_vectors=global_vectors,
        region_vectors=region_vectors,
        vector_files=(Path(global_vectors.filename), Path(region_vectors.filename)),
    )


def _vectors(
    sources: list[tuple[Any, int, int]], counts: np.ndarray, old: Any, dim: int, stage: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The global and region vectors of the new rows (image i from sources[i], counts[i]
    regions), written into float16 .npy files in `stage` and returned memory-mapped read-only."""
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    paths = (stage / "assembly.global.npy", stage / "assembly.regions.npy")
    out_global = open_memmap(paths[0], mode="w+", dtype=np.float16, shape=(len(sources), dim))
    out_regions = open_memmap(paths[1], mode="w+", dtype=np.float16, shape=(int(starts[-1]), dim))
    by_chunk: dict[Path, list[int]] = defaultdict(list)
    for i, (chunk, row, first) in enumerate(sources):
        if chunk is None:
            out_global[i] = old.global_vectors[row]
            out_regions[starts[i] : starts[i + 1]] = old.region_vectors[first : first + counts[i]]
        else:
            by_chunk[chunk].append(i)
    for chunk, rows in by_chunk.items():
        staged_global, staged_regions = read_staged(chunk)
        for i in rows:
            _, number, first = sources[i]
            out_global[i] = staged_global[number]
            out_regions[starts[i] : starts[i + 1]] = staged_regions[first : first + counts[i]]
        del staged_global, staged_regions  # before the next chunk is read: one in memory at a time
    for out in (out_global, out_regions):
        out.flush()
    del out_global, out_regions
    return np.load(paths[0], mmap_mode="r"), np.load(paths[1], mmap_mode="r")


class _OldPicture(NamedTuple):
    """An image row of the old generation, as `assemble` reads it (its vectors stay on disk)."""

    width: int
    height: int
    boxes: np.ndarray
    scales: np.ndarray
    frame_time: float | None
    first: int  # its first region row


def _old_picture(old: Any, row: int) -> _OldPicture:
    sl = old.regions_of(row)
    seconds = float(old.images["frame_time"][row])
    return _OldPicture(
        int(old.images["width"][row]),
        int(old.images["height"][row]),
        np.stack([old.regions[c][sl] for c in ("x0", "y0", "x1", "y1")], axis=1).astype(np.float32),
        np.asarray(old.regions["scale"][sl], dtype=np.float32),
        None if np.isnan(seconds) else seconds,
        sl.start,
    )


def _old_metadata(old: Any, row: int) -> dict[str, Any]:
    return {name: old.images[name][row] for name in METADATA_FIELDS}
