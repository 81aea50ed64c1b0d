"""`harmosearch index`: walk a photo folder, encode what changed, commit a new index generation.

Incremental by (path, size, mtime), then content hash: unchanged files keep their vectors,
renamed or touched files reuse them by hash, deleted files drop out, and only new or edited
files are encoded. A video is one file with many rows (one per sampled frame): its frames are
reused, re-encoded or removed together. Each row also holds its file's capture time, camera and
GPS position (`media.metadata`). Encoded batches are staged on disk as they finish, so an
interrupted run resumes without encoding them again; the index itself changes only by the final
manifest swap, which also stores the index's calibration (`calibration`).
An update keeps the model, region and video settings and FAISS type the index was built with,
unless the caller set them (then the index must be rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from harmosearch.config import Config, load_config
from harmosearch.errors import DataError, IndexStoreError
from harmosearch.folders import check_folder
from harmosearch.indexing.encode import Encoded
from harmosearch.media.scan import FileEntry, scan

CHUNK = 256  # images per staged chunk (a video's frames are never split between chunks)
# What an update takes from the index it updates, unless the caller set it.
KEPT_ON_UPDATE = ("encoder.model", "encoder.dense_mode", "encoder.resize", "regions", "media", "index.index_type")
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
    videos: int = 0  # of the files indexed
    frames: int = 0  # image rows that are video frames
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
    """What the new generation holds: each file with its hash, the old rows whose vectors it
    reuses (a still's one row, a video's frame rows; None: encode it), and its metadata
    (media.metadata.Metadata; None: the old rows' metadata still holds)."""

    rows: list[tuple[FileEntry, str, list[int] | None, dict[str, Any] | None]] = field(default_factory=list)

    @property
    def to_encode(self) -> list[tuple[FileEntry, str]]:
        return [(entry, sha) for entry, sha, rows, _ in self.rows if rows is None]


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
    entries, skipped = scan(photos, config.index.include_hidden, config.index.exclude)
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
            report.moved = sum(rows is not None for _, _, rows, _ in plan.rows)
        if old is not None and not report.moved_from and _up_to_date(plan, old, report, config):
            report.images, report.regions = old.n_images, old.n_regions
            report.videos, report.frames = old.manifest["counts"]["videos"], old.manifest["counts"]["frames"]
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
    from harmosearch.indexes import MANIFEST
    from harmosearch.store import IndexReader

    return IndexReader(index, load_indexes=False) if (index / MANIFEST).is_file() else None


def _settings(config: Config, old: Any, encoder: Any, index: Path) -> tuple[Config, Any]:
    """The settings an update keeps from its index, the loaded encoder, and a clear error when the
    caller asks for a model or region settings other than the index's own."""
    from dataclasses import replace

    from harmosearch.indexing.inference import check_same_path, kept_settings, load_like_index, recorded
    from harmosearch.model.encoder import EncoderIdentity, load_encoder
    from harmosearch.model.loading import canonical_spec
    from harmosearch.store import check_index_type

    if old is not None:
        config = kept_settings(config.over(old.manifest["config"], KEPT_ON_UPDATE), old.manifest["encoder"])
    config = replace(config, encoder=replace(config.encoder, model=canonical_spec(config.encoder.model)))
    encoder = encoder or (load_encoder(config) if old is None else load_like_index(config, index))
    if old is not None:
        check_same_path(index, old.manifest["encoder"], encoder)
        built_with = EncoderIdentity.from_dict(old.manifest["encoder"])
        differs = built_with.mismatch(encoder.identity)
        stored, wanted = old.manifest["config"], config.to_json()
        # Indexes made before regions.detail existed pooled at the model's own size.
        stored = {**stored, "regions": {"detail": "normal", **stored["regions"]}}
        regions_differ = stored["regions"] != wanted["regions"]
        # At high detail the proposals also depend on the version's constants (pixel segments).
        older_proposals = not regions_differ and old.manifest.get("proposals") != _proposals(config)
        if differs or regions_differ or older_proposals or stored.get("media") != wanted["media"]:
            what = (
                f"model {built_with.spec!r}"
                if differs
                else "other region settings"
                if regions_differ
                else "the region proposals of an older harmosearch"
                if older_proposals
                else "other video frame settings"
            )
            raise IndexStoreError(
                f"index {index} was built with {what}; re-run with --rebuild to re-encode everything "
                f"with {encoder.identity.spec!r}"
            )
    requested = config.index.index_type
    if requested != "auto" and (old is None or old.manifest["config"]["index"]["index_type"] != requested):
        check_index_type(requested, encoder.identity.embed_dim)  # before anything is encoded
    return recorded(config, encoder), encoder


def _proposals(config: Config) -> Any:
    """What an index's manifest records of how its regions were proposed beyond the regions
    config (regions.proposal_constants), as JSON reads it back; None at normal detail."""
    from harmosearch.regions.proposals import proposal_constants

    return json.loads(json.dumps(proposal_constants(config.regions.detail)))


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
    the same content hash) and which are encoded, with the metadata of the files not kept as they
    were; counts what changed into the report. Videos that need encoding are skipped, unhashed,
    when PyAV is missing."""
    from harmosearch.media.metadata import read_metadata
    from harmosearch.store import sha256_file

    old_by_path, old_by_hash = _reusable_rows(old, user_boxes)
    current = {e.path for e in entries}
    no_video = _missing_video_support(entries)
    plan = _Plan()
    for n, entry in enumerate(entries):
        if progress:
            progress("checking", n, len(entries))
        rows = old_by_path.get(entry.path)
        stat = (entry.size, entry.mtime_ns)
        same = rows is not None and (int(old.images["size"][rows[0]]), int(old.images["mtime_ns"][rows[0]])) == stat
        if by_path and same:
            plan.rows.append((entry, str(old.images["sha256"][rows[0]]), rows, None))
            report.unchanged += 1
            continue
        if entry.kind == "video" and no_video:
            report.skipped.append((entry.path, no_video))
            continue
        try:
            sha = sha256_file(entry.absolute)
            metadata = dict(read_metadata(entry.absolute))
        except OSError as exc:
            report.skipped.append((entry.path, f"cannot read: {exc.strerror}"))
            continue
        except DataError as exc:
            report.skipped.append((entry.path, str(exc)))
            continue
        reuse = old_by_hash.get(sha)
        plan.rows.append((entry, sha, reuse, metadata))
        if reuse is None:
            report.changed += rows is not None
            report.added += rows is None
        elif entry.path == str(old.images["path"][reuse[0]]):
            report.unchanged += 1  # touched, same content
        elif str(old.images["path"][reuse[0]]) not in current:
            report.renamed += 1
        else:
            report.added += 1  # a copy of an indexed file
    if old is not None:
        gone = set(map(str, old.images["path"])) - current
        report.removed = max(len(gone) - report.renamed, 0)
    return plan


def _missing_video_support(entries: list[FileEntry]) -> str | None:
    """The one-line reason videos cannot be decoded here (PyAV missing), or None."""
    from harmosearch.media.formats import UnsupportedFormat
    from harmosearch.media.video import require_pyav

    if not any(entry.kind == "video" for entry in entries):
        return None
    try:
        require_pyav()
    except UnsupportedFormat as exc:
        return str(exc)
    return None


def _reusable_rows(
    old: Any, user_boxes: dict[str, list[list[float]]]
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Each old file's rows (a video's frames in time order) by path and by content hash, without
    the files whose user boxes changed."""
    if old is None:
        return {}, {}
    by_path: dict[str, list[int]] = {}
    for i, p in enumerate(old.images["path"]):
        by_path.setdefault(str(p), []).append(i)
    by_hash: dict[str, list[int]] = {}
    for rows in by_path.values():
        by_hash.setdefault(str(old.images["sha256"][rows[0]]), rows)
    if old.manifest.get("boxes_digest") != _boxes_digest(user_boxes):
        boxed = set(user_boxes) | set(old.manifest.get("boxed_paths", []))
        for name in boxed:
            by_path.pop(name, None)
        by_hash = {h: rows for h, rows in by_hash.items() if str(old.images["path"][rows[0]]) not in boxed}
    return by_path, by_hash


