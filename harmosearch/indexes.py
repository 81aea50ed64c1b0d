"""Where indexes are: the manifest that marks one and the newest under a folder.

Standard library only, so that a `harmosearch query` answered by a warm server can find its
index without importing numpy, pyarrow or faiss (see `serve.client`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harmosearch.errors import IndexStoreError

MANIFEST = "manifest.json"


def latest_index(root: Path) -> Path:
    """The most recently updated index under `root` (the default for `query` without --index)."""
    root = Path(root)
    manifests = sorted(root.glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not manifests:
        raise IndexStoreError(f"no index found under {root}/; build one with: harmosearch index PHOTOS_DIR")
    return manifests[-1].parent


def generation_of(index: Path) -> Any:
    """The committed generation of an index, or None when its manifest cannot be read."""
    try:
        return json.loads((Path(index) / MANIFEST).read_text(encoding="utf-8")).get("generation")
    except (OSError, ValueError, AttributeError):
        return None
