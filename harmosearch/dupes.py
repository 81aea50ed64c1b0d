"""Duplicate photos: exact copies and near-duplicates, each group with a suggested keeper.

Exact copies share a content hash. Near-duplicates (the same picture resized, re-encoded or
cropped a little) are found in two steps:

1. Candidates: pairs whose global vectors have cosine similarity >= `threshold` (a blocked
   matrix product over the L2-normalised vectors, exact, O(n^2 d) time, O(n) memory per block).
2. A check that keeps different shots of one scene apart (a burst, the same view a minute
   later: their vectors are as close as a copy's). A pair is refused when
   - their aspect ratios differ by more than MAX_ASPECT_CHANGE (a crop of a few percent changes
     it a little; a portrait and a landscape shot differ a lot);
   - both have a capture time from the camera and they lie more than MAX_TIME_GAP seconds apart
     (copies keep the EXIF time; times taken from file mtimes say nothing and must be NaN);
   - with a `thumbnail` loader: after aligning the two small pictures for a crop, some part of
     them differs by more than `pixel_threshold` (see `pixel_difference`). A copy differs
     everywhere a little (resampling, compression); another shot differs a lot somewhere (a
     person moved, an object changed colour).

Groups are the connected components of accepted pairs (with exact copies joined in), so a
chain of pairs can join two pictures that were not compared directly. Each group's keeper is
the first by: most pixels, then camera formats before derived ones (RAW, HEIC/AVIF, JPEG, TIFF,
PNG, WebP, others), then the larger file (less compressed), then the oldest capture, then the
shortest path, then the path.

`index_duplicates` runs this over the stills of an index (`harmosearch dupes`).
`bench.dupes.make_eval_set` draws a set of known duplicates and near-misses from synthetic scenes,
and `bench.dupes.pair_scores` measures a grouping on it (benchmarks/dupes.py runs both through
the encoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harmosearch.errors import DataError

DEFAULT_THRESHOLD = 0.76  # chosen on benchmarks/dupes.py's validation seed with harmo-tiny vectors
PIXEL_THRESHOLD = 0.09  # likewise
MAX_ASPECT_CHANGE = 0.12  # |log(aspect ratio a / aspect ratio b)|: a crop of 10% from one side is 0.105
MAX_TIME_GAP = 2.0  # seconds between two cameras' capture times for a pair still to be one shot
THUMB_SIDE = 128  # the long side thumbnails are reduced to before comparison
COMPARE_SIDE = 48  # aligned pictures are compared at COMPARE_SIDE x COMPARE_SIDE ...
CELLS = 12  # ... in CELLS x CELLS cells; the worst cell decides
MAX_CROP = 0.12  # the most a side can be cropped for the alignment

FORMAT_RANK = {
    **{ext: 0 for ext in (".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw")},
    **{ext: 1 for ext in (".heic", ".heif", ".hif", ".avif")},
    **{ext: 2 for ext in (".jpg", ".jpeg", ".jpe")},
    **{ext: 3 for ext in (".tif", ".tiff")},
    ".png": 4,
    ".webp": 5,
}
OTHER_FORMAT = 6


@dataclass(frozen=True)
class DupeGroup:
    kind: Literal["exact", "near"]  # exact: all members share one content hash
    members: tuple[int, ...]  # row numbers of the inputs, keeper first, then in keeper order
    keeper: int
    similarity: float  # the lowest cosine between the keeper's global vector and a member's

    def to_dict(self, paths: Sequence[str]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "keeper": paths[self.keeper],
            "members": [paths[i] for i in self.members],
            "similarity": round(self.similarity, 4),
        }


def find_duplicates(
    paths: Sequence[str],
    sha256: Sequence[str],
    widths: Sequence[int] | np.ndarray,
    heights: Sequence[int] | np.ndarray,
    vectors: np.ndarray,
    taken: Sequence[float] | np.ndarray | None = None,
    file_sizes: Sequence[int] | np.ndarray | None = None,
    thumbnail: Callable[[int], Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    pixel_threshold: float = PIXEL_THRESHOLD,
) -> list[DupeGroup]:
    """Groups of exact copies and near-duplicates among n images (see the module doc).

    paths, sha256, widths, heights: per image; vectors: [n, d] L2-normalised global vectors;
    taken: capture times in seconds from the camera (EXIF or a video's creation time), NaN where
    unknown or taken from the mtime; file_sizes: bytes; thumbnail(i): a PIL image of image i
    (any size; loaded only for candidate pairs, once each; `open_still(path, min_side=128)` is
    fast; an image whose thumbnail raises DataError joins no near-duplicate group). Without it,
    pairs are judged by vectors, aspect ratio and time alone.
    Groups come largest first, then by their keeper's path.
    """
    n = len(paths)
    vectors = np.asarray(vectors, dtype=np.float32)
    if not (len(sha256) == len(widths) == len(heights) == len(vectors) == n):
        raise DataError("paths, hashes, sizes and vectors must describe the same images")
    times = np.full(n, np.nan) if taken is None else np.asarray(taken, dtype=np.float64)
    sizes = np.zeros(n) if file_sizes is None else np.asarray(file_sizes, dtype=np.float64)
    order = keeper_order(paths, np.asarray(widths), np.asarray(heights), times, sizes)
    pairs = candidate_pairs(sha256, widths, heights, vectors, times, threshold)
    thumbs: dict[int, Any] = {}

    def thumb(i: int) -> Any:
        if i not in thumbs:
            try:
                thumbs[i] = _prepare(thumbnail(i))  # type: ignore[misc]
            except DataError:  # gone or damaged since it was indexed: it cannot be checked
                thumbs[i] = None
        return thumbs[i]

    joined = _Components(n)
    accepted = []
    for i, j, _ in pairs:
        # A pair already joined through others needs no look at its pixels.
        if joined.find(i) == joined.find(j):
            continue
        if thumbnail is not None:
            a, b = thumb(i), thumb(j)
            if a is None or b is None or _aligned_difference(a, b) > pixel_threshold:
                continue
        joined.union(i, j)
        accepted.append((i, j))
    return group_duplicates(paths, sha256, vectors, order, accepted)


@dataclass(frozen=True)
class IndexDuplicates:
    """The duplicate groups of an index's stills; members are row numbers into `paths`."""

    groups: list[DupeGroup]
    paths: list[str]  # relative to the photo root
    sizes: list[int]  # bytes
    stills: int  # how many stills were compared

    def removable_bytes(self) -> int:
        """What deleting every group's non-keepers would free."""
        return sum(self.sizes[i] for g in self.groups for i in g.members if i != g.keeper)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stills": self.stills,
            "removable_bytes": self.removable_bytes(),
            "groups": [g.to_dict(self.paths) for g in self.groups],
        }


