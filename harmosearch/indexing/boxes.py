"""User boxes: regions a user names for some files, read from a JSON sidecar or COCO annotations,
encoded beside the proposals; their digest tells an update which files' boxes changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import DataError


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


def boxes_digest(user_boxes: dict[str, list[list[float]]]) -> str:
    return hashlib.sha256(json.dumps(user_boxes, sort_keys=True).encode()).hexdigest()[:16]
