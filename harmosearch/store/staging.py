"""The staging folder beside an index: encoded batches (chunks) that an update has not committed
yet, kept across crashes so that an interrupted run resumes without encoding them again."""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import IndexStoreError
from harmosearch.store.manifest import write_atomic

STAGING = ".staging"
STAGED_FOR = "staged_for.json"  # in STAGING: what the staged vectors were made with


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
