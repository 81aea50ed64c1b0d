"""Counting and absence: how many instances of a counted lexeme ("two red circles") each candidate
shows, and how present a negated one ("without a blue square") is, in the units of the index's
calibration (`search.calibration`).

Presence. The calibration holds, per null query, the best score any region of the index reaches
for it (alpha 0): how high a region climbs for a thing the index may well not hold. A region
holds the lexeme's thing when its plain score (no window penalty, no rivals) reaches the
search.count_quantile quantile of that null. A negated lexeme's presence in an image is where
its best region's plain score falls in the null: the normal distribution function of the null's
mean and standard deviation at that score (on the validation pairs it won more pairs than the
null's empirical distribution function, which is flat between and beyond its hundred points).

Instances. The instances of a counted lexeme in an image are its regions that hold the thing,
one per object: taken best first, a region is left out when it overlaps a kept one by at least
search.count_overlap of the smaller box (windows of one object overlap each other; two objects'
boxes barely do), and, with search.count_centres, also when its box holds a kept one's centre
or its centre lies in a kept box (two halves of one object overlap little, but each holds the
other's centre or lies around it); the whole-image region is never an instance, and with
search.count_segments no fixed window is either: only boxes drawn around something (segments
of the picture, user boxes), since a window straddles two objects or covers part of one (an
image with windows alone, from an index built without segments, keeps its windows). With the
lexeme's rivals
(search/contrast.py: the phrases of search.vocabulary that name something else) a region holds
the thing only if the model, asked to choose between the lexeme and its rivals, gives the lexeme
at least search.count_rival_share of the probability: a box on a red star scores nearly as high
for "red circle" as one on a red circle, and would count as one.

Scoring. Counted and negated lexemes are matched by the vector of one instance ("a red circle"
for "two red circles": `model.quantities.instance_text`); the count term compares the instances
found n with the range asked [low, high] on a log scale, 0 inside it and

    d = |log((n + 1/2) / (k + 1/2))|,  k the nearer end of the range,

so "two" prefers two over three over one. A counted lexeme's score loses spread * count_weight
* d before the mean over lexemes (`fuse`), and the ranking subtracts spread * negation_weight *
the sum of the negated lexemes' presences, where spread is the standard deviation of the null
at the query's alpha: the terms are in units of how much unrelated queries' best scores vary on
this index. A negated lexeme takes no part in the mean over lexemes, nor in the retrieval of
candidates. An index without a
calibration falls back to FALLBACK_BAR, FALLBACK_NULL and FALLBACK_SPREAD, the bundled model's
values on the validation scenes (a warning says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from harmosearch.store.vectors import rows_as_float32, rows_dot

if TYPE_CHECKING:
    from harmosearch.config import SearchConfig

RegionTable = Any  # a search.score.RegionTable (score calls this stage, so it is not imported)

MAX_INSTANCES = 16  # instance boxes kept per image and lexeme (the count itself is not capped)
# Without a calibration: the presence bar, the null's mean and standard deviation at alpha 0 and
# the unit of the terms, in cosine: harmo-tiny's on the validation counting scenes (docs,
# Benchmarks: Counting and negation); another model's cosines live elsewhere, so a warning says to update.
FALLBACK_BAR = 0.36
FALLBACK_NULL = (0.41, 0.12)
# Also the unit of the ranking's amounts on an index without a calibration (calibration.ranking_unit):
# harmo-tiny's spread at alpha 0 on the validation scenes is 0.103 (flat, 200 scenes,
# benchmarks/results/scale_free_val.jsonl).
FALLBACK_SPREAD = 0.10


@dataclass(frozen=True)
class PresenceRule:
    """When a region holds a thing, how present a thing is, and the unit of the terms."""

    bar: float  # a region whose plain score reaches this holds the thing
    mean: float  # of the best scores of unrelated queries at alpha 0
    deviation: float  # their standard deviation
    spread: float  # the standard deviation of the null at the query's alpha
    calibrated: bool

    def presence(self, best: np.ndarray) -> np.ndarray:
        """Where best region scores fall in the null, in [0, 1]."""
        z = (np.asarray(best, dtype=np.float64) - self.mean) / max(self.deviation, 1e-9)
        return (0.5 * (1.0 + np.asarray(_erf(z / math.sqrt(2.0)), dtype=np.float64))).astype(np.float32)


_erf = np.frompyfunc(math.erf, 1, 1)


def presence_rule(calibration: Any, settings: SearchConfig, alpha: float) -> PresenceRule:
    """The rule of an index's calibration (None: the stated fallback) for a query fused at alpha."""
    if calibration is None:
        return PresenceRule(FALLBACK_BAR, *FALLBACK_NULL, FALLBACK_SPREAD, False)
    null = calibration.null_at(0.0)
    bar = float(np.quantile(null, settings.count_quantile))
    return PresenceRule(bar, float(np.mean(null)), calibration.spread(0.0), calibration.spread(alpha), True)


