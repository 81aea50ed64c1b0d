"""The manifest and what guards it: the schema version, reading the manifest, the writer lock,
atomic writes and file hashes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from harmosearch.errors import IndexStoreError
from harmosearch.folders import make_folder
from harmosearch.indexes import MANIFEST

SCHEMA_VERSION = 2  # 2: video frames and capture metadata in the images table, calibration in the manifest
LOCK = "index.lock"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read `chunk` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, write: Any) -> None:
    """write(tmp_path) then fsync and rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class IndexLock:
    """An exclusive, non-blocking writer lock (released by the OS if the process dies)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK
        self.handle: Any = None

    def __enter__(self) -> IndexLock:
        make_folder(self.path.parent, "--index", IndexStoreError)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise IndexStoreError(f"index {self.path.parent} is locked by {holder}; wait for it to finish") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"harmosearch pid {os.getpid()}")
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        if Path(root).is_dir():
            raise IndexStoreError(
                f"{root} is not a harmosearch index (no {MANIFEST}); build one with harmosearch index"
            )
        raise IndexStoreError(f"no index at {root}; build one with: harmosearch index PHOTOS_DIR")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexStoreError(f"{path} is unreadable ({exc}); run harmosearch info --verify") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise IndexStoreError(
            f"index {root} has schema version {version}, this harmosearch reads {SCHEMA_VERSION}; "
            "rebuild it with harmosearch index --rebuild"
        )
    return manifest
