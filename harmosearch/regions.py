"""Regions: box proposals, their mapping onto the dense grid, pooling and de-duplication.

Boxes are (x0, y0, x1, y1) in pixels of the original image. The encoder's resize decides
how a pixel lands on the token grid; roi_align (1x1, aligned) pools the projected patch tokens
inside a box with bilinear sampling, so any box, not only grid-aligned ones, gets a vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harmosearch.config import RegionConfig

USER_BOX = -1.0  # the `scale` recorded for user-supplied boxes; the whole image is 1.0
SEGMENT = 0.0  # the `scale` recorded for boxes around dense-map segments


@dataclass
class Regions:
    """Region vectors of one image: rows aligned with boxes (pixels) and their proposal scale."""

    boxes: Any  # float32 [N, 4], pixels
    scales: Any  # float32 [N]
    vectors: Any  # float32 [N, D], L2-normalised


def window_boxes(width: int, height: int, scales: tuple[float, ...], overlap: float) -> tuple[Any, Any]:
    """Square windows at each scale (side = scale x short side), tiling the image with the given
    overlap; scale 1.0 means the whole image. Returns (boxes [N, 4], scales [N])."""
    import torch

    boxes: list[list[float]] = []
    labels: list[float] = []
    short = min(width, height)
    for scale in scales:
        if scale >= 1.0:
            boxes.append([0.0, 0.0, float(width), float(height)])
            labels.append(1.0)
            continue
        side = scale * short
        stride = max(side * (1 - overlap), 1.0)
        for y0 in _starts(height, side, stride):
            for x0 in _starts(width, side, stride):
                boxes.append([x0, y0, x0 + side, y0 + side])
                labels.append(float(scale))
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.float32)


def _starts(length: float, side: float, stride: float) -> list[float]:
    if side >= length:
        return [0.0]
    count = math.ceil((length - side) / stride) + 1
    step = (length - side) / (count - 1)  # spread evenly so the last window touches the edge
    return [i * step for i in range(count)]


def segment_boxes(dense: Any, thresholds: tuple[float, ...], max_fraction: float = 0.7) -> Any:
    """Boxes (grid units) around connected groups of similar patches of one dense map [D, gh, gw].

    Neighbouring patches whose projected vectors have cosine >= t are joined (union-find); each
    group of two or more patches, smaller than max_fraction of the grid, gives its bounding box.
    Several thresholds give a coarse-to-fine set. Window proposals cut objects at fixed sizes;
    these follow what the model sees, so small objects get a tight box too.
    """
    import torch
    import torch.nn.functional as F

    _, gh, gw = dense.shape
    unit = F.normalize(dense.float(), dim=0)
    right = (unit[:, :, :-1] * unit[:, :, 1:]).sum(0)  # [gh, gw-1]
    down = (unit[:, :-1, :] * unit[:, 1:, :]).sum(0)  # [gh-1, gw]
    found: set[tuple[int, int, int, int]] = set()
    for t in thresholds:
        parent = list(range(gh * gw))
        for y, x in (right >= t).nonzero().tolist():
            parent[_root(parent, y * gw + x)] = _root(parent, y * gw + x + 1)
        for y, x in (down >= t).nonzero().tolist():
            parent[_root(parent, y * gw + x)] = _root(parent, (y + 1) * gw + x)
        groups: dict[int, list[int]] = {}
        for i in range(gh * gw):
            groups.setdefault(_root(parent, i), []).append(i)
        for cells in groups.values():
            if len(cells) < 2 or len(cells) > max_fraction * gh * gw:
                continue
            ys, xs = [c // gw for c in cells], [c % gw for c in cells]
            found.add((min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    return torch.tensor(sorted(found), dtype=torch.float32).reshape(-1, 4)


def _root(parent: list[int], i: int) -> int:
    """Union-find root with path halving."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def from_grid(boxes: Any, width: int, height: int, grid: tuple[int, int], image_size: int, resize: str) -> Any:
    """The inverse of to_grid: grid-unit boxes -> pixels of the original image."""
    import torch

    grid_h, grid_w = grid
    boxes = boxes.float()
    if resize == "squash":
        sx, sy, ox, oy = width / grid_w, height / grid_h, 0.0, 0.0
    else:
        scale = image_size / min(width, height)
        sx = sy = image_size / grid_w / scale
        ox = (width * scale - image_size) / 2 / scale
        oy = (height * scale - image_size) / 2 / scale
    out = torch.stack([boxes[:, 0] * sx + ox, boxes[:, 1] * sy + oy, boxes[:, 2] * sx + ox, boxes[:, 3] * sy + oy], 1)
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def to_grid(boxes: Any, width: int, height: int, grid: tuple[int, int], image_size: int, resize: str) -> Any:
    """Pixel boxes of a width x height image -> boxes in token-grid units (one token = 1.0)."""
    import torch

    grid_h, grid_w = grid
    boxes = boxes.float()
    if resize == "squash":
        sx, sy = grid_w / width, grid_h / height
        ox = oy = 0.0
    else:  # shortest side resized to image_size, then centre crop
        scale = image_size / min(width, height)
        ox = (width * scale - image_size) / 2
        oy = (height * scale - image_size) / 2
        sx = scale * grid_w / image_size
        sy = scale * grid_h / image_size
        ox, oy = ox * grid_w / image_size, oy * grid_h / image_size
    out = torch.stack(
        [boxes[:, 0] * sx - ox, boxes[:, 1] * sy - oy, boxes[:, 2] * sx - ox, boxes[:, 3] * sy - oy], dim=1
    )
    out[:, 0::2] = out[:, 0::2].clamp(0, grid_w)
    out[:, 1::2] = out[:, 1::2].clamp(0, grid_h)
    return out


