"""`harmosearch index`: walk a photo folder, encode what changed, commit a new index generation.

Incremental by (path, size, mtime), then content hash: unchanged files keep their vectors,
renamed or touched files reuse them by hash, deleted files drop out, and only new or edited
images are encoded. Encoded batches are staged on disk as they finish, so an interrupted run
resumes without encoding them again; the index itself changes only by the final manifest swap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.config import Config
from harmosearch.errors import DataError, IndexStoreError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_PIXELS = 100_000_000  # decompression-bomb guard: larger images are skipped
CHUNK = 256  # images per staged chunk


def default_index_root() -> Path:
    return Path(os.environ.get("HARMOSEARCH_INDEXES", "indexes"))


def default_index_path(photos: Path) -> Path:
    name = Path(photos).resolve().name or "photos"
    return default_index_root() / name


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the photo root, with forward slashes
    absolute: Path
    size: int
    mtime_ns: int


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
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    committed: bool = False

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def scan(root: Path, include_hidden: bool = False) -> tuple[list[FileEntry], list[tuple[str, str]]]:
    """Image files under root (recursively, symlinked folders not followed), and skipped ones."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"photo folder not found: {root}")
    entries: list[FileEntry] = []
    skipped: list[tuple[str, str]] = []

    def on_error(exc: OSError) -> None:
        skipped.append((os.path.relpath(exc.filename or str(root), root), f"cannot read folder: {exc.strerror}"))

    for folder, dirs, files in os.walk(root, onerror=on_error):
        if not include_hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        dirs.sort()
        for name in sorted(files):
            if (not include_hidden and name.startswith(".")) or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            absolute = Path(folder) / name
            relative = absolute.relative_to(root).as_posix()
            try:
                relative.encode("utf-8")
            except UnicodeEncodeError:
                shown = relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                skipped.append((shown, "file name is not valid UTF-8"))
                continue
            try:
                stat = absolute.stat()
            except OSError as exc:
                skipped.append((relative, f"cannot stat: {exc.strerror}"))
                continue
            if not os.access(absolute, os.R_OK):
                skipped.append((relative, "permission denied"))
                continue
            entries.append(FileEntry(relative, absolute, stat.st_size, stat.st_mtime_ns))
    return entries, skipped


def open_image(path: Path) -> Any:
    """Decode to RGB with EXIF orientation applied; one-line DataError on any failure."""
    return decode_image(path)[0]


EXIF_ORIENTATION = 0x0112


def decode_image(path: Path, min_side: int | None = None) -> tuple[Any, int, int]:
    """(RGB image with EXIF orientation applied, full width, full height).

    With min_side, JPEGs are decoded at the smallest DCT scale that keeps both sides at least
    min_side pixels (Pillow's draft mode), which is several times faster for camera photos;
    the size returned is still the full, oriented size, the frame boxes are given in.
    """
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise DataError(f"image is {width}x{height}, above the {MAX_PIXELS:,}-pixel limit")
                if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):
                    width, height = height, width
                if min_side and image.format == "JPEG":
                    image.draft("RGB", (min_side, min_side))
                image.load()
                image = ImageOps.exif_transpose(image)
                if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                    array = np.asarray(image, dtype=np.float64)
                    image = Image.fromarray((array / max(array.max(), 1) * 255).astype(np.uint8))
                if image.mode in ("RGBA", "LA", "P", "PA"):
                    image = image.convert("RGBA")
                    canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(canvas, image)
                return image.convert("RGB"), width, height
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"image is larger than the {MAX_PIXELS:,}-pixel limit") from None
    except Exception as exc:  # Pillow raises many types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot decode image: {reason}") from None


@dataclass
class _Batch:
    """One batch of pending images: decoded pixels, and once encoded, their records."""

    positions: list[int]  # into the pending list, for the images that decoded
    sizes: list[tuple[int, int]]
    failed: list[tuple[int, str]]
    pixels: Any = None  # uint8 [B, S, S, 3] or float [B, 3, S, S]; dropped once encoded
    records: list[dict[str, Any]] | None = None  # width, height, global, boxes, scales, vectors


