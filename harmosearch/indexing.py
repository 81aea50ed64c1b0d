"""`harmosearch index`: walk a photo folder, encode what changed, commit a new index generation.

Incremental by (path, size, mtime), then content hash: unchanged files keep their vectors,
renamed or touched files reuse them by hash, deleted files drop out, and only new or edited
images are encoded. Encoded batches are staged on disk as they finish, so an interrupted run
resumes without encoding them again; the index itself changes only by the final manifest swap.
An update keeps the model, region settings and FAISS type the index was built with, unless the
caller set them (then the index must be rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.config import Config, load_config
from harmosearch.errors import DataError, IndexStoreError
from harmosearch.folders import check_folder
from harmosearch.media.scan import FileEntry, scan
from harmosearch.pipeline import Encoded

CHUNK = 256  # images per staged chunk
# What an update takes from the index it updates, unless the caller set it.
KEPT_ON_UPDATE = ("encoder.model", "encoder.dense_mode", "encoder.resize", "regions", "index.index_type")
Progress = Callable[[str, int, int], None]


def default_index_path(photos: Path, config: Config) -> Path:
    """indexes/<photo folder name> under config.paths.indexes."""
    name = Path(photos).resolve().name or "photos"
    return config.paths.indexes_dir / name


@dataclass
class IndexReport:
    index: Path
    images: int = 0
    regions: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    renamed: int = 0
    unchanged: int = 0
    encoded: int = 0
    resumed: int = 0  # images taken from an interrupted run's staged work
    moved_from: str = ""  # the photo folder the index was built from, when it was elsewhere
    moved: int = 0  # images of a moved photo folder recognised by content, not encoded again
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    committed: bool = False
    model: str = ""

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Plan:
    """What the new generation holds: each file with its hash and the old row whose vectors it
    reuses (None: encode it)."""

    rows: list[tuple[FileEntry, str, int | None]] = field(default_factory=list)

    @property
    def to_encode(self) -> list[tuple[FileEntry, str]]:
        return [(entry, sha) for entry, sha, row in self.rows if row is None]


def load_user_boxes(path: Path | None) -> dict[str, list[list[float]]]:
    """A JSON sidecar {"rel/path.jpg": [[x0, y0, x1, y1], ...]} or COCO annotations (bbox x, y, w, h)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise DataError(f"boxes file {path} is a folder") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read boxes file {path}: {exc}") from None
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return _coco_boxes(data, path)
    if not isinstance(data, dict):
        raise DataError(f"boxes file {path}: expected an object of path -> [[x0, y0, x1, y1], ...]")
    boxes: dict[str, list[list[float]]] = {}
    for name, rows in data.items():
        try:
            boxes[name] = [[float(v) for v in row] for row in rows]
        except (TypeError, ValueError):
            raise DataError(f"boxes file {path}: boxes of {name!r} are not lists of 4 numbers") from None
        for row in boxes[name]:
            if not _is_box(row):
                raise DataError(
                    f"boxes file {path}: {name!r} has {row}, which is not [x0, y0, x1, y1] of finite numbers "
                    "with x1 > x0, y1 > y0"
                )
    return boxes


def _is_box(row: list[float]) -> bool:
    """Four finite numbers x0, y0, x1, y1 with x1 > x0 and y1 > y0 (NaN boxes crash the pooling)."""
    return len(row) == 4 and bool(np.all(np.isfinite(row))) and row[2] > row[0] and row[3] > row[1]


def _coco_boxes(data: dict[str, Any], path: Path) -> dict[str, list[list[float]]]:
    boxes: dict[str, list[list[float]]] = {}
    try:
        names = {im["id"]: im["file_name"] for im in data["images"]}
        for ann in data["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            name = names[ann["image_id"]]
            if not _is_box([x, y, x + w, y + h]):
                raise DataError(
                    f"boxes file {path}: annotation {ann.get('id', '?')} of {name!r} has bbox {ann['bbox']}, "
                    "which is not [x, y, w, h] of finite numbers with w > 0, h > 0"
                )
            for key in (name, f"images/{name}"):
                boxes.setdefault(key, []).append([x, y, x + w, y + h])
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"boxes file {path}: COCO annotations need images (id, file_name) and bbox [x, y, w, h]"
        ) from None
    return boxes


