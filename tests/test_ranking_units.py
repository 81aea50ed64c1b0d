"""The ranking's additive amounts are in units of the index's spread (search/calibration.py,
ranking_unit and in_cosines): an index whose cosines are all c times narrower, with a spread c
times narrower, ranks the same; an index without a calibration ranks with the cosine amounts the
defaults held before they were set in units."""

from dataclasses import replace

import numpy as np
import pytest

from harmosearch.config import SearchConfig
from harmosearch.search.calibration import FALLBACK_SPREAD, Calibration, in_cosines, ranking_unit
from harmosearch.search.contrast import Contrast
from harmosearch.search.fuse import fused_scores
from harmosearch.search.query import Query
from harmosearch.search.score import RegionTable, score_candidates


def _unit(rng, *shape):
    x = rng.standard_normal(shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _index(rng, n_images=40, dim=16):
    """Region vectors, boxes and scales (whole image, windows and segments), global vectors."""
    counts = rng.integers(3, 9, size=n_images)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    corners = rng.uniform(0, 150, size=(start[-1], 2))
    boxes = np.concatenate([corners, corners + rng.uniform(10, 70, size=(start[-1], 2))], 1).astype(np.float32)
    scales = rng.choice([0.0, 0.5, 0.25], size=start[-1]).astype(np.float32)  # segments and windows
    scales[start[:-1]] = 1.0  # each image's first region is the whole image
    return _unit(rng, start[-1], dim), boxes, start, scales, _unit(rng, n_images, dim)


def _ranked(regions, boxes, start, scales, global_vectors, query, settings, calibration, rivals, temperature):
    """The query's fused scores and chosen rows on this index, its settings in units resolved
    by its calibration, as Index.search resolves them."""
    s = in_cosines(settings, calibration)
    plain = RegionTable(regions, boxes, start, scales)
    contrast = Contrast(rivals, np.ones((len(query.lexeme_vectors), len(rivals)), bool), temperature, s.contrast)
    candidates = np.arange(len(start) - 1)
    scored = score_candidates(
        plain, plain.penalising_windows(s.window_penalty), global_vectors, candidates, query, s, contrast
    )
    return fused_scores(scored, s), scored.match.rows


def test_amounts_scale_with_the_spread():
    """By hand: every cosine of an index times c (its vectors scaled, the rivals compared at a
    logit scale 1/c larger, so that log p is the same) and its null's spread times c: the same
    boxes chosen, every fused score times c, the same ranking. With the narrow index's amounts
    left at the wide one's cosines (what fixed cosine amounts did), the ranking changes."""
    rng = np.random.default_rng(7)
    regions, boxes, start, scales, global_vectors = _index(rng)
    dim = regions.shape[1]
    empty = np.zeros((0, dim), np.float32)
    lexemes = _unit(rng, 2, dim)
    query = Query("a left of b", _unit(rng, dim), ["a", "b"], lexemes, [(0, "left of", 1, False)], empty, empty)
    rivals, temperature = _unit(rng, 6, dim), 20.0
    settings = SearchConfig(window_penalty=1.5, box_margin=0.5, relation_weight=5.0, contrast=1.0, alpha=0.3)
    null = rng.normal(0.4, 0.1, size=(50, 2))
    wide = Calibration(null_max=tuple(map(tuple, null)), alphas=(0.0, 1.0))
    c = 0.25
    narrow = Calibration(null_max=tuple(map(tuple, null * c)), alphas=(0.0, 1.0))
    assert ranking_unit(narrow) == pytest.approx(c * ranking_unit(wide)) and ranking_unit(wide) == pytest.approx(
        float(np.std(null[:, 0]))
    )
    index = (boxes, start, scales)
    fused, rows = _ranked(regions, *index, global_vectors, query, settings, wide, rivals, temperature)
    args = (regions * c, *index, global_vectors * c, query, settings)
    fused_c, rows_c = _ranked(*args, narrow, rivals, temperature / c)
    np.testing.assert_array_equal(rows_c, rows)
    np.testing.assert_allclose(fused_c, c * fused, rtol=1e-4, atol=1e-6)
    order = np.argsort(-fused, kind="stable")
    assert np.array_equal(np.argsort(-fused_c, kind="stable"), order)
    fixed, fixed_rows = _ranked(*args, wide, rivals, temperature / c)  # the wide index's cosine amounts
    assert not np.array_equal(np.argsort(-fixed, kind="stable")[:10], order[:10])
    assert not np.array_equal(fixed_rows, rows)


def test_an_index_without_calibration_ranks_with_the_old_cosine_amounts():
    """The defaults in units, resolved without a calibration, are exactly the cosine amounts the
    defaults were before (0.1 window penalty, 0.05 box margin, 0.5 relation weight, 0.1 contrast);
    nothing else changes."""
    resolved = in_cosines(SearchConfig(), None)
    old = replace(SearchConfig(), window_penalty=0.1, box_margin=0.05, relation_weight=0.5, contrast=0.1)
    assert resolved == old
    assert ranking_unit(None) == FALLBACK_SPREAD == 0.10
    still = Calibration(null_max=((0.4, 0.5),) * 20, alphas=(0.0, 1.0))  # a null that does not vary
    assert in_cosines(SearchConfig(), still) == old


def test_the_calibration_spread_is_counts_unit_too():
    """One spread: count.py's presence rule reads the same Calibration.spread."""
    from harmosearch.search.count import presence_rule

    null = np.linspace(0.2, 0.6, 101)
    calibration = Calibration(null_max=tuple((float(v), float(v) / 2) for v in null), alphas=(0.0, 1.0))
    rule = presence_rule(calibration, SearchConfig(), alpha=0.0)
    assert rule.deviation == rule.spread == ranking_unit(calibration) == pytest.approx(np.std(null))
