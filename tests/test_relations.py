import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmosearch.errors import QueryError
from harmosearch.model.lexemes import RELATIONS, UNDECIDABLE
from harmosearch.search import relations as rel
from harmosearch.search.relations import (
    SCORED,
    UndecidableRelationError,
    assign_boxes,
    is_decidable,
    relation_scores,
)

A = (0, 0, 10, 10)


def score(relation, s, o, negated=False):
    return float(relation_scores(relation, np.array(s, float), np.array(o, float), negated))


def sigma(t):
    return 1 / (1 + math.exp(-t))


# Hand-worked: (relation, subject, object, expected score); the arithmetic is in the comments.
HAND_WORKED = [
    ("left of", A, (20, 0, 30, 10), sigma(6)),  # centre offset 20 / half-widths 10 = 2 -> σ(3·2)
    ("left of", A, (10, 0, 20, 10), sigma(3)),  # touching: offset 1 -> 0.95
    ("left of", A, (5, 0, 15, 10), sigma(1.5) * (1 - 50 / 150)),  # half overlap; IoU 50/150
    ("left of", (20, 0, 30, 10), A, sigma(-6)),  # the mirror image
    ("left of", A, (0, 40, 10, 50), 0.5),  # straight above: no horizontal evidence either way
    ("right of", (20, 0, 30, 10), A, sigma(6)),
    ("right of", (0, 0, 4, 10), (4, 0, 20, 10), sigma(3 * -10 / 10)),  # offset -10 / half-widths (2 + 8)
    ("above", A, (0, 20, 10, 30), sigma(6)),  # y points down: smaller y is above
    ("above", (0, 20, 10, 30), A, sigma(-6)),
    ("below", (0, 20, 10, 30), A, sigma(6)),
    ("below", (0, 10, 10, 30), A, sigma(3 * 15 / 15)),  # offset 15 / half-heights (10 + 5)
    # on: cup resting on a table top: over 1, gap 0 -> σ(12·0.25), centre 15 above the table's
    # bottom in half-heights of 5 -> σ(9)
    ("on", (4, 0, 8, 10), (0, 10, 20, 20), sigma(3) * sigma(9)),
    ("on", (4, 0, 8, 10), (0, 30, 40, 40), sigma(12 * (0.25 - 2)) * sigma(3 * 35 / 5)),  # floating 2 heights up
    ("on", (4, 20, 8, 30), (0, 0, 20, 10), sigma(12 * (0.25 + 3)) * sigma(-9)),  # under the table
    ("on", (30, 0, 34, 10), (0, 10, 20, 20), 0.0),  # beside: no horizontal overlap
    ("on", (16, 0, 24, 10), (0, 10, 20, 20), 0.5 * sigma(3) * sigma(9)),  # half over the edge
    # a picture on a wall: lies on its face; IoU 100/10000
    ("on", (10, 10, 20, 20), (0, 0, 100, 100), 1 * sigma(12 * (0.25 + 2)) * sigma(3 * 85 / 5) * 0.99),
    ("near", A, (10, 0, 20, 10), sigma(3)),  # touching: gap 0
    ("near", A, (20, 0, 30, 10), sigma(0)),  # gap 10 = one mean side
    ("near", A, (40, 0, 50, 10), sigma(-6)),  # gap 3 sides
    ("near", A, (13, 14, 23, 24), sigma(3 * (1 - 5 / 10))),  # diagonal gap hypot(3, 4) = 5
    ("far from", A, (40, 0, 50, 10), 1 - sigma(-6)),
    ("far from", A, (10, 0, 20, 10), 1 - sigma(3)),
    ("inside", (2, 2, 4, 4), A, 1.0),
    ("inside", A, (2, 2, 4, 4), 0.04),  # 4 of its 100 px are covered
    ("inside", (5, 0, 15, 10), A, 0.5),
    ("inside", (20, 20, 30, 30), A, 0.0),
    ("around", A, (2, 2, 4, 4), 1.0),
    ("around", (2, 2, 4, 4), A, 0.04),
]


