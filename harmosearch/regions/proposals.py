"""Regions: box proposals, their mapping onto the dense grid, pooling and de-duplication.

Boxes are (x0, y0, x1, y1) in pixels of the original image. The encoder's resize decides
how a pixel lands on the token grid; roi_align (1x1, aligned) pools the projected patch tokens
inside a box with bilinear sampling, so any box, not only grid-aligned ones, gets a vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from harmosearch.config import RegionConfig

# regions.detail "high": boxes narrower than FINE_BELOW cells of the model's own grid are pooled
# from a second dense map at HIGH_DETAIL_SCALE times the input size, and windows of
# HIGH_DETAIL_WINDOWS of the short side join the proposals. On the small-object validation
# scenes, ground-truth boxes (22-48 px in 224) pooled at 168 px (harmo-tiny's 112 x 1.5) were
# classified best (top-1 0.92; 0.72 at 112, 0.88 at 224), while large objects (50-95 px) fell
# from 0.96 to 0.80 there: hence small boxes only. 3 cells of 16 px at 224 px is 48 px.
HIGH_DETAIL_SCALE = 1.5
FINE_BELOW = 3.0
HIGH_DETAIL_WINDOWS = (0.2, 0.15)
# ... and keeps this many times regions.max_regions (rounded up): else the many small windows,
# the most distinct from the global vector, crowd out the large ones (validation: at the normal
# detail's cap the proposal ceiling for large objects fell from 0.99 to 0.79). 1.5 times the
# default 128 is 192; on the validation scenes 256 gained nothing over 192 (photo grounding 75.7
# against 77.0, for 18% more regions; benchmarks/region_cap.py --detail high). Indexes built when
# high detail kept twice the cap are read as the same regions under this one (indexing/build.py).
HIGH_DETAIL_REGIONS = 1.5
# Boxes around segments of the picture's own pixels (regions.pixel_segments, at every detail):
# Felzenszwalb and Huttenlocher's graph segmentation (scikit-image) of the picture at PIXEL_SIDE
# pixels on its short side, at each of the configured scales, segments of at least
# PIXEL_MIN_SIZE pixels there. A segment box smaller than PIXEL_MIN_BOX pixels on a side there,
# or covering more than PIXEL_MAX_FRACTION of the picture, is left out (specks, the background).
# Pixels find the edges of a small object that a 14 x 14 map of patches cannot. They replace the
# dense-map segment boxes (regions.segments): at high detail on the validation scenes, without
# those, phrase search P@5 went from 92.1 / 87.9 / 90.8 to 91.7 / 89.6 / 93.8 (small, large,
# default set) and caption text->image R@1 from 66.3 / 69.1 to 67.9 / 70.9 (fused, relation-aware).
PIXELS_REPLACE_SEGMENTS = True
PIXEL_SIDE = 112
PIXEL_SIGMA = 0.8
PIXEL_MIN_SIZE = 10
PIXEL_MIN_BOX = 3
PIXEL_MAX_FRACTION = 0.7
USER_BOX = -1.0  # the `scale` recorded for user-supplied boxes; the whole image is 1.0
SEGMENT = 0.0  # the `scale` recorded for boxes around dense-map segments


@dataclass
class Regions:
    """Region vectors of one image: rows aligned with boxes (pixels) and their proposal scale."""

    boxes: Any  # float32 [N, 4], pixels
    scales: Any  # float32 [N]
    vectors: Any  # float32 [N, D], L2-normalised


def pool_detailed(dense: Any, grid_boxes: list[Any], fine: Any = None) -> list[Any]:
    """pool() on the model's own map, except that with a fine map (the high-detail pass of the
    same images, [B, D, gh', gw']), boxes narrower than FINE_BELOW cells of the model's grid
    (their longer side) are pooled from the fine map at the same place."""
    import torch

    pooled = pool(dense, grid_boxes)
    if fine is None:
        return pooled
    ratio = fine.shape[-1] / dense.shape[-1]
    fine_pooled = pool(fine, [b * ratio for b in grid_boxes])
    out = []
    for boxes, own, finer in zip(grid_boxes, pooled, fine_pooled, strict=True):
        sides = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        out.append(torch.where((sides < FINE_BELOW)[:, None], finer, own))
    return out


def detail_size(detail: str, image_size: int, patch: int) -> int | None:
    """The input size of the dense map regions are pooled from at this detail, in whole patches;
    None for the model's own."""
    if detail == "normal":
        return None
    return round(image_size * HIGH_DETAIL_SCALE / patch) * patch


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