def _up_to_date(plan: _Plan, old: Any, report: IndexReport, config: Config) -> bool:
    """Nothing to encode, nothing moved or removed, every file as it was, the same FAISS type,
    and a calibration of the current version."""
    from harmosearch.search.calibration import CALIBRATION_VERSION

    calibration = old.manifest.get("calibration")
    return (
        not plan.to_encode
        and report.removed == 0
        and report.renamed == 0
        and old.manifest["config"]["index"]["index_type"] == config.index.index_type
        and len(plan.rows) == len(set(map(str, old.images["path"])))
        and all(
            rows is not None
            and int(old.images["mtime_ns"][rows[0]]) == entry.mtime_ns
            and str(old.images["path"][rows[0]]) == entry.path
            for entry, _, rows, _ in plan.rows
        )
        and (old.n_images == 0 or (calibration or {}).get("version") == CALIBRATION_VERSION)
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
    from harmosearch.store import claim_staging, clear_staging, staged_pictures, video_counts, write_generation

    stage = claim_staging(index, {"encoder": encoder.identity.to_dict(), "regions": config.to_json()["regions"]})
    staged = staged_pictures(stage)
    to_encode = plan.to_encode
    report.resumed = sum(1 for _, sha in to_encode if sha in staged)
    first: dict[str, FileEntry] = {}  # copies of one new file are encoded once
    for entry, sha in to_encode:
        if sha not in staged:
            first.setdefault(sha, entry)
    pending = [(entry, sha) for sha, entry in first.items()]
    failed = _encode(pending, encoder, config, user_boxes, stage, progress)
    report.skipped += [(e.path, failed[s]) for e, s in to_encode if s in failed]
    plan.rows = [row for row in plan.rows if not (row[2] is None and row[1] in failed)]
    report.encoded = len(pending) - len(failed)
    data = _assemble(plan, old, staged_pictures(stage), encoder.identity.embed_dim, stage)
    report.images, report.regions = data.n_images, data.n_regions
    counts = video_counts(data.images)
    report.videos, report.frames = counts["videos"], counts["frames"]
    calibration = _calibration(data, encoder)
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
        {
            "boxes_digest": _boxes_digest(user_boxes),
            "boxed_paths": sorted(user_boxes),
            **({"calibration": calibration} if calibration is not None else {}),
            **({"proposals": proposals} if (proposals := _proposals(config)) is not None else {}),
        },
    )
    clear_staging(index)
    report.committed = True


