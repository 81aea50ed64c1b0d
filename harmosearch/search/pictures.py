"""The pictures behind an index's rows: their files (which a server may hand out), their pixels,
and the vector of a box drawn on one (a box query).

A server sends these messages to its clients as they are, so they name a picture by its path
relative to the photo folder, never by where the index or the photos lie on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import DataError, QueryError

Box = tuple[float, float, float, float]


def check_image(image_id: int, n_images: int) -> None:
    if not 0 <= image_id < n_images:
        raise QueryError(f"no image {image_id} in this index: image ids run from 0 to {n_images - 1}")


def image_file(images: Mapping[str, np.ndarray], photos_root: Path, image_id: int) -> Path:
    """The original file of an indexed image. Refused when its real path (symlinks and '..'
    resolved) leaves the photo folder: a server must never hand out other files."""
    relative = str(images["path"][image_id])
    root = photos_root.resolve()
    try:
        real = (photos_root / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        gone = f"image {image_id} ({relative}) is no longer in the photo folder"
        raise DataError(f"{gone}; re-run harmosearch index") from None
    if not real.is_relative_to(root):
        raise QueryError(f"image {image_id} ({relative}) leads outside the photo folder; it is not served")
    if not real.is_file():
        raise DataError(f"image {image_id} ({relative}) is not a file; re-run harmosearch index")
    return real


def decode(path: Path, frame_time: float, min_side: int | None = None) -> tuple[Any, int, int]:
    """A file's pixels and full size: the still, or the video frame at `frame_time` seconds (NaN
    for a still), decoded at reduced scale where the format allows, keeping at least min_side."""
    from harmosearch.media.formats import open_still
    from harmosearch.media.video import frame_at

    decoded = open_still(path, min_side) if np.isnan(frame_time) else frame_at(path, frame_time, min_side)
    return decoded.image, decoded.width, decoded.height


def clip_box(images: Mapping[str, np.ndarray], image_id: int, box: Any) -> Box:
    """The box clipped to the image; an empty or malformed one is refused."""
    try:
        values = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise QueryError("a box is four finite numbers x0, y0, x1, y1") from None
    if len(values) != 4 or not np.all(np.isfinite(values)):
        raise QueryError(f"a box is four finite numbers x0, y0, x1, y1, got {_numbers(values)}")
    width, height = int(images["width"][image_id]), int(images["height"][image_id])
    x0, x1 = np.clip(values[[0, 2]], 0, width)
    y0, y1 = np.clip(values[[1, 3]], 0, height)
    if x1 <= x0 or y1 <= y0:
        raise QueryError(f"box {_numbers(values)} holds no pixels of image {image_id} ({width}x{height})")
    return float(x0), float(y0), float(x1), float(y1)


def _numbers(values: np.ndarray) -> str:
    """Numbers as a user writes them, [10, 20.5, 30, 40], not as numpy shows them."""
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def box_vector(encoder: Any, detail: str, picture: Any, box: Box) -> np.ndarray:
    """The vector of `box` (pixels of the original image) on a picture, pooled from its dense map
    as indexing pools proposals at `detail`. `picture(min_side)` decodes the picture as indexing
    did: JPEGs at the smallest scale that covers the dense map's input size."""
    import torch

    from harmosearch.regions.proposals import detail_size, pool_detailed, to_grid

    patch = encoder.image_size // encoder.grid[0]
    fine_size = detail_size(detail, encoder.image_size, patch)
    image, width, height = picture(fine_size or encoder.image_size)
    _, dense = encoder.encode_images([image])
    fine = encoder.encode_images([image], fine_size)[1] if fine_size else None
    grid_box = to_grid(torch.tensor([box]), width, height, encoder.grid, encoder.image_size, encoder.config.resize)
    return pool_detailed(dense, [grid_box], fine)[0][0].numpy().astype(np.float32)