def segment_boxes(dense: Any, thresholds: tuple[float, ...], max_fraction: float = 0.7) -> list[Any]:
    """Boxes (grid units) around connected groups of similar patches, for a batch of dense maps
    [B, D, gh, gw]; one [N_i, 4] tensor per image, rows sorted and distinct.

    Neighbouring patches whose projected vectors have cosine >= t are joined; each group of two
    or more patches, smaller than max_fraction of the grid, gives its bounding box. Several
    thresholds give a coarse-to-fine set. Window proposals cut objects at fixed sizes; these
    follow what the model sees, so small objects get a tight box too.

    Components are labelled for all images and thresholds at once by min-label propagation with
    hooking and pointer jumping, until no joined neighbours disagree.
    """
    import torch
    import torch.nn.functional as F

    batch, _, gh, gw = dense.shape
    cells, levels = gh * gw, len(thresholds)
    if batch == 0 or levels == 0:
        return [torch.zeros((0, 4)) for _ in range(batch)]
    unit = F.normalize(dense.float(), dim=1)
    limits = torch.tensor(thresholds, dtype=torch.float32).view(1, -1, 1, 1)
    right = (unit[:, :, :, :-1] * unit[:, :, :, 1:]).sum(1).unsqueeze(1) >= limits  # [B, T, gh, gw-1]
    down = (unit[:, :, :-1, :] * unit[:, :, 1:, :]).sum(1).unsqueeze(1) >= limits  # [B, T, gh-1, gw]
    big = cells  # larger than any label
    labels = torch.arange(cells).view(1, 1, gh, gw).expand(batch, levels, gh, gw).contiguous()
    for _ in range(cells):
        # Each patch looks at the labels of the neighbours it is joined to...
        best = labels.clone()
        best[..., :-1] = torch.minimum(best[..., :-1], torch.where(right, labels[..., 1:], big))
        best[..., 1:] = torch.minimum(best[..., 1:], torch.where(right, labels[..., :-1], big))
        best[..., :-1, :] = torch.minimum(best[..., :-1, :], torch.where(down, labels[..., 1:, :], big))
        best[..., 1:, :] = torch.minimum(best[..., 1:, :], torch.where(down, labels[..., :-1, :], big))
        flat, best = labels.view(batch, levels, cells), best.view(batch, levels, cells)
        if torch.equal(best, flat):
            break
        # ...hooks its label onto the smallest one seen by any patch with that label, and every
        # patch then jumps to its label's label (twice), so labels spread far in each round.
        hooked = flat.scatter_reduce(2, flat, best, "amin")
        flat = torch.gather(hooked, 2, flat)
        flat = torch.gather(flat, 2, flat)
        labels = torch.gather(flat, 2, flat).view_as(labels)
    # One key per (image, threshold, component); bounding boxes by scatter min/max.
    key = (torch.arange(batch * levels).view(batch, levels, 1) * cells + labels.view(batch, levels, cells)).flatten()
    ys = torch.arange(gh).repeat_interleave(gw).repeat(batch * levels)
    xs = torch.arange(gw).repeat(gh).repeat(batch * levels)
    slots = batch * levels * cells
    count = torch.bincount(key, minlength=slots)
    x0 = torch.full((slots,), big).scatter_reduce(0, key, xs, "amin")
    y0 = torch.full((slots,), big).scatter_reduce(0, key, ys, "amin")
    x1 = torch.full((slots,), -1).scatter_reduce(0, key, xs, "amax") + 1
    y1 = torch.full((slots,), -1).scatter_reduce(0, key, ys, "amax") + 1
    valid = (count >= 2) & (count <= max_fraction * cells)
    image = torch.arange(slots) // (levels * cells)
    rows = torch.stack([image, x0, y0, x1, y1], 1)[valid]
    rows = torch.unique(rows, dim=0)  # sorted: by image, then box
    per_image = torch.bincount(rows[:, 0], minlength=batch).tolist()
    return [b.float() for b in torch.split(rows[:, 1:], per_image)]


