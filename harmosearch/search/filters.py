"""Filters: which indexed images a query may return, decided before anything is ranked.

Capture date (`--after`, `--before`, on the photos' own clocks) and folder (`--under`, relative
to the photo root or an absolute path inside it). Retrieval then searches only the allowed rows
(`retrieve`), so k results come back whenever k files pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath

import numpy as np

from harmosearch.errors import QueryError


@dataclass(frozen=True)
class Filters:
    after: str | date | None = None
    before: str | date | None = None
    under: Sequence[str | os.PathLike[str]] = ()

    @property
    def any(self) -> bool:
        return self.after is not None or self.before is not None or bool(self.under)


def allowed_images(
    images: Mapping[str, np.ndarray], photos_root: Path, filters: Filters
) -> tuple[np.ndarray | None, list[str]]:
    """The image rows that pass the filters (bool per row), or None without filters; and a
    warning when none passes. `images` is the index's images table (path, taken_local)."""
    from harmosearch.media.metadata import date_range

    if not filters.any:
        return None, []
    paths = images["path"]
    allowed = np.ones(len(paths), dtype=bool)
    if filters.after is not None or filters.before is not None:
        low, high = date_range(_date_text(filters.after), _date_text(filters.before))
        taken = np.asarray(images["taken_local"], dtype=np.float64)
        allowed &= (taken >= low) & (taken < high)
    if filters.under:
        folders = [folder_of(f, photos_root) for f in filters.under]
        if "" not in folders:
            prefixes = tuple(f + "/" for f in folders)
            allowed &= np.fromiter(
                (str(p) in folders or str(p).startswith(prefixes) for p in paths), dtype=bool, count=len(paths)
            )
    warnings = [] if allowed.any() else ["no indexed file passes the filters (--after, --before, --under)"]
    return allowed, warnings


def folder_of(folder: str | os.PathLike[str], photos_root: Path) -> str:
    """A --under folder as the paths of the images table write it: relative to the photo
    root, "/"-separated, without "./" or a trailing "/"; "" for the whole root."""
    text = os.fspath(folder)
    path = Path(text).expanduser()
    if path.is_absolute():
        try:
            text = path.resolve().relative_to(photos_root.resolve()).as_posix()
        except ValueError:
            raise QueryError(f"--under {folder}: not inside the photo folder") from None
    parts = [p for p in PurePosixPath(text.replace(os.sep, "/")).parts if p != "."]
    if ".." in parts or (parts and parts[0] == "/"):
        raise QueryError(f"--under {folder}: give a folder inside the photo folder, relative to it")
    return "/".join(parts)


def _date_text(value: str | date | None) -> str | None:
    """A --after / --before value as media.metadata.period reads it."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return value
