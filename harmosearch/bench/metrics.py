"""Retrieval and classification metrics, with the definitions of LAION's CLIP_benchmark.

- text->image recall@K: the fraction of captions whose own image is among the K best images;
- image->text recall@K: the fraction of images with at least one of their captions among the
  K best captions. Every caption is kept (images may have 5 or 7 captions).
Ranking is by descending score; equal scores keep their original order (lower index first), so
results are deterministic and ties never favour the true match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _ranked(scores: np.ndarray) -> np.ndarray:
    """Column indices of each row, best first; a stable sort keeps ties in index order."""
    return np.argsort(-scores, axis=1, kind="stable")


def recall_text_to_image(
    scores: np.ndarray, caption_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """scores [captions, images]; caption_image[c] = index of caption c's image."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(caption_image)
    if scores.shape[0] == 0:
        return dict.fromkeys(ks, 0.0)
    order = _ranked(scores)
    position = np.argmax(order == truth[:, None], axis=1)  # rank of the true image
    return {k: float(np.mean(position < k)) for k in ks}


def recall_image_to_text(
    scores: np.ndarray, caption_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """scores [captions, images] (the same matrix as above, read by column)."""
    scores = np.asarray(scores, dtype=np.float64).T
    truth = np.asarray(caption_image)
    if scores.shape[0] == 0:
        return dict.fromkeys(ks, 0.0)
    order = _ranked(scores)  # [images, captions]
    owner = truth[order]  # the image each ranked caption belongs to
    hit = owner == np.arange(scores.shape[0])[:, None]
    first = np.where(hit.any(axis=1), np.argmax(hit, axis=1), np.iinfo(np.int64).max)
    return {k: float(np.mean(first < k)) for k in ks}


def topk_accuracy(scores: np.ndarray, labels: Sequence[int], ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Classification scores [instances, classes]: per-instance and mean per-class top-K accuracy."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    result: dict[str, Any] = {}
    if len(labels) == 0:
        return {f"top{k}": 0.0 for k in ks} | {f"top{k}_per_class": 0.0 for k in ks}
    order = _ranked(scores)
    position = np.argmax(order == labels[:, None], axis=1)
    classes = np.unique(labels)
    for k in ks:
        correct = position < k
        result[f"top{k}"] = float(correct.mean())
        result[f"top{k}_per_class"] = float(np.mean([correct[labels == c].mean() for c in classes]))
    return result


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes: [N, 4] x [M, 4] -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
