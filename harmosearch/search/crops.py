"""Crop scoring: how well the box shown for a lexeme looks like it on its own.

Reordering (`rerank`, search.crop_weight) looks at each box on its own: the square around it, a CROP_MARGIN
wider than its longer side, is cut out of the picture and encoded as a whole image, and its
global vector is compared with the lexeme's text embedded as a caption (`crop_scores`). A dense
map pools the box from features that also saw its surroundings; the crop shows the model the
object alone, as large as its input allows, which tells shapes of one colour apart better
(measured on the validation scenes, README, Small objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CROP_MARGIN = 0.2  # a crop's side: the box's longer side and this share more (chosen on validation: crop_margin.py)


def crop_square(box: Sequence[float], scale_x: float, scale_y: float, margin: float) -> tuple[int, ...]:
    """The square crop around `box` (pixels of the original image), `margin` wider than its
    longer side and centred on it, in pixels of a picture decoded at (scale_x, scale_y) of the
    original; it may reach past the picture's edges (cut out as black)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * (1 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = (cx - side / 2) * scale_x, (cy - side / 2) * scale_y
    return (
        round(left),
        round(top),
        max(round(left + side * scale_x), round(left) + 1),
        max(round(top + side * scale_y), round(top) + 1),
    )


def crop_scores(
    encoder: Any,
    images: Sequence[tuple[Any, int, int]],
    image_of: np.ndarray,
    boxes: np.ndarray,
    texts: np.ndarray,
) -> np.ndarray:
    """How well each box looks like its text on its own: the cosine between the global vector of
    the square crop around boxes[r] [R, 4] (pixels of the original image image_of[r] of `images`,
    as box_search.search_boxes takes them) and texts[r] [R, D] (normalised caption vectors). Crops are encoded
    in batches of the encoder's batch size. Returns [R] float32."""
    out = np.zeros(len(image_of), np.float32)
    batch = encoder.config.batch_size
    for start in range(0, len(image_of), batch):
        crops = []
        for r in range(start, min(start + batch, len(image_of))):
            image, width, height = images[int(image_of[r])]
            square = crop_square(boxes[r], image.width / width, image.height / height, CROP_MARGIN)
            crops.append(image.crop(square))
        vectors = encoder.encode_images(crops)[0].numpy()
        out[start : start + len(crops)] = (vectors * np.asarray(texts[start : start + len(crops)])).sum(1)
    return out
