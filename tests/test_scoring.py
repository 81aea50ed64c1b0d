"""The one region-scoring path against a plain loop over images and regions."""

import numpy as np
import pytest

from harmosearch.search import score as scoring
from harmosearch.search.score import RegionTable, best_regions


def slow_score(table, row, lexeme, window_penalty=0.0):
    """One region's score for one lexeme, written out: a window proposal (0 < scale < 1) loses the penalty."""
    score = float(np.asarray(table.vectors[row], np.float32) @ lexeme)
    if table.scales is not None and 0 < table.scales[row] < 1:
        score -= window_penalty
    return score


def slow_best_regions(table, images, lexemes, margin, window_penalty=0.0):
    scores = np.full((len(images), len(lexemes)), -1.0)
    rows = np.full((len(images), len(lexemes)), -1)
    for c, image in enumerate(images):
        lo, hi = int(table.start[image]), int(table.start[image + 1])
        for j, lexeme in enumerate(lexemes):
            if hi == lo:
                continue
            scores[c, j] = max(slow_score(table, r, lexeme, window_penalty) for r in range(lo, hi))
            sims = [slow_score(table, r, lexeme) for r in range(lo, hi)]  # the box: without the penalty
            best = max(sims)
            near = [r for r, s in zip(range(lo, hi), sims, strict=True) if s >= best - margin]
            areas = [(table.boxes[r, 2] - table.boxes[r, 0]) * (table.boxes[r, 3] - table.boxes[r, 1]) for r in near]
            rows[c, j] = near[int(np.argmax(areas))]
    return scores, rows