def _encode(
    pending: list[tuple[FileEntry, str]],
    encoder: Any,
    config: Config,
    user_boxes: dict[str, list[list[float]]],
    stage: Path,
    progress: Progress | None,
) -> dict[str, str]:
    """Encode `pending` (one file per content hash) through the shared pipeline, staging about
    every CHUNK images, a video's frames always together (nothing is kept in memory: assembly
    reads the staged chunks); returns hash -> reason for the files that could not be decoded.
    index.engine = "ray" hands the files to Ray actors instead."""
    from harmosearch.indexing.encode import encode_files
    from harmosearch.store import save_chunk

    if config.index.engine == "ray":
        from harmosearch.indexing.engines.ray import encode_on_ray

        boxed = [(e.absolute, sha, user_boxes.get(e.path)) for e, sha in pending]
        return encode_on_ray(boxed, encoder.identity, config, stage, progress)
    failed: dict[str, str] = {}
    chunk_number = len(list(stage.glob("chunk_*.npz")))
    buffer: list[tuple[str, Encoded]] = []
    stream = encode_files(
        [e.absolute for e, _ in pending],
        encoder,
        config,
        user_boxes=[user_boxes.get(e.path) for e, _ in pending],
        progress=progress,
    )
    for position, outcome in _by_file(stream):
        _, sha = pending[position]
        if isinstance(outcome, str):
            failed[sha] = outcome
            continue
        buffer.extend((sha, item) for item in outcome)
        if len(buffer) >= CHUNK:
            save_chunk(stage, chunk_number, buffer)
            chunk_number, buffer = chunk_number + 1, []
    save_chunk(stage, chunk_number, buffer)
    return failed


def _by_file(stream: Any) -> Any:
    """pipeline.encode_files' stream with each file's pictures together: (position, [Encoded,
    ...]) per file, or (position, reason) for a file that failed."""
    current, pictures = None, []
    for position, outcome in stream:
        if isinstance(outcome, str):
            yield position, outcome
            continue
        if position != current and current is not None:
            yield current, pictures
            pictures = []
        current = position
        pictures.append(outcome)
    if current is not None:
        yield current, pictures


def _assemble(plan: _Plan, old: Any, staged: dict[str, list[Any]], dim: int, stage: Path) -> Any:
    """The new generation's rows, sorted by path (a video's frames in time order); regions
    grouped by image in the same order. Its vectors are written, float16 as stored, into files in
    `stage` and returned memory-mapped, each copied from where it lies (the old generation's
    files, or a staged chunk read once): memory does not grow with the number of vectors."""
    from harmosearch.store import IMAGE_COLUMNS, MEDIA_COLUMNS, IndexData

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
    from collections import defaultdict

    from numpy.lib.format import open_memmap

    from harmosearch.store import read_staged

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
    """An image row of the old generation, as _assemble reads it (its vectors stay on disk)."""

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
    from harmosearch.media.metadata import METADATA_FIELDS

    return {name: old.images[name][row] for name in METADATA_FIELDS}


def _calibration(data: Any, encoder: Any) -> dict[str, Any] | None:
    """The calibration of the new generation (see harmosearch.search.calibration), from its vectors as
    stored (float16), as the manifest keeps it; None for an empty index."""
    from harmosearch.search.calibration import cached_bank_encoder, calibrate

    if data.n_images == 0:
        return None
    counts = np.bincount(data.regions["image_id"].astype(np.int64), minlength=data.n_images)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # float16 as stored (the vectors already are: asarray copies nothing)
    return calibrate(
        np.asarray(data.global_vectors, dtype=np.float16),
        np.asarray(data.region_vectors, dtype=np.float16),
        start,
        cached_bank_encoder(encoder),
    ).to_dict()
