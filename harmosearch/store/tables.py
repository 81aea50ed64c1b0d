"""The Parquet tables of a generation (row i of images = global FAISS id i, row j of regions =
region FAISS id j) and a generation's contents in memory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


class RowCounts:
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
class IndexData(RowCounts):
    """One generation's contents: tables in memory, vectors in memory or memory-mapped."""

    images: dict[str, np.ndarray]  # column -> array, one row per image; MEDIA_COLUMNS left out are null
    regions: dict[str, np.ndarray]  # column -> array, one row per region, sorted by image_id
    global_vectors: np.ndarray  # [n_images, D] float
    region_vectors: np.ndarray  # [n_regions, D] float
    # .npy files on the index's file system that already hold the vectors as stored (float16; an
    # update's assembly writes them): moved into the generation instead of written again.
    vector_files: tuple[Path, Path] | None = None


# Arrow gets open Python files rather than paths: it takes a path as UTF-8, so an index in a
# folder whose name is not valid UTF-8 could not be written or read otherwise.
def write_parquet(path: Path, columns: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
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


def read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        table = pq.read_table(f)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def video_counts(images: dict[str, np.ndarray]) -> dict[str, int]:
    """How many image rows are video frames, and of how many videos."""
    times = images.get("frame_time")
    if times is None:
        return {"videos": 0, "frames": 0}
    frames = np.array([_null_if_missing(t) is not None for t in times], dtype=bool)
    return {"videos": len(set(np.asarray(images["path"])[frames])), "frames": int(frames.sum())}