def random_table(rng, n_images=30, dim=8):
    counts = rng.integers(0, 7, size=n_images)
    counts[3] = 0
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    vectors = rng.standard_normal((start[-1], dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    corner = rng.uniform(0, 50, (start[-1], 2))
    boxes = np.concatenate([corner, corner + rng.integers(1, 4, (start[-1], 2)) * 10.0], 1).astype(np.float32)
    # user boxes (-1), segments (0), windows (0.25, 0.5) and the whole image (1)
    scales = rng.choice(np.array([-1.0, 0.0, 0.25, 0.5, 1.0], np.float32), size=start[-1])
    return RegionTable(vectors.astype(np.float16), boxes, start, scales)


@pytest.mark.parametrize("margin", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("block_rows", [5, 65_536])
@pytest.mark.parametrize("window_penalty", [0.0, 0.3])
def test_best_regions_equal_the_loop(margin, block_rows, window_penalty, monkeypatch):
    monkeypatch.setattr(scoring, "BLOCK_ROWS", block_rows)  # many small blocks, or one
    monkeypatch.setattr(scoring, "BLOCK_LEXEMES", 2)
    rng = np.random.default_rng(4)
    plain = random_table(rng)
    table = plain.penalising_windows(window_penalty)
    images = np.array([5, 3, 0, 17, 5, 29, 12])  # a subset, out of order, with a repeat and an empty image
    lexemes = rng.standard_normal((5, 8)).astype(np.float32)
    got_scores, got_rows = best_regions(table, images, lexemes, margin)
    want_scores, want_rows = slow_best_regions(plain, images, lexemes, margin, window_penalty)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
    np.testing.assert_array_equal(got_rows, want_rows)
    assert (got_rows[1] == -1).all() and (got_scores[1] == -1).all()  # image 3 has no regions
    every = np.arange(table.n_images)
    np.testing.assert_array_equal(
        best_regions(table, every, lexemes, margin)[1],
        slow_best_regions(plain, every, lexemes, margin, window_penalty)[1],
    )
    if window_penalty:  # it changes scores on this table, and never the box shown
        plain_scores, plain_rows = best_regions(plain, every, lexemes, margin)
        penalised_scores, penalised_rows = best_regions(table, every, lexemes, margin)
        assert not np.allclose(plain_scores, penalised_scores)
        np.testing.assert_array_equal(plain_rows, penalised_rows)


def test_ties_in_area_take_the_first_row():
    table = RegionTable(
        np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32),
        np.array([[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 50, 50]], np.float32),
        np.array([0, 3]),
    )
    _, rows = best_regions(table, np.array([0]), np.array([[1.0, 0.0]], np.float32), 0.0)
    assert rows[0, 0] == 0


def test_the_box_shown_is_the_largest_near_the_best():
    """Four regions of one image, scored 0.80, 0.78, 0.60 and 0.79 by a lexeme along axis 0."""
    scores = np.array([0.80, 0.78, 0.60, 0.79], np.float32)
    vectors = np.stack([scores, np.sqrt(1 - scores**2)], 1).astype(np.float32)
    sides = np.sqrt([100.0, 400.0, 900.0, 200.0])
    boxes = np.stack([np.zeros(4), np.zeros(4), sides, sides], 1).astype(np.float32)
    table = RegionTable(vectors, boxes, np.array([0, 4]))
    lexeme = np.array([[1.0, 0.0]], np.float32)
    assert best_regions(table, np.array([0]), lexeme, 0.0)[1][0, 0] == 0  # margin 0: the best-scoring box
    assert best_regions(table, np.array([0]), lexeme, 0.05)[1][0, 0] == 1  # 0.78 is near and the largest
    assert best_regions(table, np.array([0]), lexeme, 0.5)[1][0, 0] == 2


def test_no_images_or_no_lexemes():
    table = random_table(np.random.default_rng(0))
    assert best_regions(table, np.array([], dtype=np.int64), np.ones((2, 8), np.float32), 0.0)[0].shape == (0, 2)
    assert best_regions(table, np.array([1, 2]), np.zeros((0, 8), np.float32), 0.0)[1].shape == (2, 0)


@pytest.mark.parametrize("window_penalty", [0.0, 0.3])
def test_top_regions_equal_a_sort_per_image(window_penalty):
    from harmosearch.search.score import top_regions

    rng = np.random.default_rng(7)
    plain = random_table(rng)
    table = plain.penalising_windows(window_penalty)
    images = np.array([0, 3, 8, 8, 21])
    lexemes = rng.standard_normal((3, 8)).astype(np.float32)
    scores, rows = top_regions(table, images, lexemes, k=4)
    assert scores.shape == rows.shape == (5, 3, 4)
    for c, image in enumerate(images):
        lo, hi = int(table.start[image]), int(table.start[image + 1])
        for j, lexeme in enumerate(lexemes):
            sims = [(slow_score(plain, r, lexeme, window_penalty), r) for r in range(lo, hi)]
            best = sorted(sims, key=lambda t: -t[0])[:4]
            assert [r for _, r in best] + [-1] * (4 - len(best)) == rows[c, j].tolist()
            np.testing.assert_allclose([s for s, _ in best], scores[c, j, : len(best)], atol=1e-5)
            assert np.isneginf(scores[c, j, len(best) :]).all()


def test_only_windows_are_penalised():
    scales = np.array([-1.0, 0.0, 0.15, 0.25, 0.5, 1.0], np.float32)
    table = RegionTable(np.eye(6, dtype=np.float32), np.zeros((6, 4), np.float32), np.array([0, 6]), scales)
    np.testing.assert_allclose(table.penalising_windows(0.1).bias, [0, 0, -0.1, -0.1, -0.1, 0], atol=1e-7)
    assert table.penalising_windows(0.0).bias is None
    assert table.penalising_windows(0.1).penalising_windows(0.0).bias is None  # not stacked


@pytest.mark.parametrize("relations", [[], [(0, "left of", 2, False)]])
def test_plain_scores_leave_the_window_penalty_out(relations):
    """What a query's confidence is measured on: each lone lexeme's best region and each related
    lexeme's chosen region, scored without the penalty (the calibration knows no penalty)."""
    from harmosearch.search.score import match_regions

    rng = np.random.default_rng(11)
    plain = random_table(rng)
    table = plain.penalising_windows(0.3)
    images = np.arange(plain.n_images)
    lexemes = rng.standard_normal((3, 8)).astype(np.float32)
    match = match_regions(table, images, lexemes, relations, 0.05, 0.5, 4)
    unpenalised = match_regions(plain, images, lexemes, relations, 0.05, 0.5, 4)
    np.testing.assert_array_equal(unpenalised.plain_scores, unpenalised.scores)
    related = {0, 2} if relations else set()
    for c, image in enumerate(images):
        lo, hi = int(plain.start[image]), int(plain.start[image + 1])
        for j, lexeme in enumerate(lexemes):
            if hi == lo:
                assert match.plain_scores[c, j] == -1
            elif j in related:  # -1 without a candidate (the whole image is none)
                row = match.rows[c, j]
                want = -1.0 if row < 0 else slow_score(plain, row, lexeme)
                assert match.plain_scores[c, j] == pytest.approx(want, abs=1e-5)
            else:
                want = max(slow_score(plain, r, lexeme) for r in range(lo, hi))
                assert match.plain_scores[c, j] == pytest.approx(want, abs=1e-5)
    assert not np.allclose(match.scores, match.plain_scores)