class _BatchJob:
    """Dataset of batches for the DataLoader. Workers always decode and resize; on CPU they can
    also encode (`encode_here`), each with its share of the cores, which uses them better than
    one process with a thread per core that the decoders keep interrupting."""

    def __init__(
        self,
        paths: list[Path],
        batches: list[list[int]],
        encoder: Any,
        user_boxes: list[Any],
        regions: Any,
        encode_here: bool,
    ) -> None:
        self.paths = paths
        self.batches = batches
        self.encoder = encoder
        self.user_boxes = user_boxes
        self.regions = regions
        self.encode_here = encode_here
        self.split = encoder.split_transform()

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> _Batch:
        import torch

        positions, sizes, failed, arrays = [], [], [], []
        for i in self.batches[b]:
            try:
                image, width, height = decode_image(self.paths[i], self.encoder.image_size)
            except DataError as exc:
                failed.append((i, str(exc)))
                continue
            if self.split is not None:
                arrays.append(np.asarray(self.split[0](image), dtype=np.uint8))
            else:
                arrays.append(self.encoder.transform(image))
            positions.append(i)
            sizes.append((width, height))
        batch = _Batch(positions, sizes, failed)
        if arrays:
            if self.split is not None:
                batch.pixels = self.encoder.pixels_from_uint8(torch.from_numpy(np.stack(arrays)), *self.split[1])
            else:
                batch.pixels = torch.stack(arrays)
        return self.encode(batch) if self.encode_here else batch

    def encode(self, batch: _Batch) -> _Batch:
        """Global vectors and selected regions for the decoded images of a batch."""
        from harmosearch.regions import image_regions

        batch.records = []
        if batch.pixels is None:
            return batch
        encoder = self.encoder
        global_vectors, dense = encoder.encode_pixels(batch.pixels)
        regions = image_regions(
            dense,
            global_vectors,
            batch.sizes,
            encoder.grid,
            encoder.image_size,
            encoder.config.resize,
            self.regions,
            [self.user_boxes[i] for i in batch.positions],
        )
        for (w, h), g, reg in zip(batch.sizes, global_vectors, regions, strict=True):
            batch.records.append(
                {
                    "width": w,
                    "height": h,
                    "global": g.numpy(),
                    "boxes": reg.boxes.numpy(),
                    "scales": reg.scales.numpy(),
                    "vectors": reg.vectors.numpy(),
                }
            )
        batch.pixels = None
        return batch