def index_duplicates(
    reader: Any, photos_root: Path, threshold: float = DEFAULT_THRESHOLD, pixel_threshold: float = PIXEL_THRESHOLD
) -> IndexDuplicates:
    """Duplicate groups among the stills of an index (`store.IndexReader`; video frames are left
    out), from its stored global vectors, sizes, hashes and capture times; the pixel check reads
    small versions of the files under `photos_root` (a file that cannot be read joins only
    exact-copy groups)."""
    from harmosearch.media.formats import open_still

    images = reader.images
    rows = np.flatnonzero(np.isnan(np.asarray(images["frame_time"], dtype=np.float64)))
    paths = [str(p) for p in images["path"][rows]]
    from_camera = np.isin(np.asarray(images["time_source"][rows], dtype=object), ["exif", "video"])
    taken = np.where(from_camera, np.asarray(images["taken_local"][rows], dtype=np.float64), np.nan)
    sizes = np.asarray(images["size"][rows], dtype=np.int64)
    groups = find_duplicates(
        paths,
        [str(h) for h in images["sha256"][rows]],
        np.asarray(images["width"][rows]),
        np.asarray(images["height"][rows]),
        np.asarray(reader.global_vectors[rows], dtype=np.float32),
        taken=taken,
        file_sizes=sizes,
        thumbnail=lambda i: open_still(Path(photos_root) / paths[i], min_side=THUMB_SIDE).image,
        threshold=threshold,
        pixel_threshold=pixel_threshold,
    )
    return IndexDuplicates(groups, paths, [int(s) for s in sizes], len(rows))


def candidate_pairs(
    sha256: Sequence[str],
    widths: Sequence[int] | np.ndarray,
    heights: Sequence[int] | np.ndarray,
    vectors: np.ndarray,
    taken: np.ndarray,
    threshold: float,
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) that may be near-duplicates, most similar first: one image per
    content hash, cosine >= threshold, aspect ratios within MAX_ASPECT_CHANGE, and capture
    times (NaN: unknown) at most MAX_TIME_GAP apart. Their pixels are not looked at."""
    aspect = np.log(np.asarray(widths, dtype=np.float64) / np.asarray(heights, dtype=np.float64))
    first: dict[str, int] = {}
    for i, digest in enumerate(sha256):
        first.setdefault(digest, i)
    representatives = np.array(sorted(first.values()), dtype=np.int64)
    rows, cols, sims = similar_pairs(np.asarray(vectors, dtype=np.float32)[representatives], threshold)
    pairs = []
    for r, c, sim in zip(rows, cols, sims, strict=True):
        i, j = int(representatives[r]), int(representatives[c])
        if abs(aspect[i] - aspect[j]) > MAX_ASPECT_CHANGE:
            continue
        if abs(taken[i] - taken[j]) > MAX_TIME_GAP:  # NaN compares False: unknown times never refuse
            continue
        pairs.append((i, j, float(sim)))
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs


def group_duplicates(
    paths: Sequence[str],
    sha256: Sequence[str],
    vectors: np.ndarray,
    order: np.ndarray,
    accepted: Sequence[tuple[int, int]],
) -> list[DupeGroup]:
    """The groups that exact copies and the accepted near-duplicate pairs make (connected
    components), each with its members in keeper order (`order`, from keeper_order)."""
    joined = _Components(len(paths))
    by_hash: dict[str, int] = {}
    for i, digest in enumerate(sha256):
        joined.union(by_hash.setdefault(digest, i), i)
    for i, j in accepted:
        joined.union(i, j)
    components: dict[int, list[int]] = {}
    for i in order:
        components.setdefault(joined.find(int(i)), []).append(int(i))
    groups = []
    for members in components.values():
        if len(members) < 2:
            continue
        keeper = members[0]
        kind: Literal["exact", "near"] = "exact" if len({sha256[i] for i in members}) == 1 else "near"
        similarity = float(np.min(vectors[members] @ vectors[keeper])) if kind == "near" else 1.0
        groups.append(DupeGroup(kind, tuple(members), keeper, min(similarity, 1.0)))
    groups.sort(key=lambda g: (-len(g.members), paths[g.keeper]))
    return groups


class _Components:
    """Union-find over row numbers."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(j)] = self.find(i)


