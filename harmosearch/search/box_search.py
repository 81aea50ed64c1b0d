"""Box search: the box shown for a lexeme, searched again on the result's dense maps.

The indexed regions rank images, but the box of the best region is often a slice of the object
(a piece of a ring), a window around it, or, for a small object, no fit at all: the smallest
window is a quarter of the short side. For the results shown, the image is encoded again, at
the model's own input size and at `scale` times it (position embeddings resized, see
clip_adapter), and the lexeme scores every square box of a dense set (sides growing by RATIO,
positions every quarter side) pooled as indexing pools regions (RoIAlign 1x1, 2x2 samples).
Boxes narrower than FINE_BELOW cells of the model's own grid are pooled from the fine map,
where a small object spans as many patches as the objects the model was trained on; wider ones
from the model's own map, where large objects do. The box shown is the largest scoring within
`margin` of the best, as for indexed regions (scoring.best_regions).

A lexeme's similarity to single patches does not find the object: measured on the validation
scenes, the patch with the highest similarity lies on the object for circles, squares and rings,
but off it for most stars, crosses and triangles, whose pooled boxes the model scores well. So
boxes are scored, not patches.

Every box of one side, at positions every quarter side, samples the map on one lattice (the
2x2 RoIAlign samples of a box sit a quarter and three quarters along each side), so each side
costs one separable interpolation of the map onto its lattice and four shifted sums, instead
of one RoIAlign per box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from harmosearch.search.contrast import Contrast

RATIO = 1.19  # successive box sides
FINE_BELOW = 3.0  # boxes narrower than this many cells of the model's own grid use the fine map
SMALLEST = 2.0  # the smallest side, in cells of the finest map searched


@dataclass(frozen=True)
class Sides:
    """The box sides (in cells of one dense map) searched on that map."""

    low: float
    high: float

    def values(self, grid: int) -> list[float]:
        """Sides from low, growing by RATIO, up to min(high, grid); the largest that fits is kept."""
        top = min(self.high, float(grid))
        if self.low > top:
            return []
        count = math.floor(math.log(top / self.low) / math.log(RATIO) + 1e-9) + 1
        return [self.low * RATIO**i for i in range(count)]


def positions(length: int, side: float) -> int:
    """How many boxes of `side` fit along `length` cells at a step of a quarter side."""
    return math.floor((length - side) / (side / 4) + 1e-6) + 1


def lattice_pool(dense: Any, side: float) -> Any:
    """RoIAlign (1x1, sampling ratio 2, aligned) of every box (x0, y0, x0 + side, y0 + side) with
    x0, y0 multiples of side / 4 inside the map, for maps [B, D, H, W] -> [B, D, ny, nx]
    (unnormalised), where box (i, j) starts at (j * side / 4, i * side / 4)."""
    _, _, height, width = dense.shape
    ny, nx = positions(height, side), positions(width, side)
    weights_y = _interpolation(height, side, ny + 2).to(dense.dtype)
    weights_x = _interpolation(width, side, nx + 2).to(dense.dtype)
    across = (dense.reshape(-1, width) @ weights_x.T).reshape(*dense.shape[:3], -1)  # one large product
    lattice = weights_y @ across
    # The samples of box (i, j) are lattice points i and i + 2 down, j and j + 2 across.
    return (lattice[:, :, :ny, :nx] + lattice[:, :, 2:, :nx] + lattice[:, :, :ny, 2:] + lattice[:, :, 2:, 2:]) / 4


def _interpolation(length: int, side: float, count: int) -> Any:
    """[count, length] bilinear weights of the points m * side / 4 - 0.5, m = 1..count, as
    RoIAlign samples a map: clamped at 0, the last cell taking points past its centre."""
    import torch

    points = (torch.arange(1, count + 1, dtype=torch.float64) * side / 4 - 0.5).clamp(min=0)
    low = points.floor().long()
    past = low >= length - 1
    frac = torch.where(past, 0.0, points - low)
    low = torch.where(past, length - 1, low)
    high = torch.where(past, length - 1, low + 1)
    weights = torch.zeros((count, length), dtype=torch.float64)
    rows = torch.arange(count)
    weights[rows, low] += 1 - frac
    weights[rows, high] += frac
    return weights.float()


def candidate_boxes(grid: tuple[int, int], sides: Sides) -> Any:
    """Every box lattice_pool scores on a map of `grid` cells, in its order: [N, 4] grid units."""
    import torch

    height, width = grid
    parts = []
    for side in sides.values(min(height, width)):
        ys = torch.arange(positions(height, side), dtype=torch.float32) * side / 4
        xs = torch.arange(positions(width, side), dtype=torch.float32) * side / 4
        y0, x0 = torch.meshgrid(ys, xs, indexing="ij")
        starts = torch.stack([x0.flatten(), y0.flatten()], 1)
        parts.append(torch.cat([starts, starts + side], 1))
    return torch.cat(parts) if parts else torch.zeros((0, 4))


def pool_candidates(dense: Any, sides: Sides) -> Any:
    """The L2-normalised vectors of candidate_boxes(grid, sides) on maps [B, D, H, W]: [B, N, D]."""
    import torch
    import torch.nn.functional as F

    _, dim, height, width = dense.shape
    pooled = [lattice_pool(dense, side).flatten(2) for side in sides.values(min(height, width))]
    if not pooled:
        return dense.new_zeros((dense.shape[0], 0, dim))
    return F.normalize(torch.cat(pooled, 2).transpose(1, 2), dim=-1)


@dataclass(frozen=True)
class BoxSearch:
    """The dense maps one search uses: the model's own (`coarse`) and, when scale > 1, one at
    `scale` times its input size (`fine`); each searches its own range of box sides."""

    input_size: int
    patch: int  # pixels of the model input per cell
    scale: float

    @property
    def fine_size(self) -> int:
        """scale x the input size, in whole patches, so the fine map covers the image exactly."""
        return round(self.input_size * self.scale / self.patch) * self.patch

    def sides(self, grid: int) -> tuple[Sides, Sides | None]:
        """(coarse sides, fine sides or None), in cells of each map; `grid` is the coarse one."""
        if self.fine_size <= self.input_size:
            return Sides(SMALLEST, float(grid)), None
        ratio = self.fine_size / self.input_size
        return Sides(FINE_BELOW, float(grid)), Sides(SMALLEST, FINE_BELOW * ratio)


def best_boxes(
    vectors: Sequence[Any],
    boxes: Sequence[Any],
    lexemes: Any,
    seeds: Any,
    margin: float,
    contrast: Contrast | None = None,
) -> tuple[Any, Any]:
    """For one image: candidate vectors [N_k, D] and their boxes [N_k, 4] (any shared frame, e.g.
    fractions of the model input) from each map, lexemes [L, D] and seeds [L, 4] in that frame
    (NaN rows: anywhere) -> (the box shown [L, 4], its score [L]): the largest box (the first on
    ties) scoring within `margin` of the best, among the boxes whose centre lies inside the seed
    (all boxes when none does). With a `contrast` (rows: the lexemes), the score is the best
    of those boxes' scores with the contrast's term added, as indexed regions rank
    (scoring.best_regions); the box is still chosen on the plain scores."""
    import torch

    vecs = torch.cat(list(vectors))
    frame = torch.cat(list(boxes))
    sims = vecs @ lexemes.T  # [N, L]
    centre_x = (frame[:, 0] + frame[:, 2]) / 2
    centre_y = (frame[:, 1] + frame[:, 3]) / 2
    inside = (
        (centre_x[:, None] >= seeds[None, :, 0])
        & (centre_x[:, None] <= seeds[None, :, 2])
        & (centre_y[:, None] >= seeds[None, :, 1])
        & (centre_y[:, None] <= seeds[None, :, 3])
    )
    inside |= ~inside.any(0, keepdim=True)  # no seed (NaN) or no centre inside: every box
    scores = torch.where(inside, sims, -torch.inf)
    best = scores.max(0).values
    # Rounded, so boxes of one side tie exactly wherever they are (the first one then wins).
    areas = torch.round((frame[:, 2] - frame[:, 0]) * (frame[:, 3] - frame[:, 1]), decimals=6)
    near = scores >= best - margin
    largest = torch.where(near, areas[:, None], -torch.inf)
    pick = largest.argmax(0)  # the first maximum
    if contrast is not None:
        term = torch.as_tensor(contrast.term(sims.numpy(), vecs.numpy()))
        return frame[pick], torch.where(inside, sims + term, -torch.inf).max(0).values
    return frame[pick], scores[pick, torch.arange(len(best))]


def as_seeds(boxes: np.ndarray) -> np.ndarray:
    """Indexed boxes [N, 4] as the seeds search_boxes takes: an empty box (an image without
    regions) is no seed (NaN), so the box is searched anywhere."""
    seeds = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    seeds[(seeds[:, 2] <= seeds[:, 0]) | (seeds[:, 3] <= seeds[:, 1])] = np.nan
    return seeds


def decode_side(encoder: Any, scale: float) -> int:
    """The short side, in pixels, a picture must keep when decoded for refinement at `scale`
    (a draft decode may go smaller than the photo, not smaller than the fine map's input)."""
    return math.ceil(encoder.image_size * scale)


def search_boxes(
    encoder: Any,
    images: Sequence[tuple[Any, int, int]],
    image_of: np.ndarray,
    lexemes: np.ndarray,
    seeds: np.ndarray,
    scale: float,
    margin: float,
    contrast: Contrast | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The box shown for each request r: lexeme r [R, D] in image image_of[r] [R] of `images`
    ((decoded RGB image, full width, full height)), near seeds[r] [R, 4] (pixels; NaN: anywhere).
    Images are encoded again at the model's input size and at `scale` times it, in batches.
    Returns (boxes [R, 4] in pixels of the original images, their scores [R]; with a `contrast`
    whose rows are the requests, the scores that rank, see best_boxes)."""
    import torch

    from harmosearch.regions.proposals import from_grid, to_grid

    search = BoxSearch(encoder.image_size, encoder.image_size // encoder.grid[0], scale)
    resize = encoder.config.resize
    size = encoder.image_size
    out_boxes = np.zeros((len(image_of), 4), np.float32)
    out_scores = np.zeros(len(image_of), np.float32)
    lexemes_t = torch.as_tensor(np.asarray(lexemes, dtype=np.float32))
    batch = encoder.config.batch_size
    for start in range(0, len(images), batch):
        part = images[start : start + batch]
        maps = [encoder.encode_images([im for im, _, _ in part])[1]]
        coarse_sides, fine_sides = search.sides(maps[0].shape[-1])
        ranges = [coarse_sides]
        if fine_sides is not None:
            maps.append(encoder.encode_images([im for im, _, _ in part], search.fine_size)[1])
            ranges.append(fine_sides)
        # Candidates of each map in fractions of the model input (its grid divided out).
        frames, pooled = [], []
        for dense, sides in zip(maps, ranges, strict=True):
            grid = dense.shape[-2:]
            frames.append(candidate_boxes(grid, sides) / torch.tensor([grid[1], grid[0], grid[1], grid[0]]))
            pooled.append(pool_candidates(dense, sides))
        for offset, (_, width, height) in enumerate(part):
            wanted = np.flatnonzero(image_of == start + offset)
            if len(wanted) == 0:
                continue
            seed = torch.as_tensor(np.asarray(seeds[wanted], dtype=np.float32)).reshape(-1, 4)
            known = ~torch.isnan(seed).any(1)
            seed[known] = to_grid(seed[known], width, height, (1, 1), size, resize)
            rivals = None if contrast is None else contrast.columns(wanted)
            boxes, scores = best_boxes([p[offset] for p in pooled], frames, lexemes_t[wanted], seed, margin, rivals)
            out_boxes[wanted] = from_grid(boxes, width, height, (1, 1), size, resize).numpy()
            out_scores[wanted] = scores.numpy()
    return out_boxes, out_scores