@pytest.mark.parametrize(("relation", "subject", "obj", "expected"), HAND_WORKED)
def test_hand_worked_scores(relation, subject, obj, expected):
    assert score(relation, subject, obj) == pytest.approx(expected, abs=1e-6)


def test_clear_cases_are_near_one_and_their_mirrors_near_zero():
    left, right, top, bottom = (0, 40, 20, 60), (60, 40, 80, 60), (40, 0, 60, 20), (40, 60, 60, 80)
    for relation, s, o in [
        ("left of", left, right),
        ("right of", right, left),
        ("above", top, bottom),
        ("below", bottom, top),
        ("near", left, (20, 40, 40, 60)),
        ("far from", left, (200, 200, 220, 220)),
        ("inside", (45, 45, 55, 55), (0, 0, 100, 100)),
        ("around", (0, 0, 100, 100), (45, 45, 55, 55)),
        ("on", (45, 20, 55, 40), (20, 40, 80, 60)),
    ]:
        assert score(relation, s, o) > 0.9, relation
        assert score(relation, s, o, negated=True) < 0.1, relation
    assert score("left of", right, left) < 0.01 and score("above", bottom, top) < 0.01


def test_mirror_relations_agree():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, (500,)), random_boxes(rng, (500,))
    for forward, backward in [("left of", "right of"), ("above", "below"), ("inside", "around"), ("near", "near")]:
        np.testing.assert_allclose(relation_scores(forward, a, b), relation_scores(backward, b, a), atol=1e-12)
    np.testing.assert_allclose(relation_scores("far from", a, b), relation_scores("near", a, b, negated=True))


def test_scores_do_not_change_when_the_picture_is_scaled_or_moved():
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, (300,)), random_boxes(rng, (300,))
    shift = np.array([37.0, -12.0, 37.0, -12.0])
    for relation in SCORED:
        base = relation_scores(relation, a, b)
        np.testing.assert_allclose(relation_scores(relation, a * 10, b * 10), base, atol=1e-9)
        np.testing.assert_allclose(relation_scores(relation, a + shift, b + shift), base, atol=1e-9)


def test_negation_is_one_minus_the_score_for_separate_boxes():
    rng = np.random.default_rng(2)
    a = random_boxes(rng, (200,))
    b = a + np.array([300.0, 0, 300.0, 0])  # never overlapping a
    for relation in SCORED:
        np.testing.assert_allclose(relation_scores(relation, a, b, negated=True), 1 - relation_scores(relation, a, b))


def test_the_same_box_never_satisfies_a_relation_between_two_things():
    for relation in SCORED:
        for negated in (False, True):
            same = score(relation, A, A, negated)
            if relation in ("inside", "around"):
                assert same == (0.0 if negated else 1.0)
            else:
                assert same == 0.0, (relation, negated)


def test_scores_broadcast_over_leading_dimensions():
    rng = np.random.default_rng(3)
    subjects, objects = random_boxes(rng, (5, 1, 3)), random_boxes(rng, (1, 4, 3))
    out = relation_scores("left of", subjects, objects)
    assert out.shape == (5, 4, 3) and np.all((out >= 0) & (out <= 1))
    assert out[2, 3, 1] == pytest.approx(score("left of", subjects[2, 0, 1], objects[0, 3, 1]))


def test_undecidable_and_unknown_relations_are_refused():
    assert set(SCORED) | UNDECIDABLE == set(RELATIONS) and not set(SCORED) & UNDECIDABLE
    assert not is_decidable("behind") and not is_decidable("in front of") and is_decidable("near")
    for relation in UNDECIDABLE:
        with pytest.raises(UndecidableRelationError, match="depth"):
            relation_scores(relation, np.array(A), np.array(A))
    with pytest.raises(QueryError, match="unknown relation"):
        relation_scores("between", np.array(A), np.array(A))