def build_index(
    photos: Path,
    index: Path | None = None,
    config: Config | None = None,
    encoder: Any = None,
    boxes_file: Path | None = None,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> IndexReport:
    """Create or update the index at `index` (default: indexes/<folder name>) from the images
    under `photos`."""
    from harmosearch.store import IndexLock

    started = time.perf_counter()
    config = config or load_config()
    photos = Path(photos)
    index = Path(index) if index is not None else default_index_path(photos, config)
    check_folder(index, "--index", IndexStoreError)  # before the photos are scanned
    entries, skipped = scan(photos, config.index.include_hidden)
    user_boxes = load_user_boxes(boxes_file)
    report = IndexReport(index=index, skipped=skipped)
    with IndexLock(index):
        old = None if rebuild else _previous(index)
        config, encoder = _settings(config, old, encoder, index)
        report.model = encoder.identity.spec
        report.moved_from = _moved_from(old, photos)
        # A moved folder is matched by content alone: equal names, sizes and times in another
        # folder are no proof of equal pictures.
        plan = _plan(entries, old, user_boxes, report, progress, by_path=not report.moved_from)
        if report.moved_from:
            report.moved = sum(row is not None for _, _, row in plan.rows)
        if old is not None and not report.moved_from and _up_to_date(plan, old, report, config):
            report.images, report.regions = old.n_images, old.n_regions
        else:
            _encode_and_commit(photos, index, config, encoder, plan, old, user_boxes, report, progress)
    report.seconds = time.perf_counter() - started
    return report


def _moved_from(old: Any, photos: Path) -> str:
    """The photo folder `old` was built from, when it is not `photos`; "" otherwise."""
    if old is None:
        return ""
    root = str(old.manifest.get("photos_root", ""))
    return root if root and root != str(photos.resolve()) else ""


def _previous(index: Path) -> Any:
    from harmosearch.store import MANIFEST, IndexReader

    return IndexReader(index, load_indexes=False) if (index / MANIFEST).is_file() else None


def _settings(config: Config, old: Any, encoder: Any, index: Path) -> tuple[Config, Any]:
    """The settings an update keeps from its index, the loaded encoder, and a clear error when the
    caller asks for a model or region settings other than the index's own."""
    from dataclasses import replace

    from harmosearch.encoder import EncoderIdentity, canonical_spec, load_encoder
    from harmosearch.store import check_index_type

    if old is not None:
        config = config.over(old.manifest["config"], KEPT_ON_UPDATE)
    config = replace(config, encoder=replace(config.encoder, model=canonical_spec(config.encoder.model)))
    encoder = encoder or load_encoder(config)
    if old is not None:
        built_with = EncoderIdentity.from_dict(old.manifest["encoder"])
        differs = built_with.mismatch(encoder.identity)
        if differs or old.manifest["config"]["regions"] != config.to_json()["regions"]:
            what = f"model {built_with.spec!r}" if differs else "other region settings"
            raise IndexStoreError(
                f"index {index} was built with {what}; re-run with --rebuild to re-encode everything "
                f"with {encoder.identity.spec!r}"
            )
    requested = config.index.index_type
    if requested != "auto" and (old is None or old.manifest["config"]["index"]["index_type"] != requested):
        check_index_type(requested, encoder.identity.embed_dim)  # before anything is encoded
    return config, encoder


def _boxes_digest(user_boxes: dict[str, list[list[float]]]) -> str:
    return hashlib.sha256(json.dumps(user_boxes, sort_keys=True).encode()).hexdigest()[:16]


def _plan(
    entries: list[FileEntry],
    old: Any,
    user_boxes: dict[str, list[list[float]]],
    report: IndexReport,
    progress: Progress | None,
    by_path: bool = True,
) -> _Plan:
    """Which files keep their vectors (same path, size and mtime unless `by_path` is False, or
    the same content hash) and which are encoded; counts what changed into the report."""
    from harmosearch.store import sha256_file

    old_by_path, old_by_hash = _reusable_rows(old, user_boxes)
    current = {e.path for e in entries}
    plan = _Plan()
    for n, entry in enumerate(entries):
        if progress:
            progress("checking", n, len(entries))
        row = old_by_path.get(entry.path)
        stat = (entry.size, entry.mtime_ns)
        if by_path and row is not None and (int(old.images["size"][row]), int(old.images["mtime_ns"][row])) == stat:
            plan.rows.append((entry, str(old.images["sha256"][row]), row))
            report.unchanged += 1
            continue
        try:
            sha = sha256_file(entry.absolute)
        except OSError as exc:
            report.skipped.append((entry.path, f"cannot read: {exc.strerror}"))
            continue
        reuse = old_by_hash.get(sha)
        plan.rows.append((entry, sha, reuse))
        if reuse is None:
            report.changed += row is not None
            report.added += row is None
        elif entry.path == str(old.images["path"][reuse]):
            report.unchanged += 1  # touched, same content
        elif str(old.images["path"][reuse]) not in current:
            report.renamed += 1
        else:
            report.added += 1  # a copy of an indexed image
    if old is not None:
        report.removed = max(sum(1 for p in old.images["path"] if str(p) not in current) - report.renamed, 0)
    return plan


def _reusable_rows(old: Any, user_boxes: dict[str, list[list[float]]]) -> tuple[dict[str, int], dict[str, int]]:
    """Old rows by path and by content hash, without the images whose user boxes changed."""
    if old is None:
        return {}, {}
    by_path = {str(p): i for i, p in enumerate(old.images["path"])}
    by_hash = {str(h): i for i, h in enumerate(old.images["sha256"])}
    if old.manifest.get("boxes_digest") != _boxes_digest(user_boxes):
        boxed = set(user_boxes) | set(old.manifest.get("boxed_paths", []))
        for name in boxed:
            by_path.pop(name, None)
        by_hash = {h: i for h, i in by_hash.items() if str(old.images["path"][i]) not in boxed}
    return by_path, by_hash


def _up_to_date(plan: _Plan, old: Any, report: IndexReport, config: Config) -> bool:
    """Nothing to encode, nothing moved or removed, every file as it was, the same FAISS type."""
    return (
        not plan.to_encode
        and report.removed == 0
        and report.renamed == 0
        and old.manifest["config"]["index"]["index_type"] == config.index.index_type
        and len(plan.rows) == old.n_images
        and all(
            row is not None
            and int(old.images["mtime_ns"][row]) == entry.mtime_ns
            and str(old.images["path"][row]) == entry.path
            for entry, _, row in plan.rows
        )
    )


def _encode_and_commit(
    photos: Path,
    index: Path,
    config: Config,
    encoder: Any,
    plan: _Plan,
    old: Any,
    user_boxes: dict[str, list[list[float]]],
    report: IndexReport,
    progress: Progress | None,
) -> None:
    """Encode what is new (resuming staged work), then write the next generation."""
    from harmosearch.store import clear_staging, load_chunks, staging_dir, write_generation

    stage = staging_dir(index)
    encoded = load_chunks(stage)
    to_encode = plan.to_encode
    pending = [(e, s) for e, s in to_encode if s not in encoded]
    report.resumed = len(to_encode) - len(pending)
    failed = _encode(pending, encoder, config, user_boxes, stage, encoded, progress)
    report.skipped += failed
    bad = {path for path, _ in failed}
    plan.rows = [(e, s, r) for e, s, r in plan.rows if e.path not in bad]
    report.encoded = len(pending) - len(failed)
    data = _assemble(plan, old, encoded, encoder.identity.embed_dim)
    report.images, report.regions = data.n_images, data.n_regions
    stats = {key: getattr(report, key) for key in ("added", "changed", "removed", "renamed", "unchanged", "encoded")}
    write_generation(
        index,
        data,
        encoder.identity.to_dict(),
        config.to_dict(),
        config.index.index_type,
        photos,
        old.manifest if old is not None else None,
        {**stats, "skipped": len(report.skipped)},
        {"boxes_digest": _boxes_digest(user_boxes), "boxed_paths": sorted(user_boxes)},
    )
    clear_staging(index)
    report.committed = True


def _encode(
    pending: list[tuple[FileEntry, str]],
    encoder: Any,
    config: Config,
    user_boxes: dict[str, list[list[float]]],
    stage: Path,
    encoded: dict[str, Encoded],
    progress: Progress | None,
) -> list[tuple[str, str]]:
    """Encode `pending` through the shared pipeline, staging every CHUNK images; returns (path,
    reason) for the files that could not be decoded."""
    from harmosearch.pipeline import encode_files
    from harmosearch.store import save_chunk

    failed: list[tuple[str, str]] = []
    chunk_number = len(list(stage.glob("chunk_*.npz")))
    buffer: list[tuple[str, Encoded]] = []
    stream = encode_files(
        [e.absolute for e, _ in pending],
        encoder,
        config,
        user_boxes=[user_boxes.get(e.path) for e, _ in pending],
        progress=progress,
    )
    for position, outcome in stream:
        entry, sha = pending[position]
        if isinstance(outcome, str):
            failed.append((entry.path, outcome))
            continue
        encoded[sha] = outcome
        buffer.append((sha, outcome))
        if len(buffer) >= CHUNK:
            save_chunk(stage, chunk_number, buffer)
            chunk_number, buffer = chunk_number + 1, []
    save_chunk(stage, chunk_number, buffer)
    return failed


def _assemble(plan: _Plan, old: Any, encoded: dict[str, Encoded], dim: int) -> Any:
    """The new generation's rows, sorted by path; regions grouped by image in the same order."""
    from harmosearch.store import IndexData

    rows = sorted(plan.rows, key=lambda item: item[0].path)
    images: dict[str, list[Any]] = {k: [] for k in ("path", "size", "mtime_ns", "sha256", "width", "height")}
    image_ids, boxes, scales, global_vectors, region_vectors = [], [], [], [], []
    for image_id, (entry, sha, row) in enumerate(rows):
        item = _old_vectors(old, row) if row is not None else encoded[sha]
        for key, value in zip(
            images, (entry.path, entry.size, entry.mtime_ns, sha, item.width, item.height), strict=True
        ):
            images[key].append(value)
        global_vectors.append(item.global_vector)
        image_ids.append(np.full(len(item.boxes), image_id, dtype=np.int32))
        boxes.append(item.boxes.reshape(-1, 4))
        scales.append(item.scales)
        region_vectors.append(item.vectors.reshape(-1, dim))

    def stack(parts: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    ids = stack(image_ids, (0,), np.int32)
    xyxy = stack(boxes, (0, 4), np.float32)
    widths = np.asarray(images["width"], dtype=np.float32)[ids] if rows else np.zeros(0, np.float32)
    heights = np.asarray(images["height"], dtype=np.float32)[ids] if rows else np.zeros(0, np.float32)
    regions = {"image_id": ids, **{c: xyxy[:, i] for i, c in enumerate(("x0", "y0", "x1", "y1"))}}
    for i, (c, side) in enumerate(zip(("nx0", "ny0", "nx1", "ny1"), (widths, heights) * 2, strict=True)):
        regions[c] = xyxy[:, i] / np.maximum(side, 1)
    regions["scale"] = stack(scales, (0,), np.float32)
    return IndexData(
        images={
            "path": np.asarray(images["path"], dtype=object),
            "size": np.asarray(images["size"], dtype=np.int64),
            "mtime_ns": np.asarray(images["mtime_ns"], dtype=np.int64),
            "sha256": np.asarray(images["sha256"], dtype=object),
            "width": np.asarray(images["width"], dtype=np.int32),
            "height": np.asarray(images["height"], dtype=np.int32),
        },
        regions=regions,
        global_vectors=np.stack(global_vectors) if global_vectors else np.zeros((0, dim), np.float32),
        region_vectors=stack(region_vectors, (0, dim), np.float32),
    )


def _old_vectors(old: Any, row: int) -> Encoded:
    sl = old.regions_of(row)
    return Encoded(
        int(old.images["width"][row]),
        int(old.images["height"][row]),
        np.asarray(old.global_vectors[row], dtype=np.float32),
        np.stack([old.regions[c][sl] for c in ("x0", "y0", "x1", "y1")], axis=1).astype(np.float32),
        np.asarray(old.regions["scale"][sl], dtype=np.float32),
        np.asarray(old.region_vectors[sl], dtype=np.float32),
    )
