"""Finding the photos and videos under a photo folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harmosearch.errors import DataError
from harmosearch.media.formats import MediaKind, media_kind
from harmosearch.media.ignore import IgnoreRules


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the photo root, with forward slashes
    absolute: Path
    size: int
    mtime_ns: int
    kind: MediaKind = "still"


def scan(
    root: Path, include_hidden: bool = False, exclude: Sequence[str] = ()
) -> tuple[list[FileEntry], list[tuple[str, str]]]:
    """Photos and videos under root (recursively, symlinked folders not followed), and the files
    that could not be read with the reason. What the ignore rules skip (hidden names unless
    include_hidden, system files such as `._*` and `@eaDir/`, the root's .harmosearchignore,
    the `exclude` patterns; see media.ignore) and files of other types are left out silently."""
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise DataError(f"photo folder {root} is a file, not a folder")
        raise DataError(f"photo folder not found: {root}")
    rules = IgnoreRules.load(root, exclude, include_hidden)
    entries: list[FileEntry] = []
    skipped: list[tuple[str, str]] = []

    def on_error(exc: OSError) -> None:
        skipped.append((os.path.relpath(exc.filename or str(root), root), f"cannot read folder: {exc.strerror}"))

    for folder, dirs, files in os.walk(root, onerror=on_error):
        here = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not rules.skips_dir((here / d).as_posix()))
        for name in sorted(files):
            kind = media_kind(name)
            if kind is None or rules.skips_file((here / name).as_posix()):
                continue
            entry = _entry(root, Path(folder) / name, kind, skipped)
            if entry is not None:
                entries.append(entry)
    return entries, skipped


def _entry(root: Path, absolute: Path, kind: MediaKind, skipped: list[tuple[str, str]]) -> FileEntry | None:
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
    return FileEntry(relative, absolute, stat.st_size, stat.st_mtime_ns, kind)
