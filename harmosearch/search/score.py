"""Lexemes against the regions of images: each image's best region score and the box to show.

One implementation serves `harmosearch query` (the candidate images of one query) and
`harmosearch bench` (every image against thousands of lexemes): regions of the requested images
are scored in blocks, and per (image, lexeme) the best score and the chosen row come from
segment reductions, without a Python loop over images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from harmosearch.store.vectors import reading_once, rows_as_float32, rows_dot

if TYPE_CHECKING:
    from harmosearch.config import SearchConfig
    from harmosearch.search.contrast import Contrast
    from harmosearch.search.count import PresenceRule, Tally
    from harmosearch.search.query import Query

BLOCK_ROWS = 65_536  # region rows scored at once
BLOCK_LEXEMES = 512


@dataclass(frozen=True)
class RegionTable:
    """Region vectors grouped by image: rows start[i]:start[i + 1] belong to image i."""

    vectors: np.ndarray  # [R, D], float16 or float32, L2-normalised
    boxes: np.ndarray  # [R, 4] pixels
    start: np.ndarray  # [I + 1]
    scales: np.ndarray | None = None  # [R] proposal scale; 1.0 marks the whole image
    bias: np.ndarray | None = None  # [R] added to every lexeme's score for the region (see penalising_windows)

    def penalising_windows(self, penalty: float) -> RegionTable:
        """This table with `penalty` taken off every score of a window proposal (0 < scale < 1),
        so that a segment box, the whole image or a user box wins over a window that scores about
        as well: windows are fixed squares, and a window cutting through an object of another
        shape ("red square" partly inside a window, for "red circle") often scores nearly as
        high as the object itself would."""
        if penalty == 0 or self.scales is None:
            return replace(self, bias=None)
        windows = (self.scales > 0) & (self.scales < 1)
        return replace(self, bias=np.where(windows, -penalty, 0.0).astype(np.float32))

    @property
    def n_images(self) -> int:
        return len(self.start) - 1

    def rows_of(self, image: int) -> slice:
        return slice(int(self.start[image]), int(self.start[image + 1]))

    def boxes_of(self, rows: np.ndarray) -> np.ndarray:
        """The boxes of region rows [...] -> [..., 4]; row -1 (an image without regions) is an empty box."""
        rows = np.asarray(rows, dtype=np.int64)
        boxes = np.zeros((*rows.shape, 4), np.float32)
        boxes[rows >= 0] = self.boxes[rows[rows >= 0]]
        return boxes


class PenalisedTable:
    """A region table with the window penalty a query asks for: the last one is kept, in one
    tuple, so that threads serving queries never see a table with another's penalty."""

    def __init__(self, plain: RegionTable, window_penalty: float) -> None:
        self.plain = plain
        self._last = (window_penalty, plain.penalising_windows(window_penalty))

    def at(self, window_penalty: float) -> RegionTable:
        penalty, table = self._last
        if penalty != window_penalty:
            table = self.plain.penalising_windows(window_penalty)
            self._last = (window_penalty, table)
        return table


