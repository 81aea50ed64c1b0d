"""Paths given by a user: checked for what they must be, and output folders created, with
one-line errors that name the option and say why (a file where a folder belongs, a part of the
path that is a file, a link loop, a name too long, no permission).

`pathlib`'s own checks raise for some of these (a name longer than the system allows, a folder
that cannot be entered) instead of answering False; the checks here always answer.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from harmosearch.errors import DataError, HarmosearchError


def kind(path: Path) -> str:
    """What is at `path`: "folder", "file", "missing", or why it cannot be told ("a symbolic link
    loop", ...). Below a file counts as missing: `check_folder` says why nothing can go there."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "a broken symbolic link" if os.path.islink(path) else "missing"
    except OSError as exc:
        return _reason(exc)
    return "folder" if stat.S_ISDIR(mode) else "file"


def is_dir(path: Path) -> bool:
    return kind(path) == "folder"


def is_file(path: Path) -> bool:
    return kind(path) == "file"


def check_folder(path: Path, what: str, error: type[HarmosearchError] = DataError) -> None:
    """Raise `error` unless `path` is a folder or could be created as one (nothing is created)."""
    path = Path(path)
    found = kind(path)
    if found == "folder":
        return
    if found == "file":
        raise error(f"{what} {path} is a file; give a folder")
    if found != "missing":
        raise error(f"{what} {path}: {found}")
    parent = _nearest_existing(path)
    if parent is not None and kind(parent) != "folder":
        raise error(f"cannot create {what} {path}: {parent} is a file, not a folder")


def make_folder(path: Path, what: str, error: type[HarmosearchError] = DataError) -> Path:
    """`path` as a folder, created with its parents when missing, or `error` saying why not."""
    path = Path(path)
    check_folder(path, what, error)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create {what} {path}: {_reason(exc)}") from None
    return path


def check_output_file(
    path: Path, what: str, error: type[HarmosearchError] = DataError, example: str = "results.jsonl"
) -> None:
    """Raise `error` unless a file can be written at `path` (not a folder; its folder exists or
    can be created). Nothing is created."""
    path = Path(path)
    found = kind(path)
    if found == "folder":
        raise error(f"{what} {path} is a folder; give a file name, e.g. {path / example}")
    if found not in ("file", "missing"):
        raise error(f"{what} {path}: {found}")
    check_folder(path.parent, f"the folder of {what}", error)


def output_file(
    path: Path, what: str, error: type[HarmosearchError] = DataError, example: str = "results.jsonl"
) -> Path:
    """`path`, checked as by `check_output_file`, with its folder created."""
    path = Path(path)
    check_output_file(path, what, error, example)
    make_folder(path.parent, f"the folder of {what}", error)
    return path


def _nearest_existing(path: Path) -> Path | None:
    for parent in path.absolute().parents:
        if kind(parent) != "missing":
            return parent
    return None


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop"
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long for the file system"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder"
    return exc.strerror or os.strerror(exc.errno or 0) or type(exc).__name__