def presence_for(calibration: Any, query: Any, settings: SearchConfig, warnings: list[str]) -> PresenceRule | None:
    """The presence rule of a query that counts or negates (None for one that does not), fused
    at the alpha of its wanted lexemes; a warning when the index has no calibration."""
    if not query.quantified:
        return None
    if calibration is None:
        warnings.append("this index has no calibration: counts and negations use fixed bars; update the index")
    wanted = len(query.wanted)
    return presence_rule(calibration, settings, settings.alpha_for(wanted) if wanted else 1.0)


@dataclass(frozen=True)
class Tally:
    """What the candidates show of a query's counted and negated lexemes."""

    found: np.ndarray  # [C, L] instances found (0 for a lexeme neither counted nor negated)
    instances: np.ndarray  # [C, L, MAX_INSTANCES] their region rows, best first; -1 pads
    presence: np.ndarray  # [C, L] where each lexeme's best region falls in the null
    low: np.ndarray  # [L] the range asked (0 and inf where not counted)
    high: np.ndarray  # [L] float, inf for no upper bound
    counted: np.ndarray  # [L] bool
    negated: np.ndarray  # [L] bool
    spread: float

    def count_terms(self, weight: float) -> np.ndarray:
        """What each counted lexeme's score loses [C, L] (0 for the others): spread * weight * d."""
        distance = np.where(self.counted, count_distance(self.found, self.low, self.high), 0.0)
        return (self.spread * weight * distance).astype(np.float32)

    def absence_terms(self, weight: float) -> np.ndarray:
        """What the ranking subtracts for the negated lexemes [C]: spread * weight * their presences."""
        return (self.spread * weight * self.presence[:, self.negated].sum(1)).astype(np.float32)


