"""Finding the image files under a photo folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harmosearch.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the photo root, with forward slashes
    absolute: Path
    size: int
    mtime_ns: int


def scan(root: Path, include_hidden: bool = False) -> tuple[list[FileEntry], list[tuple[str, str]]]:
    """Image files under root (recursively, symlinked folders not followed), and skipped ones."""
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise DataError(f"photo folder {root} is a file, not a folder")
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
            entry = _entry(root, Path(folder) / name, skipped)
            if entry is not None:
                entries.append(entry)
    return entries, skipped


def _entry(root: Path, absolute: Path, skipped: list[tuple[str, str]]) -> FileEntry | None:
    relative = absolute.relative_to(root).as_posix()
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        shown = relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        skipped.append((shown, "file name is not valid UTF-8"))
        return None
    try:
        stat = absolute.stat()
    except OSError as exc:
        skipped.append((relative, f"cannot stat: {exc.strerror}"))
        return None
    if not os.access(absolute, os.R_OK):
        skipped.append((relative, "permission denied"))
        return None
    return FileEntry(relative, absolute, stat.st_size, stat.st_mtime_ns)