def reference_score(relation, s, o, negated):
    """The module docstring's formulas, written out with scalars."""
    sx0, sy0, sx1, sy1 = s
    ox0, oy0, ox1, oy1 = o
    sw, sh, ow, oh = sx1 - sx0, sy1 - sy0, ox1 - ox0, oy1 - oy0
    inter_w = max(0.0, min(sx1, ox1) - max(sx0, ox0))
    inter_h = max(0.0, min(sy1, oy1) - max(sy0, oy0))
    inter = inter_w * inter_h
    gap = math.hypot(max(0.0, ox0 - sx1, sx0 - ox1), max(0.0, oy0 - sy1, sy0 - oy1))
    near = sigma(3 * (1 - gap / ((sw + sh + ow + oh) / 4)))
    value = {
        "left of": sigma(3 * ((ox0 + ox1) / 2 - (sx0 + sx1) / 2) / ((sw + ow) / 2)),
        "right of": sigma(3 * ((sx0 + sx1) / 2 - (ox0 + ox1) / 2) / ((sw + ow) / 2)),
        "above": sigma(3 * ((oy0 + oy1) / 2 - (sy0 + sy1) / 2) / ((sh + oh) / 2)),
        "below": sigma(3 * ((sy0 + sy1) / 2 - (oy0 + oy1) / 2) / ((sh + oh) / 2)),
        "on": inter_w / sw * sigma(12 * (0.25 - (oy0 - sy1) / sh)) * sigma(3 * (oy1 - (sy0 + sy1) / 2) / (sh / 2)),
        "near": near,
        "far from": 1 - near,
        "inside": inter / (sw * sh),
        "around": inter / (ow * oh),
    }[relation]
    if negated:
        value = 1 - value
    if relation not in ("inside", "around"):
        value *= 1 - inter / (sw * sh + ow * oh - inter)
    return value


def random_boxes(rng, shape, extent=200.0):
    x0, y0 = rng.uniform(0, extent, shape), rng.uniform(0, extent, shape)
    w, h = rng.uniform(2, extent / 2, shape), rng.uniform(2, extent / 2, shape)
    return np.stack([x0, y0, x0 + w, y0 + h], axis=-1)


def test_vectorised_scores_match_the_scalar_formulas():
    rng = np.random.default_rng(4)
    # Small boxes in a small area, so overlaps, containment and touching all occur.
    a, b = random_boxes(rng, (400,), extent=40.0), random_boxes(rng, (400,), extent=40.0)
    for relation in SCORED:
        for negated in (False, True):
            got = relation_scores(relation, a, b, negated)
            want = [reference_score(relation, s, o, negated) for s, o in zip(a, b, strict=True)]
            np.testing.assert_allclose(got, want, atol=1e-9, err_msg=relation)


# ---------- joint assignment ----------


def brute_force(scores, valid, boxes, relations, weight):
    """Best objective per image over every combination of valid candidates, and the objective of
    any given choice; both written as plain loops."""

    def objective(c, choice):
        total = sum(scores[c, lex, k] for lex, k in enumerate(choice) if k >= 0)
        for subject, relation, obj, negated in relations:
            if choice[subject] >= 0 and choice[obj] >= 0:
                s, o = boxes[c, subject, choice[subject]], boxes[c, obj, choice[obj]]
                total += weight * reference_score(relation, s, o, negated)
        return total

    best = []
    for c in range(scores.shape[0]):
        options = [list(np.flatnonzero(valid[c, lex])) or [-1] for lex in range(scores.shape[1])]
        best.append(max(objective(c, choice) for choice in itertools.product(*options)))
    return np.array(best), objective