def pool(dense: Any, grid_boxes: list[Any]) -> list[Any]:
    """RoIAlign (1x1, aligned) of each image's grid boxes on its dense map [B, D, gh, gw];
    returns per image [N_i, D], L2-normalised."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    counts = [len(b) for b in grid_boxes]
    if sum(counts) == 0:
        return [dense.new_zeros((0, dense.shape[1])) for _ in grid_boxes]
    pooled = roi_align(
        dense.float(),
        [b.float() for b in grid_boxes],
        output_size=1,
        spatial_scale=1.0,
        sampling_ratio=2,
        aligned=True,
    ).flatten(1)
    return list(torch.split(F.normalize(pooled, dim=-1), counts))


def select(boxes: Any, scales: Any, vectors: Any, global_vector: Any, config: RegionConfig) -> Regions:
    """Keep at most config.max_regions regions: user boxes and the full image first, then segment
    boxes, then the windows that differ most from the global vector, after box NMS and
    near-duplicate removal."""
    import numpy as np
    import torch
    from torchvision.ops import nms

    n = len(boxes)
    if n == 0:
        return Regions(boxes, scales, vectors)
    sc = scales.numpy()
    # Products in torch: numpy's BLAS threads stall on small matrices when the cores are busy.
    distinct = (1.0 - vectors @ global_vector).numpy()
    priority = distinct + (sc == USER_BOX) * 10 + (sc >= 1.0) * 5 + (sc == SEGMENT) * 2
    # Rank by priority rounded to 1e-3, ties in proposal order, so that float noise from batching
    # rarely changes which regions are kept; NMS then sees distinct, rank-ordered scores.
    order = np.lexsort((np.arange(n), -np.round(priority.astype(np.float64) * 1000)))
    ranks = np.empty(n, dtype=np.float32)
    ranks[order] = np.arange(n, 0, -1, dtype=np.float32)
    kept = nms(boxes, torch.from_numpy(ranks), config.nms_iou)
    keep = kept.numpy()
    sims = (vectors[kept] @ vectors[kept].T).numpy()
    chosen: list[int] = []  # positions in keep
    for position, row in enumerate(keep):
        if len(chosen) >= config.max_regions:
            break
        if chosen and sc[row] != USER_BOX and sims[position, chosen].max() > config.dedup_cosine:
            continue
        chosen.append(position)
    index = torch.from_numpy(np.sort(keep[chosen]))
    return Regions(boxes[index], scales[index], vectors[index])


def image_regions(
    dense: Any,
    global_vectors: Any,
    sizes: list[tuple[int, int]],
    grid: tuple[int, int],
    image_size: int,
    resize: str,
    config: RegionConfig,
    user_boxes: list[Any] | None = None,
) -> list[Regions]:
    """Proposals (+ user boxes) for a batch of images, pooled from their dense maps and selected."""
    import torch

    proposals = []
    for i, (width, height) in enumerate(sizes):
        boxes, scales = window_boxes(width, height, config.scales, config.overlap)
        if config.segments:
            grid_boxes = segment_boxes(dense[i], config.segments)
            segments = from_grid(grid_boxes, width, height, grid, image_size, resize)
            boxes = torch.cat([segments, boxes])
            scales = torch.cat([torch.full((len(segments),), SEGMENT), scales])
        if user_boxes and user_boxes[i] is not None and len(user_boxes[i]):
            extra = torch.as_tensor(user_boxes[i], dtype=torch.float32).reshape(-1, 4)
            boxes = torch.cat([extra, boxes])
            scales = torch.cat([torch.full((len(extra),), USER_BOX), scales])
        proposals.append((boxes, scales))
    grid_boxes = [
        to_grid(boxes, w, h, grid, image_size, resize) for (boxes, _), (w, h) in zip(proposals, sizes, strict=True)
    ]
    vectors = pool(dense, grid_boxes)
    return [
        select(boxes, scales, vecs, g, config)
        for (boxes, scales), vecs, g in zip(proposals, vectors, global_vectors, strict=True)
    ]