def best_regions(
    table: RegionTable, images: np.ndarray, lexemes: np.ndarray, box_margin: float, contrast: Contrast | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each image in `images` [C] and lexeme vector [L, D]: the best region score [C, L],
    with the table's bias added to each region's (-1 for an image without regions), and the row
    of the region whose box to show [C, L] (-1 without regions): the largest region scoring
    within `box_margin` of the best, the first on ties, by the scores without the bias. The
    mean-pooled score favours small windows inside an object, so the best-scoring box alone is
    often a part of it (measured on synthetic scenes: grounding 46.9% -> 54.5% at 0.05). The
    bias (a window penalty) decides how images rank, not where the box goes: segments should win
    near-ties in ranking, but a window is often the better box (validation: grounding fell from
    57.5% to 54.0% when the penalised best also chose the box). A `contrast` (contrast.py) adds
    its term to every region's score the same way: it ranks, it does not choose the box."""
    scores, chosen, _ = _best_regions(table, images, lexemes, box_margin, contrast)
    return scores, chosen


def _best_regions(
    table: RegionTable, images: np.ndarray, lexemes: np.ndarray, box_margin: float, contrast: Contrast | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """best_regions, and the best scores without the table's bias or the contrast [C, L] (the
    same array when there is neither), from the same pass."""
    images = np.asarray(images, dtype=np.int64)
    lexemes = np.asarray(lexemes, dtype=np.float32).reshape(-1, table.vectors.shape[1])
    scores = np.full((len(images), len(lexemes)), -1.0, dtype=np.float32)
    adjusted = table.bias is not None or contrast is not None
    plain = scores.copy() if adjusted else scores
    chosen = np.full((len(images), len(lexemes)), -1, dtype=np.int64)
    if len(images) == 0 or len(lexemes) == 0:
        return scores, chosen, plain
    counts = table.start[images + 1] - table.start[images]
    for block in _image_blocks(counts):
        rows, offsets = _rows_of(table, images[block], counts[block])
        if len(rows) == 0:
            continue
        vectors = None if contrast is None else rows_as_float32(table.vectors, rows)  # the rivals' term's
        boxes = table.boxes[rows]
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        bias = None if table.bias is None else table.bias[rows][:, None]
        nonempty = block[counts[block] > 0]
        for lo in range(0, len(lexemes), BLOCK_LEXEMES):
            part = slice(lo, lo + BLOCK_LEXEMES)
            sims = rows_dot(table.vectors, rows, lexemes[part])
            best, pick = _reduce(sims, offsets, areas, box_margin)
            chosen[nonempty, part] = rows[pick]
            if adjusted:
                plain[nonempty, part] = best
                ranked = sims if bias is None else sims + bias
                if contrast is not None:
                    ranked = _contrasted(ranked, sims, vectors, offsets, contrast.columns(part))
                best = np.maximum.reduceat(ranked, offsets, axis=0)
            scores[nonempty, part] = best
    return scores, chosen, plain


def _contrasted(
    ranked: np.ndarray, sims: np.ndarray, vectors: np.ndarray, offsets: np.ndarray, contrast: Contrast
) -> np.ndarray:
    """Ranking scores [R, L] with the contrast's term, for rows grouped into images starting at
    `offsets`: each image's contrast.per_image best rows by `ranked` (the first on ties) gain the
    term, the others drop out (-inf), so the term is computed for those rows alone, and for each
    lexeme against its own rivals alone."""
    out = np.full(ranked.shape, -np.inf, dtype=np.float32)
    weighed = _best_per_image(ranked, offsets, contrast.per_image)
    for j in range(ranked.shape[1]):
        rows = np.flatnonzero(weighed[:, j])
        term = contrast.columns([j]).term(sims[rows, j : j + 1], vectors[rows])[:, 0]
        out[rows, j] = ranked[rows, j] + term
    return out


def _best_per_image(scores: np.ndarray, offsets: np.ndarray, k: int) -> np.ndarray:
    """[R, L] bool: per column, each image's (its rows start at `offsets`) k best rows by
    `scores`, the first on ties, taken one round at a time: the first row at its image's best,
    which then drops out. k rounds of whole-column passes cost less than sorting the rows when k
    is a handful (benchmarks/contrast_cost.py)."""
    n = len(scores)
    sizes = np.diff(np.append(offsets, n))
    left = np.array(scores, dtype=np.float32)
    chosen = np.zeros(scores.shape, dtype=bool)
    position = np.arange(n)[:, None]
    columns = np.broadcast_to(np.arange(scores.shape[1]), (len(offsets), scores.shape[1]))
    for _ in range(min(k, int(sizes.max(initial=0)))):
        best = np.maximum.reduceat(left, offsets, axis=0)
        first = np.minimum.reduceat(np.where(left == np.repeat(best, sizes, axis=0), position, n), offsets, axis=0)
        found = first < n  # not where an image's scores are NaN
        chosen[first[found], columns[found]] = True
        left[first[found], columns[found]] = -np.inf
    return chosen


def _image_blocks(counts: np.ndarray) -> list[np.ndarray]:
    """Consecutive groups of image positions holding at most about BLOCK_ROWS regions."""
    ends = np.cumsum(counts)
    group = ends // BLOCK_ROWS
    return [np.flatnonzero(group == g) for g in np.unique(group)]


def _rows_of(table: RegionTable, images: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The region rows of `images`, concatenated, and where each non-empty image's rows begin."""
    total = int(counts.sum())
    starts = table.start[images]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows = np.repeat(starts - offsets, counts) + np.arange(total)
    return rows, offsets[counts > 0]


def _reduce(sims: np.ndarray, offsets: np.ndarray, areas: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Per segment (an image's rows) and column (a lexeme): the best score, and the position of
    the largest-area row within `margin` of it (the first on ties)."""
    best = np.maximum.reduceat(sims, offsets, axis=0)
    sizes = np.diff(np.append(offsets, len(sims)))
    near = sims >= np.repeat(best, sizes, axis=0) - margin
    masked = np.where(near, areas[:, None], -np.inf)
    largest = np.maximum.reduceat(masked, offsets, axis=0)
    position = np.arange(len(sims))[:, None]
    first = np.where(masked == np.repeat(largest, sizes, axis=0), position, len(sims))
    return best, np.minimum.reduceat(first, offsets, axis=0)


def best_region_scores(region_vectors: np.ndarray, region_start: np.ndarray, lexemes: np.ndarray) -> np.ndarray:
    """[n_images, L]: per image and lexeme, the best cosine over the image's regions (-1 without
    regions). Regions are scored in image-aligned blocks of about BLOCK_ROWS rows."""
    region_start = np.asarray(region_start, dtype=np.int64)
    n = len(region_start) - 1
    best = np.full((n, len(lexemes)), -1.0, dtype=np.float32)
    if len(lexemes) == 0 or region_start[-1] == 0:
        return best
    first = 0
    while first < n:
        # the images whose regions fit in one block (at least one image)
        last = int(np.searchsorted(region_start, region_start[first] + BLOCK_ROWS, side="right")) - 1
        last = min(max(last, first + 1), n)
        lo, hi = int(region_start[first]), int(region_start[last])
        if hi > lo:
            sims = np.asarray(region_vectors[lo:hi], dtype=np.float32) @ lexemes.T
            starts = region_start[first:last] - lo
            has = region_start[first + 1 : last + 1] > region_start[first:last]
            best[first:last][has] = np.maximum.reduceat(sims, starts[has], axis=0)
        first = last
    return best


def top_regions(
    table: RegionTable,
    images: np.ndarray,
    lexemes: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    contrast: Contrast | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each lexeme's k best regions in each image, leaving out rows where `exclude` [R] is True:
    scores [C, L, k] (best first, -inf where an image has fewer than k) and rows [C, L, k] (-1
    there). Scores and order include the table's bias and the contrast's term."""
    images = np.asarray(images, dtype=np.int64)
    lexemes = np.asarray(lexemes, dtype=np.float32).reshape(-1, table.vectors.shape[1])
    counts = table.start[images + 1] - table.start[images]
    width = int(counts.max(initial=0))
    scores = np.full((len(images), len(lexemes), k), -np.inf, dtype=np.float32)
    rows = np.full((len(images), len(lexemes), k), -1, dtype=np.int64)
    if width == 0 or len(lexemes) == 0 or k < 1:
        return scores, rows
    padded = table.start[images][:, None] + np.arange(width)[None, :]  # [C, W]
    valid = np.arange(width)[None, :] < counts[:, None]
    padded = np.where(valid, padded, 0)
    if exclude is not None:
        valid &= ~exclude[padded]
    gathered = rows_as_float32(table.vectors, padded.reshape(-1))  # [C * W, D]
    plain = gathered @ lexemes.T
    sims = plain.reshape(len(images), width, len(lexemes)).transpose(0, 2, 1)
    if table.bias is not None:
        sims = sims + table.bias[padded][:, None, :]
    sims = np.where(valid[:, None, :], sims, -np.inf)
    if contrast is not None:
        sims = _top_contrasted(sims, plain, gathered, contrast, max(k, contrast.per_image))
    take = min(k, width)
    order = np.argsort(-sims, axis=2, kind="stable")[:, :, :take]
    scores[:, :, :take] = np.take_along_axis(sims, order, axis=2)
    picked = np.take_along_axis(np.broadcast_to(padded[:, None, :], sims.shape), order, axis=2)
    rows[:, :, :take] = np.where(np.isfinite(scores[:, :, :take]), picked, -1)
    return scores, rows


def _top_contrasted(
    sims: np.ndarray, plain: np.ndarray, gathered: np.ndarray, contrast: Contrast, weighed: int
) -> np.ndarray:
    """Ranking scores [C, L, W] with the contrast's term for each image's `weighed` best regions
    per lexeme (by `sims`, the first on ties); the others drop out (-inf)."""
    c, n_lexemes, width = sims.shape
    chosen = np.zeros(sims.shape, dtype=bool)
    left = sims.copy()
    for _ in range(min(weighed, width)):  # a round per region: the first at the best, which drops out
        best = np.argmax(left, axis=2)[:, :, None]
        np.put_along_axis(chosen, best, True, axis=2)
        np.put_along_axis(left, best, -np.inf, axis=2)
    chosen &= np.isfinite(sims)
    flat = chosen.transpose(0, 2, 1).reshape(c * width, n_lexemes)  # rows as `plain`'s
    term = np.zeros(plain.shape, dtype=np.float32)
    for j in range(n_lexemes):  # each lexeme's chosen rows against its own rivals
        rows = np.flatnonzero(flat[:, j])
        term[rows, j] = contrast.columns([j]).term(plain[rows, j : j + 1], gathered[rows])[:, 0]
    out = sims + term.reshape(c, width, n_lexemes).transpose(0, 2, 1)
    return np.where(chosen, out, -np.inf)


@dataclass(frozen=True)
class RegionMatch:
    """The regions chosen for a query's lexemes in each candidate image."""

    # [C, L] each lexeme's region score, the table's bias and the contrast's term included: a lone
    # lexeme's best (its box, `rows`, is chosen on the plain scores), a related one's chosen
    # region's (-1 where an image has no regions)
    scores: np.ndarray
    rows: np.ndarray  # [C, L] the row of the box shown (-1 there)
    relation_scores: np.ndarray  # [C, R] each relation's geometric score for the chosen boxes
    # [C, L] the plain scores, without the table's bias (the window penalty) or the contrast, as an
    # index's calibration measures unrelated queries: a lone lexeme's best region, a related
    # one's chosen region
    plain_scores: np.ndarray


def related_lexemes(relations: list[tuple[int, str, int, bool]]) -> list[int]:
    """The lexemes that are the subject or the object of a relation, in order."""
    return sorted({s for s, _, _, _ in relations} | {o for _, _, o, _ in relations})


def match_regions(
    table: RegionTable,
    images: np.ndarray,
    lexemes: np.ndarray,
    relations: list[tuple[int, str, int, bool]],
    box_margin: float,
    relation_weight: float,
    candidates: int,
    contrast: Contrast | None = None,
) -> RegionMatch:
    """Choose a region per lexeme in each image. Lexemes in no relation take their best region
    (the box shown as `best_regions` shows it). Lexemes linked by relations (subject, relation,
    object, negated) are chosen jointly among their `candidates` best regions, maximising their
    scores plus relation_weight times the relations' geometric scores (`relations.assign_boxes`);
    with a window penalty in the table that choice weighs the penalised scores, so for them the
    penalty (and the contrast's term, for the lexemes `contrast` covers) also steers which boxes
    are shown."""
    from harmosearch.search.relations import assign_boxes

    if not relations or relation_weight == 0 or len(images) == 0 or len(table.vectors) == 0:
        scores, rows, plain = _best_regions(table, images, lexemes, box_margin, contrast)
        return RegionMatch(scores, rows, np.zeros((len(scores), len(relations)), np.float32), plain)
    related = related_lexemes(relations)
    alone = [lexeme for lexeme in range(len(lexemes)) if lexeme not in related]
    scores = np.full((len(images), len(lexemes)), -1.0, dtype=np.float32)
    rows = np.full((len(images), len(lexemes)), -1, dtype=np.int64)
    plain = np.full((len(images), len(lexemes)), -1.0, dtype=np.float32)
    scores[:, alone], rows[:, alone], plain[:, alone] = _best_regions(
        table, images, lexemes[alone], box_margin, None if contrast is None else contrast.columns(alone)
    )
    position = {lexeme: i for i, lexeme in enumerate(related)}
    # The whole-image region holds every object and sits "near" all of them: it is no object's
    # box, so it is not a candidate for a lexeme in a relation.
    whole = table.scales >= 1.0 if table.scales is not None else None
    rivals = None if contrast is None else contrast.columns(related)
    top, top_rows = top_regions(table, images, lexemes[related], candidates, whole, rivals)
    valid = top_rows >= 0
    chosen = assign_boxes(
        np.where(valid, top, 0.0),
        valid,
        table.boxes[np.maximum(top_rows, 0)],
        [(position[s], name, position[o], negated) for s, name, o, negated in relations],
        relation_weight,
    )
    picked = np.take_along_axis(top_rows, np.maximum(chosen.choice, 0)[..., None], axis=2)[..., 0]
    found = chosen.choice >= 0
    scores[:, related] = np.where(found, chosen.lexeme_scores, -1.0)
    rows[:, related] = np.where(found, picked, -1)
    if contrast is None:  # the penalty is one number per region: take it back off
        bias = 0.0 if table.bias is None else table.bias[np.maximum(rows[:, related], 0)]
        plain[:, related] = np.where(found, scores[:, related] - bias, -1.0)
    else:  # the chosen regions scored again
        chosen_vectors = rows_as_float32(table.vectors, np.maximum(rows[:, related], 0))  # [C, l, D]
        plain[:, related] = np.where(found, np.einsum("cld,ld->cl", chosen_vectors, lexemes[related]), -1.0)
    return RegionMatch(scores, rows, np.nan_to_num(chosen.relation_scores, nan=0.0).astype(np.float32), plain)


@dataclass(frozen=True)
class Scored:
    """The parts of every candidate's score, before fusion (`fuse.fused_scores`)."""

    candidates: np.ndarray  # [C] image ids
    global_scores: np.ndarray  # [C] the query's global vector against each image's
    match: RegionMatch  # the region chosen for each lexeme, and the relations' scores
    negative_global: np.ndarray  # [C, N] each --not phrase against the image
    negative_regions: np.ndarray  # [C, N] and against its best region
    contrast: Contrast | None = None  # the lexemes' rivals, which weighed `match.scores`
    tally: Tally | None = None  # counted and negated lexemes (count.py); None when the query has none

    @property
    def n_lexemes(self) -> int:
        return self.match.scores.shape[1]

    @property
    def wanted(self) -> np.ndarray | slice:
        """The lexemes asked to be present (the columns the mean over lexemes takes): all but the
        negated ones."""
        return slice(None) if self.tally is None else np.flatnonzero(~self.tally.negated)

    @property
    def n_wanted(self) -> int:
        return self.n_lexemes if self.tally is None else int((~self.tally.negated).sum())


def score_candidates(
    plain: RegionTable,
    ranking: RegionTable,
    global_vectors: np.ndarray,
    candidates: np.ndarray,
    query: Query,
    settings: SearchConfig,
    contrast: Contrast | None = None,
    presence: PresenceRule | None = None,
) -> Scored:
    """Score the candidates for the query from the stored vectors: the global vectors, the
    regions chosen for its lexemes in `ranking` (the table with the window penalty), its --not
    phrases against the `plain` table (negatives know no window penalty), and, for a query that
    counts or negates a lexeme, the instances and presences `presence` finds in the plain table
    (count.py; its fallback rule when None)."""
    with reading_once():  # the candidates' rows are read once for all that scores them
        global_scores = rows_as_float32(global_vectors, candidates) @ query.global_vector
        match = match_regions(
            ranking,
            candidates,
            query.lexeme_vectors,
            query.relations,
            settings.box_margin,
            settings.relation_weight,
            settings.relation_candidates,
            contrast,
        )
        negative_global = np.zeros((len(candidates), 0), np.float32)
        negative_regions = negative_global
        if len(query.negative_global):
            negative_global = rows_as_float32(global_vectors, candidates) @ query.negative_global.T
            negative_regions, _ = best_regions(plain, candidates, query.negative_regions, 0.0)
        counted = None
        if query.quantified:
            from harmosearch.search.count import presence_rule, tally

            rule = presence or presence_rule(None, settings, 0.0)
            counted = tally(
                plain,
                candidates,
                query.lexeme_vectors,
                query.counts,
                query.negated,
                rule,
                settings.count_overlap,
                contrast,
                settings.count_rival_share,
                settings.count_centres,
                settings.count_segments,
            )
    return Scored(candidates, global_scores, match, negative_global, negative_regions, contrast, counted)
