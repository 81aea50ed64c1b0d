"""What an update changes: which files keep their rows, which reuse another file's rows by content
hash, which are encoded, and whether the index is already up to date."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmosearch.config import Config
from harmosearch.errors import DataError
from harmosearch.indexing.boxes import boxes_digest
from harmosearch.indexing.encode import Progress
from harmosearch.indexing.report import IndexReport
from harmosearch.media.metadata import read_metadata
from harmosearch.media.scan import FileEntry
from harmosearch.store import sha256_file


@dataclass
class Plan:
    """What the new generation holds: each file with its hash, the old rows whose vectors it
    reuses (a still's one row, a video's frame rows; None: encode it), and its metadata
    (media.metadata.Metadata; None: the old rows' metadata still holds)."""

    rows: list[tuple[FileEntry, str, list[int] | None, dict[str, Any] | None]] = field(default_factory=list)

    @property
    def to_encode(self) -> list[tuple[FileEntry, str]]:
        return [(entry, sha) for entry, sha, rows, _ in self.rows if rows is None]


def moved_from(old: Any, photos: Path) -> str:
    """The photo folder `old` was built from, when it is not `photos`; "" otherwise."""
    if old is None:
        return ""
    root = str(old.manifest.get("photos_root", ""))
    return root if root and root != str(photos.resolve()) else ""


def plan_update(
    entries: list[FileEntry],
    old: Any,
    user_boxes: dict[str, list[list[float]]],
    report: IndexReport,
    progress: Progress | None,
    by_path: bool = True,
) -> Plan:
    """Which files keep their vectors (same path, size and mtime unless `by_path` is False, or
    the same content hash) and which are encoded, with the metadata of the files not kept as they
    were; counts what changed into the report. Videos that need encoding are skipped, unhashed,
    when PyAV is missing."""
    old_by_path, old_by_hash = _reusable_rows(old, user_boxes)
    current = {e.path for e in entries}
    no_video = _missing_video_support(entries)
    plan = Plan()
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
    if old.manifest.get("boxes_digest") != boxes_digest(user_boxes):
        boxed = set(user_boxes) | set(old.manifest.get("boxed_paths", []))
        for name in boxed:
            by_path.pop(name, None)
        by_hash = {h: rows for h, rows in by_hash.items() if str(old.images["path"][rows[0]]) not in boxed}
    return by_path, by_hash


def up_to_date(plan: Plan, old: Any, report: IndexReport, config: Config) -> bool:
    """Nothing to encode, nothing moved or removed, every file as it was, the same FAISS type,
    a calibration of the current version, and a region trust measured the current way (or tried:
    None when nothing could be sampled)."""
    from harmosearch.regions.trust import measured_the_current_way
    from harmosearch.search.calibration import CALIBRATION_VERSION

    calibration = old.manifest.get("calibration")
    trust = old.manifest.get("region_trust", False)  # False: never measured
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
        and (old.n_images == 0 or trust is None or measured_the_current_way(trust))
    )