class _EncoderThreads:
    """worker_init_fn for workers that encode: the cores are shared out among them (the
    DataLoader would leave each worker a single thread)."""

    def __init__(self, workers: int) -> None:
        self.threads = max(1, len(os.sched_getaffinity(0)) // max(workers, 1))

    def __call__(self, _: int) -> None:
        import torch

        torch.set_num_threads(self.threads)


def _decoder_priority(_: int) -> None:
    """Workers that only decode yield the cores to the model's threads in the main process and
    use what it leaves idle (e.g. while regions are selected)."""
    with contextlib.suppress(OSError):
        os.nice(10)


def encode_in_workers(config: Config, device: Any, batches: int) -> bool:
    """Where images are encoded: in the worker processes (CPU, two or more workers and batches)
    or in the main process (GPU, or nothing to share out). index.encode_in forces either."""
    choice = config.index.encode_in
    if choice != "auto":
        return choice == "workers" and config.index.workers > 0
    return str(device) == "cpu" and config.index.workers >= 2 and batches >= 2


def load_user_boxes(path: Path | None) -> dict[str, list[list[float]]]:
    """A JSON sidecar {"rel/path.jpg": [[x0, y0, x1, y1], ...]} or COCO annotations (bbox x, y, w, h)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read boxes file {path}: {exc}") from None
    boxes: dict[str, list[list[float]]] = {}
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        names = {im["id"]: im["file_name"] for im in data["images"]}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            name = names[ann["image_id"]]
            for key in (name, f"images/{name}"):
                boxes.setdefault(key, []).append([x, y, x + w, y + h])
        return boxes
    if not isinstance(data, dict):
        raise DataError(f"boxes file {path}: expected an object of path -> [[x0, y0, x1, y1], ...]")
    for name, rows in data.items():
        try:
            boxes[name] = [[float(v) for v in row] for row in rows]
        except (TypeError, ValueError):
            raise DataError(f"boxes file {path}: boxes of {name!r} are not lists of 4 numbers") from None
        if any(len(row) != 4 or row[2] <= row[0] or row[3] <= row[1] for row in boxes[name]):
            raise DataError(f"boxes file {path}: {name!r} has a box that is not [x0, y0, x1, y1] with x1 > x0, y1 > y0")
    return boxes


def build_index(
    photos: Path,
    index: Path,
    config: Config,
    encoder: Any = None,
    boxes_file: Path | None = None,
    rebuild: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> IndexReport:
    """Create or update the index at `index` from the images under `photos`."""
    from harmosearch.store import (
        MANIFEST,
        IndexLock,
        IndexReader,
        clear_staging,
        load_chunks,
        save_chunk,
        sha256_file,
        staging_dir,
        write_generation,
    )

    started = time.perf_counter()
    photos, index = Path(photos), Path(index)
    entries, skipped = scan(photos, config.index.include_hidden)
    user_boxes = load_user_boxes(boxes_file)
    boxes_digest = hashlib.sha256(json.dumps(user_boxes, sort_keys=True).encode()).hexdigest()[:16]
    report = IndexReport(index=index, skipped=skipped)
    with IndexLock(index):
        previous = None
        old = None
        if (index / MANIFEST).is_file() and not rebuild:
            old = IndexReader(index, load_indexes=False)
            previous = old.manifest
        if encoder is None:
            from harmosearch.encoder import load_encoder

            encoder = load_encoder(config)
        identity = encoder.identity.to_dict()
        if previous is not None:
            from harmosearch.encoder import EncoderIdentity

            built_with = EncoderIdentity.from_dict(previous["encoder"])
            differs = built_with.mismatch(encoder.identity)
            regions_changed = previous["config"]["regions"] != config.to_json()["regions"]
            if differs or regions_changed:
                what = f"model {built_with.spec!r}" if differs else "other region settings"
                raise IndexStoreError(
                    f"index {index} was built with {what}; re-run with --rebuild to re-encode everything "
                    f"with {encoder.identity.spec!r}"
                )
        old_by_path: dict[str, int] = {}
        old_by_hash: dict[str, int] = {}
        if old is not None:
            old_by_path = {str(p): i for i, p in enumerate(old.images["path"])}
            old_by_hash = {str(h): i for i, h in enumerate(old.images["sha256"])}
            if previous.get("boxes_digest") != boxes_digest:
                # Images whose user boxes changed are encoded again.
                boxed = set(user_boxes) | set(previous.get("boxed_paths", []))
                for name in boxed:
                    old_by_path.pop(name, None)
                old_by_hash = {h: i for h, i in old_by_hash.items() if str(old.images["path"][i]) not in boxed}
        plan: list[tuple[FileEntry, str, int | None]] = []  # entry, sha256, old row to reuse
        to_encode: list[tuple[FileEntry, str]] = []
        current = {e.path for e in entries}
        for n, entry in enumerate(entries):
            if progress:
                progress("checking", n, len(entries))
            row = old_by_path.get(entry.path)
            if (
                row is not None
                and int(old.images["size"][row]) == entry.size
                and int(old.images["mtime_ns"][row]) == entry.mtime_ns
            ):
                plan.append((entry, str(old.images["sha256"][row]), row))
                report.unchanged += 1
                continue
            try:
                sha = sha256_file(entry.absolute)
            except OSError as exc:
                skipped.append((entry.path, f"cannot read: {exc.strerror}"))
                continue
            reuse = old_by_hash.get(sha)
            if reuse is not None:
                plan.append((entry, sha, reuse))
                if entry.path == str(old.images["path"][reuse]):
                    report.unchanged += 1  # touched, same content
                elif str(old.images["path"][reuse]) not in current:
                    report.renamed += 1
                else:
                    report.added += 1  # a copy of an indexed image
                continue
            plan.append((entry, sha, None))
            to_encode.append((entry, sha))
            if row is not None:
                report.changed += 1
            else:
                report.added += 1
        if old is not None:
            report.removed = sum(1 for p in old.images["path"] if str(p) not in current) - report.renamed
            report.removed = max(report.removed, 0)

        nothing_new = not to_encode and report.removed == 0 and report.renamed == 0
        if (
            previous is not None
            and nothing_new
            and previous["config"]["index"]["index_type"] == config.index.index_type
            and len(plan) == old.n_images
            and all(
                int(old.images["mtime_ns"][r]) == e.mtime_ns and str(old.images["path"][r]) == e.path
                for e, _, r in plan
            )
        ):
            report.images, report.regions = old.n_images, old.n_regions
            report.seconds = time.perf_counter() - started
            return report

        stage = staging_dir(index)
        encoded = load_chunks(stage)
        pending = [(e, s) for e, s in to_encode if s not in encoded]
        report.resumed = len(to_encode) - len(pending)
        first_chunk = len(list(stage.glob("chunk_*.npz")))
        failed = _encode(pending, encoder, config, user_boxes, stage, first_chunk, encoded, progress, save_chunk)
        skipped += failed
        bad = {path for path, _ in failed}
        plan = [(e, s, r) for e, s, r in plan if e.path not in bad]
        report.encoded = len(pending) - len(failed)
        data = _assemble(plan, old, encoded, encoder.identity.embed_dim)
        report.images, report.regions = data.n_images, data.n_regions
        stats = {
            key: getattr(report, key) for key in ("added", "changed", "removed", "renamed", "unchanged", "encoded")
        }
        write_generation(
            index,
            data,
            identity,
            config.to_dict(),
            config.index.index_type,
            photos,
            previous,
            {**stats, "skipped": len(skipped)},
            {"boxes_digest": boxes_digest, "boxed_paths": sorted(user_boxes)},
        )
        clear_staging(index)
        report.committed = True
    report.seconds = time.perf_counter() - started
    return report


def _encode(
    pending: list[tuple[FileEntry, str]],
    encoder: Any,
    config: Config,
    user_boxes: dict[str, list[list[float]]],
    stage: Path,
    chunk_number: int,
    encoded: dict[str, dict[str, Any]],
    progress: Callable[[str, int, int], None] | None,
    save_chunk: Callable[..., None],
) -> list[tuple[str, str]]:
    """Encode `pending` in batches, staging every CHUNK images; returns (path, reason) failures."""
    import torch

    failed: list[tuple[str, str]] = []
    if not pending:
        return failed
    size = config.encoder.batch_size
    batches = [list(range(start, min(start + size, len(pending)))) for start in range(0, len(pending), size)]
    in_workers = encode_in_workers(config, encoder.device, len(batches))
    job = _BatchJob(
        [e.absolute for e, _ in pending],
        batches,
        encoder,
        [user_boxes.get(e.path) for e, _ in pending],
        config.regions,
        encode_here=in_workers,
    )
    workers = min(config.index.workers, len(batches)) if len(batches) > 1 else 0
    loader = torch.utils.data.DataLoader(
        job,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_EncoderThreads(workers) if in_workers else _decoder_priority,
    )
    buffer: list[dict[str, Any]] = []
    done = 0
    for batch in loader:
        failed += [(pending[i][0].path, err) for i, err in batch.failed]
        if batch.records is None:
            batch = job.encode(batch)
        for i, record in zip(batch.positions, batch.records or [], strict=True):
            record["sha256"] = pending[i][1]
            encoded[record["sha256"]] = record
            buffer.append(record)
        done += len(batch.positions) + len(batch.failed)
        if progress:
            progress("encoding", done, len(pending))
        if len(buffer) >= CHUNK:
            save_chunk(stage, chunk_number, buffer)
            chunk_number += 1
            buffer = []
    save_chunk(stage, chunk_number, buffer)
    return failed


def _assemble(
    plan: list[tuple[FileEntry, str, int | None]], old: Any, encoded: dict[str, dict[str, Any]], dim: int
) -> Any:
    """The new generation's rows, sorted by path; regions grouped by image in the same order."""
    from harmosearch.store import IndexData

    plan = sorted(plan, key=lambda item: item[0].path)
    images: dict[str, list[Any]] = {k: [] for k in ("path", "size", "mtime_ns", "sha256", "width", "height")}
    region_cols: dict[str, list[np.ndarray]] = {k: [] for k in ("image_id", "boxes", "scale")}
    global_vectors, region_vectors = [], []
    for image_id, (entry, sha, row) in enumerate(plan):
        if row is not None:
            width, height = int(old.images["width"][row]), int(old.images["height"][row])
            g = np.asarray(old.global_vectors[row], dtype=np.float32)
            sl = old.regions_of(row)
            boxes = np.stack([old.regions[c][sl] for c in ("x0", "y0", "x1", "y1")], axis=1).astype(np.float32)
            scales = np.asarray(old.regions["scale"][sl], dtype=np.float32)
            vectors = np.asarray(old.region_vectors[sl], dtype=np.float32)
        else:
            record = encoded[sha]
            width, height, g = record["width"], record["height"], record["global"]
            boxes, scales, vectors = record["boxes"], record["scales"], record["vectors"]
        for key, value in zip(images, (entry.path, entry.size, entry.mtime_ns, sha, width, height), strict=True):
            images[key].append(value)
        global_vectors.append(g)
        region_cols["image_id"].append(np.full(len(boxes), image_id, dtype=np.int32))
        region_cols["boxes"].append(boxes.reshape(-1, 4))
        region_cols["scale"].append(scales)
        region_vectors.append(vectors.reshape(-1, dim))
    boxes = np.concatenate(region_cols["boxes"]) if plan else np.zeros((0, 4), np.float32)
    image_ids = np.concatenate(region_cols["image_id"]) if plan else np.zeros(0, np.int32)
    widths = np.asarray(images["width"], dtype=np.float32)[image_ids] if plan else np.zeros(0, np.float32)
    heights = np.asarray(images["height"], dtype=np.float32)[image_ids] if plan else np.zeros(0, np.float32)
    regions = {
        "image_id": image_ids,
        "x0": boxes[:, 0],
        "y0": boxes[:, 1],
        "x1": boxes[:, 2],
        "y1": boxes[:, 3],
        "nx0": boxes[:, 0] / np.maximum(widths, 1),
        "ny0": boxes[:, 1] / np.maximum(heights, 1),
        "nx1": boxes[:, 2] / np.maximum(widths, 1),
        "ny1": boxes[:, 3] / np.maximum(heights, 1),
        "scale": np.concatenate(region_cols["scale"]) if plan else np.zeros(0, np.float32),
    }
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
        region_vectors=np.concatenate(region_vectors) if region_vectors else np.zeros((0, dim), np.float32),
    )