def keeper_order(
    paths: Sequence[str], widths: np.ndarray, heights: np.ndarray, taken: np.ndarray, file_sizes: np.ndarray
) -> np.ndarray:
    """Row numbers from the best keeper to the worst (see the module doc for the order)."""

    def key(i: int) -> tuple[Any, ...]:
        oldest = taken[i] if math.isfinite(taken[i]) else math.inf
        rank = FORMAT_RANK.get(Path(paths[i]).suffix.lower(), OTHER_FORMAT)
        return (-widths[i] * heights[i], rank, -file_sizes[i], oldest, len(paths[i]), paths[i])

    return np.array(sorted(range(len(paths)), key=key), dtype=np.int64)


def similar_pairs(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with vectors[i] . vectors[j] >= threshold: (i, j, similarity), by i then j.

    Blocks of rows against the rows after them, each block at most ~16M similarities, so memory
    stays bounded whatever the number of vectors.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    block = max(1, min(1024, (1 << 24) // max(n, 1)))
    found_i, found_j, found_s = [], [], []
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        sims = vectors[lo:hi] @ vectors[lo:].T  # [block, n - lo]; column c is row lo + c
        r, c = np.nonzero(sims >= threshold)
        keep = c > r  # the diagonal and the pairs below it come from earlier blocks or are self-pairs
        found_i.append(r[keep] + lo)
        found_j.append(c[keep] + lo)
        found_s.append(sims[r[keep], c[keep]])
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (
        np.concatenate(found_i).astype(np.int64),
        np.concatenate(found_j).astype(np.int64),
        np.concatenate(found_s).astype(np.float32),
    )


def pixel_difference(a: Any, b: Any) -> float:
    """How much two pictures differ where they differ most, after aligning them for a crop.

    Each picture is reduced to THUMB_SIDE pixels on its long side. One of them is taken to be
    a crop of the other: the crop box (each side cut by 0 to MAX_CROP) is found by a
    coarse-to-fine search that minimises the mean absolute RGB difference (0-1) between the
    box, resampled to COMPARE_SIDE x COMPARE_SIDE, and the other picture at that size; both
    directions are tried. The result is the largest mean difference over CELLS x CELLS cells
    of the aligned pair: ~0.01-0.03 for a resized, re-encoded or cropped copy, and the colour
    difference of whatever changed (often > 0.2) for another shot.
    """
    return _aligned_difference(_prepare(a), _prepare(b))


def _prepare(image: Any) -> Any:
    image = image.convert("RGB")
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return image


def _aligned_difference(a: Any, b: Any) -> float:
    return min(_worst_cell(a, b), _worst_cell(b, a))


def _worst_cell(outer: Any, inner: Any) -> float:
    """Align `inner` as a crop of `outer`, then the largest cell difference."""
    from PIL import Image

    side = COMPARE_SIDE
    target = np.asarray(inner.resize((side, side), Image.Resampling.BOX), dtype=np.float32) / 255.0
    width, height = outer.size

    def view(margins: tuple[float, float, float, float]) -> np.ndarray:
        left, top, right, bottom = margins
        box = (left * width, top * height, (1 - right) * width, (1 - bottom) * height)
        return np.asarray(outer.resize((side, side), Image.Resampling.BOX, box=box), dtype=np.float32) / 255.0

    def cost(margins: tuple[float, float, float, float]) -> float:
        return float(np.abs(view(margins) - target).mean())

    margins = (0.0, 0.0, 0.0, 0.0)
    best = cost(margins)
    for step in (0.04, 0.02, 0.01, 0.005):
        improved = True
        while improved:
            improved = False
            for side_index in range(4):
                for sign in (1, -1):
                    trial = list(margins)
                    trial[side_index] += sign * step
                    if not 0.0 <= trial[side_index] <= MAX_CROP:
                        continue
                    candidate = cost(tuple(trial))  # type: ignore[arg-type]
                    if candidate < best - 1e-6:
                        best, margins, improved = candidate, tuple(trial), True  # type: ignore[assignment]
    difference = np.abs(view(margins) - target).mean(axis=2)
    cell = side // CELLS
    per_cell = difference[: cell * CELLS, : cell * CELLS].reshape(CELLS, cell, CELLS, cell).mean(axis=(1, 3))
    return float(per_cell.max())