def high_detail_cap(max_regions: int) -> int:
    """The regions a high detail keeps per image for a regions.max_regions."""
    return math.ceil(max_regions * HIGH_DETAIL_REGIONS)


def proposal_constants(detail: str) -> dict[str, Any] | None:
    """The module's constants that shape the regions of a high detail beyond the regions config
    (a cache of encoded regions and an index's manifest key on them); None at normal detail,
    whose regions the config describes in full."""
    if detail == "normal":
        return None
    return {
        "high": [HIGH_DETAIL_SCALE, FINE_BELOW, HIGH_DETAIL_WINDOWS, HIGH_DETAIL_REGIONS],
        "pixels": [
            PIXEL_SIDE,
            PIXEL_SIGMA,
            PIXEL_MIN_SIZE,
            PIXEL_MIN_BOX,
            PIXEL_MAX_FRACTION,
            PIXELS_REPLACE_SEGMENTS,
        ],
    }


def pixel_segment_boxes(image: Any, width: int, height: int, scales: tuple[float, ...]) -> Any:
    """Boxes (pixels of the full width x height picture) around the segments of a decoded
    picture (PIL, any size) at each of `scales`, rows distinct: float32 [N, 4] (see PIXEL_SIDE)."""
    import numpy as np
    from scipy.ndimage import find_objects
    from skimage.segmentation import felzenszwalb

    factor = PIXEL_SIDE / min(image.size)
    if factor < 1:
        size = (max(round(image.width * factor), 1), max(round(image.height * factor), 1))
        image = image.resize(size, resample=2, reducing_gap=2.0)  # bilinear
    pixels = np.asarray(image.convert("RGB"))
    rows, cols = pixels.shape[:2]
    found = []
    for scale in scales:
        labels = felzenszwalb(pixels, scale=scale, sigma=PIXEL_SIGMA, min_size=PIXEL_MIN_SIZE)
        # find_objects: each label's bounding slices (labels from 1, so shifted by one).
        found += [(x.start, y.start, x.stop, y.stop) for y, x in filter(None, find_objects(labels + 1))]
    boxes = np.unique(np.array(found, dtype=np.int64).reshape(-1, 4), axis=0)
    sides = boxes[:, 2:] - boxes[:, :2]
    keep = (sides.min(1) >= PIXEL_MIN_BOX) & (sides.prod(1) <= PIXEL_MAX_FRACTION * rows * cols)
    scale_xy = np.array([width / cols, height / rows] * 2, dtype=np.float32)
    return boxes[keep].astype(np.float32) * scale_xy


def from_grid(boxes: Any, width: Any, height: Any, grid: tuple[int, int], image_size: int, resize: str) -> Any:
    """The inverse of to_grid: grid-unit boxes -> pixels of the original image. width and height
    are one image's size, or tensors [N] giving each box's image size."""
    import torch

    grid_h, grid_w = grid
    boxes = boxes.float()
    w = torch.as_tensor(width, dtype=torch.float32).reshape(-1)
    h = torch.as_tensor(height, dtype=torch.float32).reshape(-1)
    if resize == "squash":
        sx, sy = w / grid_w, h / grid_h
        ox = oy = torch.zeros_like(w)
    else:
        scale = image_size / torch.minimum(w, h)
        sx = sy = image_size / grid_w / scale
        ox = (w * scale - image_size) / 2 / scale
        oy = (h * scale - image_size) / 2 / scale
    out = torch.stack([boxes[:, 0] * sx + ox, boxes[:, 1] * sy + oy, boxes[:, 2] * sx + ox, boxes[:, 3] * sy + oy], 1)
    out[:, 0::2] = torch.minimum(out[:, 0::2].clamp(min=0), w.unsqueeze(1))
    out[:, 1::2] = torch.minimum(out[:, 1::2].clamp(min=0), h.unsqueeze(1))
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