GRAPHS = {
    "none": [],
    "pair": [(0, "left of", 1, False)],
    "chain": [(0, "on", 1, False), (1, "near", 2, False), (2, "above", 3, True)],
    "reversed chain": [(1, "left of", 0, False), (2, "below", 1, False), (3, "far from", 2, False)],
    "star": [(0, "left of", 1, False), (2, "above", 0, False), (0, "near", 3, True)],
    "cycle": [(0, "left of", 1, False), (1, "above", 2, False), (2, "near", 0, False)],
    "two relations on one pair": [(0, "left of", 1, False), (1, "near", 0, True)],
    "forest and cycle": [
        (0, "left of", 1, False),
        (2, "inside", 3, False),
        (3, "around", 4, False),
        (4, "near", 2, False),
    ],
    "square with diagonal": [
        (0, "left of", 1, False),
        (1, "above", 2, False),
        (2, "right of", 3, False),
        (3, "below", 0, False),
        (0, "near", 2, True),
    ],
}


def random_instance(rng, n_images, n_lexemes, k, missing_rate=0.3):
    scores = rng.normal(0.4, 0.2, (n_images, n_lexemes, k))
    valid = rng.random((n_images, n_lexemes, k)) > missing_rate
    valid[0] = True  # one image with every candidate
    if n_images > 1:
        valid[1, 0] = False  # one image where lexeme 0 has no candidate at all
    scores = np.where(valid, scores, 123.0)  # padding values must not matter
    boxes = random_boxes(rng, (n_images, n_lexemes, k), extent=60.0)
    boxes[~valid] = 0.0  # padded boxes may be degenerate
    return scores, valid, boxes


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("seed", range(4))
def test_assignment_equals_brute_force(graph, seed):
    relations = GRAPHS[graph]
    n_lexemes = max([max(s, o) for s, _, o, _ in relations], default=2) + 1
    rng = np.random.default_rng(seed)
    scores, valid, boxes = random_instance(rng, 7, n_lexemes, k=int(rng.integers(1, 5)))
    weight = float(rng.choice([0.0, 0.5, 1.0, 3.0]))
    result = assign_boxes(scores, valid, boxes, relations, weight)
    check_against_brute_force(result, scores, valid, boxes, relations, weight)
    assert result.exact


def check_against_brute_force(result, scores, valid, boxes, relations, weight):
    best, objective = brute_force(scores, valid, boxes, relations, weight)
    n_images, n_lexemes, _ = scores.shape
    assert result.choice.shape == (n_images, n_lexemes) and result.relation_scores.shape == (n_images, len(relations))
    np.testing.assert_allclose(result.objective, best, atol=1e-9)
    for c in range(n_images):
        choice = result.choice[c]
        assert objective(c, choice) == pytest.approx(best[c], abs=1e-9)
        for lex, k in enumerate(choice):
            if valid[c, lex].any():
                assert valid[c, lex, k] and result.lexeme_scores[c, lex] == scores[c, lex, k]
            else:
                assert k == -1 and np.isnan(result.lexeme_scores[c, lex])
        for r, (subject, relation, obj, negated) in enumerate(relations):
            if choice[subject] < 0 or choice[obj] < 0:
                assert np.isnan(result.relation_scores[c, r])
            else:
                s, o = boxes[c, subject, choice[subject]], boxes[c, obj, choice[obj]]
                assert result.relation_scores[c, r] == pytest.approx(reference_score(relation, s, o, negated))


@st.composite
def instances(draw):
    n_lexemes = draw(st.integers(1, 5))
    pairs = [(s, o) for s in range(n_lexemes) for o in range(n_lexemes) if s != o]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=6)) if pairs else []
    relations = [(s, draw(st.sampled_from(SCORED)), o, draw(st.booleans())) for s, o in chosen]
    k = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    weight = draw(st.sampled_from([0.0, 0.3, 1.0, 5.0]))
    return n_lexemes, relations, k, seed, weight