def count_distance(found: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """|log((n + 1/2) / (k + 1/2))| for found n [C, L] and the range [low, high] [L] asked: 0
    inside it, k the nearer end outside."""
    n = np.asarray(found, dtype=np.float64)
    nearest = np.clip(n, np.asarray(low, np.float64), np.asarray(high, np.float64))
    return np.abs(np.log((n + 0.5) / (nearest + 0.5))).astype(np.float32)


def tally(
    table: RegionTable,
    images: np.ndarray,
    vectors: np.ndarray,
    counts: tuple[Any, ...],
    negated: tuple[bool, ...],
    rule: PresenceRule,
    overlap: float,
    rivals: Any = None,
    rival_share: float = 0.0,
    centres: bool = False,
    segments_only: bool = False,
) -> Tally:
    """Count every counted lexeme's instances and measure every negated one's presence in each
    of `images` (the plain table: no window penalty); vectors [L, D] are the lexemes'; counts
    [L] Count or None, negated [L]; rivals: the lexemes' search.contrast.Contrast, or None."""
    counted = np.array([c is not None for c in counts], dtype=bool)
    wanted = np.flatnonzero(counted | np.asarray(negated, dtype=bool))
    found = np.zeros((len(images), len(counts)), np.int64)
    rows = np.full((len(images), len(counts), MAX_INSTANCES), -1, np.int64)
    presence = np.zeros((len(images), len(counts)), np.float32)
    if len(wanted):
        chosen = None if rivals is None else rivals.columns(wanted)
        found[:, wanted], rows[:, wanted], best = find_instances(
            table, images, vectors[wanted], rule.bar, overlap, chosen, rival_share, centres, segments_only
        )
        presence[:, wanted] = rule.presence(best)
    low = np.array([c.low if c is not None else 0 for c in counts], dtype=np.float64)
    high = np.array([np.inf if c is None or c.high is None else c.high for c in counts], dtype=np.float64)
    return Tally(found, rows, presence, low, high, counted, np.asarray(negated, dtype=bool), rule.spread)


def find_instances(
    table: RegionTable,
    images: np.ndarray,
    vectors: np.ndarray,
    bar: float,
    overlap: float,
    rivals: Any = None,
    rival_share: float = 0.0,
    centres: bool = False,
    segments_only: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each image [C] and lexeme vector [L, D]: the number of instances [C, L], their rows
    [C, L, MAX_INSTANCES] (best first, -1 pads) and the best plain score of a region that is not
    the whole image [C, L] (-1 without one). Greedy suppression runs on every (image, lexeme)
    at once, one present region position at a time. With `rivals` (a Contrast of the L
    lexemes) and a rival_share above 0, a region holds a lexeme's thing only when the lexeme
    has at least that share against its rivals. With `centres`, a region whose box holds a kept
    one's centre, or whose centre lies in a kept box, is that one's object too. With
    `segments_only`, no window proposal (0 < scale < 1) is an instance in an image that has
    other boxes (segments, user boxes)."""
    sims, padded = _region_scores(table, images, vectors)  # [C, L, W], [C, W]
    best = np.where(np.isfinite(sims), sims, -1.0).max(axis=2, initial=-1.0)
    present = sims >= bar
    if rivals is not None and rival_share > 0:
        present &= _preferred(table, sims, padded, rivals, rival_share)
    if segments_only and table.scales is not None:
        scales = np.where(padded >= 0, table.scales[np.maximum(padded, 0)], 1.0)
        windows = (scales > 0) & (scales < 1)
        windows &= (scales <= 0).any(axis=1, keepdims=True)  # an image with windows alone keeps them
        present &= ~windows[:, None, :]
    depth = int(present.sum(axis=2).max(initial=0))
    found = np.zeros(sims.shape[:2], np.int64)
    rows = np.full((*sims.shape[:2], MAX_INSTANCES), -1, np.int64)
    if depth == 0:
        return found, rows, best
    order = np.argsort(-np.where(present, sims, -np.inf), axis=2, kind="stable")[:, :, :depth]
    candidate = np.take_along_axis(present, order, axis=2)  # [C, L, P]
    picked = np.take_along_axis(np.broadcast_to(padded[:, None, :], sims.shape), order, axis=2)
    kept = _suppressed(table.boxes[np.maximum(picked, 0)], candidate, overlap, centres)
    found = kept.sum(axis=2)
    first = np.argsort(~kept, axis=2, kind="stable")[:, :, :MAX_INSTANCES]  # kept positions, best first
    taken = min(MAX_INSTANCES, depth)
    rows[:, :, :taken] = np.where(
        np.take_along_axis(kept, first, axis=2), np.take_along_axis(picked, first, axis=2), -1
    )
    return found, rows, best


def _suppressed(boxes: np.ndarray, candidate: np.ndarray, overlap: float, centres: bool) -> np.ndarray:
    """Greedy suppression [C, L, P] of candidates in the order given (best first), boxes [C, L, P, 4]:
    a candidate is kept unless it overlaps a kept one by `overlap` of the smaller box (or, with
    `centres`, holds its centre or lies around it)."""
    overlaps = _overlap_of_smaller(boxes[..., :, None, :], boxes[..., None, :, :]) >= overlap  # [C, L, P, P]
    if centres:
        overlaps |= _holds_centre(boxes[..., :, None, :], boxes[..., None, :, :])
        overlaps |= _holds_centre(boxes[..., None, :, :], boxes[..., :, None, :])
    kept = np.zeros(candidate.shape, dtype=bool)
    for p in range(candidate.shape[-1]):
        kept[..., p] = candidate[..., p] & ~(kept[..., :p] & overlaps[..., p, :p]).any(axis=-1)
    return kept


def _preferred(table: RegionTable, sims: np.ndarray, padded: np.ndarray, rivals: Any, share: float) -> np.ndarray:
    """[C, L, W]: whether the model gives each lexeme at least `share` of the probability
    against its rivals at each region position (False at pads)."""
    image_of, position = np.nonzero(padded >= 0)
    rows = padded[image_of, position]
    plain = np.where(np.isfinite(sims[image_of, :, position]), sims[image_of, :, position], -1.0)
    log_p = replace(rivals, weight=1.0).term(plain, rows_as_float32(table.vectors, rows))  # [R, L]
    out = np.zeros(sims.shape, dtype=bool)
    out[image_of, :, position] = log_p >= math.log(share)
    return out


def _region_scores(table: RegionTable, images: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain scores of every region of each image but the whole image's [C, L, W] (-inf pads and
    the whole image), and the region row at each position [C, W] (-1 pads)."""
    images = np.asarray(images, dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, table.vectors.shape[1])
    counts = table.start[images + 1] - table.start[images]
    width = int(counts.max(initial=0))
    padded = np.full((len(images), width), -1, np.int64)
    sims = np.full((len(images), len(vectors), width), -np.inf, np.float32)
    if width == 0 or len(vectors) == 0:
        return sims, padded
    first = np.cumsum(counts) - counts  # where each image's rows begin among all of them
    position = np.arange(int(counts.sum())) - np.repeat(first, counts)
    rows = np.repeat(table.start[images], counts) + position
    image_of = np.repeat(np.arange(len(images)), counts)
    padded[image_of, position] = rows
    scores = np.array(rows_dot(table.vectors, rows, vectors))  # [R, L], a copy: the whole image's are set below
    if table.scales is not None:
        scores[table.scales[rows] >= 1.0] = -np.inf
    sims[image_of, :, position] = scores
    return sims, padded


def _holds_centre(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether box a holds box b's centre, boxes [..., 4] broadcast against each other."""
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
    return (a[..., 0] <= cx) & (cx <= a[..., 2]) & (a[..., 1] <= cy) & (cy <= a[..., 3])


def _overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, boxes [..., 4] broadcast against each other."""
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    smaller = np.minimum(
        (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]), (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    )
    return width * height / np.maximum(smaller, 1e-9)