def select(
    proposals: list[tuple[Any, Any]], vectors: list[Any], global_vectors: Any, config: RegionConfig
) -> list[Regions]:
    """Keep at most config.max_regions regions per image: user boxes and the full image first,
    then segment boxes, then the windows that differ most from the global vector, after box NMS
    and near-duplicate removal. Works on the whole batch at once, padded to the longest list.

    Both filters are greedy in rank order: a region is dropped when it is too close (IoU above
    nms_iou; then, among the survivors, cosine above dedup_cosine) to a region kept before it.
    The loops run over rank positions, not over images.
    """
    import torch

    batch = len(proposals)
    counts = [len(boxes) for boxes, _ in proposals]
    width = max(counts, default=0)
    if width == 0:
        return [Regions(boxes, scales, vecs) for (boxes, scales), vecs in zip(proposals, vectors, strict=True)]
    dim = global_vectors.shape[1]
    valid = torch.arange(width).view(1, -1) < torch.tensor(counts).view(-1, 1)
    boxes = torch.zeros((batch, width, 4))
    scales = torch.zeros((batch, width))
    vecs = torch.zeros((batch, width, dim))
    boxes[valid] = torch.cat([b for b, _ in proposals]).float()
    scales[valid] = torch.cat([s for _, s in proposals]).float()
    vecs[valid] = torch.cat(vectors).float()
    distinct = 1.0 - torch.bmm(vecs, global_vectors.float().unsqueeze(2)).squeeze(2)
    priority = distinct + (scales == USER_BOX) * 10.0 + (scales >= 1.0) * 5.0 + (scales == SEGMENT) * 2.0
    # Rank by priority rounded to 1e-3, ties in proposal order, so that float noise from batching
    # rarely changes which regions are kept.
    key = torch.where(valid, -torch.round(priority.double() * 1000), torch.inf)
    order = torch.sort(key, dim=1, stable=True).indices
    take = order.unsqueeze(2)
    boxes = boxes.gather(1, take.expand(-1, -1, 4))
    scales = scales.gather(1, order)
    vecs = vecs.gather(1, take.expand(-1, -1, dim))
    valid = valid.gather(1, order)
    similar = torch.bmm(vecs, vecs.transpose(1, 2)) > config.dedup_cosine
    similar &= (scales != USER_BOX).unsqueeze(1)  # user boxes are never dropped as duplicates
    chosen = _greedy(_nms_in_rank_order(boxes, valid, config.nms_iou), similar)
    chosen &= torch.cumsum(chosen, dim=1) <= config.max_regions
    out = []
    for b in range(batch):
        index = torch.sort(order[b][chosen[b]]).values  # back to proposal order
        (pboxes, pscales), pvecs = proposals[b], vectors[b]
        out.append(Regions(pboxes[index], pscales[index], pvecs[index]))
    return out


def _greedy(alive: Any, close: Any) -> Any:
    """Greedy suppression in rank order, for a batch: [B, N] candidates and [B, N, N] "j is too
    close to i" -> [B, N] survivors, where a candidate survives unless it is close to an earlier
    survivor. Only the positions that can suppress anything are visited."""
    import torch

    close = torch.triu(close, diagonal=1) & alive.unsqueeze(2) & alive.unsqueeze(1)
    alive = alive.clone()
    for i in torch.nonzero(close.any(dim=2).any(dim=0)).flatten().tolist():
        alive[:, i + 1 :] &= ~(alive[:, i : i + 1] & close[:, i, i + 1 :])
    return alive


def _nms_in_rank_order(boxes: Any, valid: Any, iou: float) -> Any:
    """Greedy box NMS of each image's ranked boxes [B, N, 4] -> [B, N] survivors: a box is dropped
    when its IoU with a box kept before it exceeds `iou`. torchvision's batched_nms does the work
    (per image, in C++); scores that fall with the rank position make it visit boxes in our order."""
    import torch
    from torchvision.ops import batched_nms

    image, position = torch.nonzero(valid, as_tuple=True)
    chosen = torch.zeros_like(valid)
    if len(image) == 0:
        return chosen
    scores = (valid.shape[1] - position).float()  # distinct and exact in float32
    keep = batched_nms(boxes[image, position].float(), scores, image, iou)
    chosen[image[keep], position[keep]] = True
    return chosen