@settings(max_examples=150, deadline=None)
@given(instances())
def test_assignment_equals_brute_force_on_random_relation_graphs(instance):
    n_lexemes, relations, k, seed, weight = instance
    scores, valid, boxes = random_instance(np.random.default_rng(seed), 4, n_lexemes, k)
    result = assign_boxes(scores, valid, boxes, relations, weight)
    check_against_brute_force(result, scores, valid, boxes, relations, weight)


def test_a_large_cycle_keeps_each_lexemes_best_candidates(monkeypatch):
    monkeypatch.setattr(rel, "MAX_JOINT_STATES", 8)  # a triangle of K=4 keeps 2 candidates per lexeme
    relations = GRAPHS["cycle"]
    rng = np.random.default_rng(5)
    scores, valid, boxes = random_instance(rng, 6, 3, k=4, missing_rate=0.0)
    result = assign_boxes(scores, valid, boxes, relations, 1.0)
    assert not result.exact
    top2 = np.argsort(-np.where(valid, scores, -np.inf), axis=2)[:, :, :2]
    restricted = np.zeros_like(valid)
    np.put_along_axis(restricted, top2, True, axis=2)
    restricted &= valid
    check_against_brute_force(result, scores, restricted, boxes, relations, 1.0)
    # A chain of the same size is solved exactly whatever the budget.
    assert assign_boxes(scores, valid, boxes, GRAPHS["chain"][:2], 1.0).exact


def test_relations_move_a_lexeme_off_the_box_of_the_other():
    left, middle, right = (0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10)
    # Both lexemes like the middle box best; the second lexeme also has a box to its right.
    scores = np.array([[[0.9, 0.5], [0.9, 0.5]]])
    boxes = np.array([[[middle, left], [middle, right]]], float)
    valid = np.ones((1, 2, 2), bool)
    alone = assign_boxes(scores, valid, boxes, [], 1.0)
    assert alone.choice.tolist() == [[0, 0]] and alone.objective[0] == pytest.approx(1.8)
    related = assign_boxes(scores, valid, boxes, [(0, "left of", 1, False)], 1.0)
    assert related.choice.tolist() == [[0, 1]]  # the middle box left of the right one
    assert related.relation_scores[0, 0] == pytest.approx(sigma(6))
    # Sharing the middle box would score 1.8 + 0: the relation needs two things.
    assert related.objective[0] == pytest.approx(1.4 + sigma(6))
    # Containment may share a box.
    inside = assign_boxes(scores, valid, boxes, [(0, "inside", 1, False)], 1.0)
    assert inside.choice.tolist() == [[0, 0]] and inside.relation_scores[0, 0] == 1.0


def test_assignment_handles_empty_inputs_and_refuses_bad_relations():
    empty = assign_boxes(
        np.zeros((0, 2, 3)), np.zeros((0, 2, 3), bool), np.zeros((0, 2, 3, 4)), [(0, "near", 1, False)]
    )
    assert empty.choice.shape == (0, 2) and empty.relation_scores.shape == (0, 1)
    no_lexemes = assign_boxes(np.zeros((3, 0, 2)), np.zeros((3, 0, 2), bool), np.zeros((3, 0, 2, 4)), [])
    assert no_lexemes.objective.tolist() == [0.0, 0.0, 0.0]
    scores, valid, boxes = np.zeros((1, 2, 1)), np.ones((1, 2, 1), bool), np.ones((1, 2, 1, 4))
    with pytest.raises(QueryError, match="two different lexemes"):
        assign_boxes(scores, valid, boxes, [(0, "near", 0, False)])
    with pytest.raises(QueryError, match="two different lexemes"):
        assign_boxes(scores, valid, boxes, [(0, "near", 2, False)])
    with pytest.raises(UndecidableRelationError):
        assign_boxes(scores, valid, boxes, [(0, "behind", 1, False)])
    with pytest.raises(QueryError, match="finite"):
        assign_boxes(np.full((1, 2, 1), np.nan), valid, boxes, [])
    with pytest.raises(QueryError, match="scores"):
        assign_boxes(scores, valid, boxes[..., :3], [])
