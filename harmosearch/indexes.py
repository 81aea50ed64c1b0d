"""Where indexes are: the folder that holds them, the manifest that marks one, and the newest.

The folder is `paths.indexes` (HARMOSEARCH_INDEXES sets it). Its default, "auto", is the
current folder's `indexes/` when there is one (a checkout of harmosearch has one), else the
per-user data folder (`~/.local/share/harmosearch/indexes` on Linux, platformdirs' place on
macOS and Windows), so `harmosearch index` run in one folder and `harmosearch query` run in
another find the same indexes, as rclip keeps its database in one place.

Standard library and platformdirs only, so that a `harmosearch query` answered by a warm server
can find its index without importing numpy, pyarrow or faiss (see `serve.client`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harmosearch.errors import IndexStoreError

MANIFEST = "manifest.json"
AUTO = "auto"
LOCAL = Path("indexes")


def user_indexes() -> Path:
    """The per-user index folder, used when the current folder has no indexes/."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("harmosearch", appauthor=False)) / "indexes"


def indexes_root(setting: str = AUTO) -> Path:
    """The folder of indexes for a `paths.indexes` setting: itself, or for "auto" the current
    folder's indexes/ when there is one, else the per-user folder."""
    if setting != AUTO:
        return Path(setting).expanduser()
    return LOCAL if LOCAL.is_dir() else user_indexes()


def _where(root: Path) -> str:
    """Why harmosearch looked in `root`, for the message that found nothing there."""
    here = root.expanduser().absolute()
    from_environment = os.environ.get("HARMOSEARCH_INDEXES")
    if from_environment and here == indexes_root(from_environment).absolute():
        return "set by HARMOSEARCH_INDEXES"
    if here == LOCAL.absolute():
        return "the current folder's indexes/, used when there is one"
    if here == user_indexes().absolute():
        return "the per-user index folder, used when the current folder has no indexes/"
    return "paths.indexes of the configuration"


def latest_index(root: Path) -> Path:
    """The most recently updated index under `root` (the default for `query` without --index)."""
    root = Path(root)
    manifests = sorted(root.glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not manifests:
        raise IndexStoreError(
            f"no index found under {root}/ ({_where(root)}); build one with: harmosearch index PHOTOS_DIR, "
            "or name an index folder"
        )
    return manifests[-1].parent


def generation_of(index: Path) -> Any:
    """The committed generation of an index, or None when its manifest cannot be read."""
    try:
        return json.loads((Path(index) / MANIFEST).read_text(encoding="utf-8")).get("generation")
    except (OSError, ValueError, AttributeError):
        return None