def image_regions(
    dense: Any,
    global_vectors: Any,
    sizes: list[tuple[int, int]],
    grid: tuple[int, int],
    image_size: int,
    resize: str,
    config: RegionConfig,
    user_boxes: list[Any] | None = None,
    fine: Any = None,
    pixel_boxes: list[Any] | None = None,
) -> list[Regions]:
    """Proposals (+ user boxes) for a batch of images, pooled from their dense maps and selected;
    with a fine map (regions.detail "high"), small boxes are pooled from it (pool_detailed) and
    windows of HIGH_DETAIL_WINDOWS join the proposals. pixel_boxes[i] (pixels, boxes around
    segments of the picture's pixels: pixel_segment_boxes, at any detail) join as segment boxes,
    in place of the dense-map segments (PIXELS_REPLACE_SEGMENTS)."""
    import torch

    dense_segments = bool(config.segments) and not (pixel_boxes is not None and PIXELS_REPLACE_SEGMENTS)
    segments = segment_boxes(dense, config.segments) if dense_segments else None
    segment_pixels: tuple[Any, ...] = ()
    if segments is not None:  # to pixels for the whole batch at once
        counts = torch.tensor([len(b) for b in segments])
        widths = torch.tensor([w for w, _ in sizes], dtype=torch.float32).repeat_interleave(counts)
        heights = torch.tensor([h for _, h in sizes], dtype=torch.float32).repeat_interleave(counts)
        flat = from_grid(torch.cat(segments), widths, heights, grid, image_size, resize)
        segment_pixels = torch.split(flat, counts.tolist())
    proposals, grid_boxes = [], []
    for i, (width, height) in enumerate(sizes):
        parts = []  # (pixels, labels, grid units) of each kind, in the order select() ranks ties
        if user_boxes and user_boxes[i] is not None and len(user_boxes[i]):
            parts.append(_given(user_boxes[i], USER_BOX, width, height, grid, image_size, resize))
        if segments is not None:
            parts.append((segment_pixels[i], torch.full((len(segments[i]),), SEGMENT), segments[i]))
        if pixel_boxes is not None and len(pixel_boxes[i]):
            parts.append(_given(pixel_boxes[i], SEGMENT, width, height, grid, image_size, resize))
        scales = config.scales if fine is None else config.scales + HIGH_DETAIL_WINDOWS
        parts.append(_windows(width, height, scales, config.overlap, grid, image_size, resize))
        pixels, labels, grid_units = (torch.cat(part) for part in zip(*parts, strict=True))
        proposals.append((pixels, labels))
        grid_boxes.append(grid_units)
    if fine is not None:
        config = replace(config, max_regions=high_detail_cap(config.max_regions))
    return select(proposals, pool_detailed(dense, grid_boxes, fine), global_vectors, config)


def _given(
    boxes: Any, label: float, width: int, height: int, grid: tuple[int, int], image_size: int, resize: str
) -> tuple[Any, Any, Any]:
    """Boxes given in pixels of one image (user boxes, pixel segments) as proposals with this
    label: (pixels, labels, grid units), as _windows gives its own."""
    import torch

    pixels = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return pixels, torch.full((len(pixels),), label), to_grid(pixels, width, height, grid, image_size, resize)


@lru_cache(maxsize=64)
def _windows(
    width: int,
    height: int,
    scales: tuple[float, ...],
    overlap: float,
    grid: tuple[int, int],
    image_size: int,
    resize: str,
) -> tuple[Any, Any, Any]:
    """Window proposals of one image size in pixels and in grid units (photo folders repeat a
    few sizes, so these are computed once per size). Callers must not modify them."""
    boxes, scales_out = window_boxes(width, height, scales, overlap)
    return boxes, scales_out, to_grid(boxes, width, height, grid, image_size, resize)
