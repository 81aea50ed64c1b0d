"""Spatial relations between boxes, and the joint choice of one box per lexeme that a query's
relations favour.

Geometry
--------
Boxes are (x0, y0, x1, y1) in pixels with y pointing down. For a subject box s and an object box
o with centres (cx, cy), widths w, heights h and σ(t) = 1 / (1 + e^-t):

    left of    σ(DIRECTION_STEEPNESS · (cx_o - cx_s) / ((w_s + w_o) / 2))
    right of   σ(DIRECTION_STEEPNESS · (cx_s - cx_o) / ((w_s + w_o) / 2))
    above      σ(DIRECTION_STEEPNESS · (cy_o - cy_s) / ((h_s + h_o) / 2))
    below      σ(DIRECTION_STEEPNESS · (cy_s - cy_o) / ((h_s + h_o) / 2))
    on         overlap_x(s, o) / w_s                                   (s stands over o)
               · σ(ON_STEEPNESS · (ON_GAP - (y0_o - y1_s) / h_s))      (s's bottom reaches o)
               · σ(DIRECTION_STEEPNESS · (y1_o - cy_s) / (h_s / 2))    (s does not hang below o)
    near       σ(NEAR_STEEPNESS · (NEAR_RANGE - gap(s, o) / size))
    far from   1 - near
    inside     area(s ∩ o) / area(s)
    around     area(s ∩ o) / area(o)

Directions divide the centre offset by the sum of the two half-extents along the axis, so 1
means the boxes just touch side by side: σ(3) = 0.95 there, 0.82 when they overlap by half
(before the overlap factor below), 0.5 for boxes on the same centre line and 0.05 for the
mirror image. `on` accepts a subject
resting on the object's top edge or lying on its face ("a cup on a table", "a picture on a
wall"): its bottom edge may float at most ON_GAP of its own height above the object (0.5 there,
0.95 touching, 0.05 at twice that gap). gap(s, o) is the Euclidean distance between the two
boxes (0 when they overlap) and size the mean side of both, (w_s + h_s + w_o + h_o) / 4: near is
0.95 for touching boxes, 0.5 at a gap of NEAR_RANGE sizes and 0.05 at two. Every term is a ratio
of lengths or of areas, so scaling all boxes by the same factor leaves every score unchanged.

A negated relation scores 1 - score. Two lexemes linked by any relation but inside/around name
two different things, so their term, negated or not, is multiplied by 1 - IoU(s, o): giving both
the very same box scores 0, and boxes that do not overlap are unaffected.

In front of and behind (lexemes.UNDECIDABLE) cannot be read from 2D boxes: `is_decidable` says
so and `relation_scores` refuses them with UndecidableRelationError.

Joint assignment
----------------
For each candidate image every lexeme l has K candidate regions with scores r[l, k] (some
masked as padding). `assign_boxes` picks one candidate a_l per lexeme maximising

    Σ_l r[l, a_l] + relation_weight · Σ_(s, rel, o) term_rel(box[s, a_s], box[o, a_o])

exactly, for all images at once. Lexemes are nodes and relations edges (several relations
between the same two lexemes add up on one edge). A connected component that is a tree (chains
and stars; a lexeme without relations takes its best candidate) is solved by max-sum dynamic
programming in O(n K²) per image. A component with a cycle is enumerated: all K^n joint choices
of its n lexemes when K^n ≤ MAX_JOINT_STATES, otherwise each of its lexemes keeps only its
floor(MAX_JOINT_STATES^(1/n)) best candidates first, and the result is exact over those
(Assignment.exact is False). Parsed queries only give chains, so that path serves relation
sets built by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from harmosearch.errors import QueryError
from harmosearch.model.lexemes import UNDECIDABLE

# At a centre offset of one sum of half-extents (boxes touching side by side) a direction
# scores σ(3) = 0.95: steep enough that the mirrored layout scores 0.05, soft enough that a
# half-overlapping pair still counts (0.82).
DIRECTION_STEEPNESS = 3.0
# `on`: the subject's bottom edge may float up to ON_GAP of its height above the object, and
# the steepness makes touching score 0.95 and twice that gap 0.05.
ON_GAP = 0.25
ON_STEEPNESS = 12.0
# `near`: the gap between the boxes, in mean box sides, at which near and far from tie;
# steepness 3 makes touching 0.95 and a gap of two sides 0.05.
NEAR_RANGE = 1.0
NEAR_STEEPNESS = 3.0
# Enumeration budget per image for a relation component with a cycle (see the module doc).
MAX_JOINT_STATES = 4096
# Relations whose two lexemes may share a box (a cat inside a box drawn around just the cat).
OVERLAP_ALLOWED = frozenset({"inside", "around"})
_TINY = 1e-9  # keeps degenerate (zero-width) boxes finite

RelationTriple = tuple[int, str, int, bool]  # (subject lexeme, relation, object lexeme, negated)


class UndecidableRelationError(QueryError):
    """The relation depends on depth (in front of, behind), which 2D boxes do not show."""


def is_decidable(relation: str) -> bool:
    """Whether boxes can score `relation`: False for in front of and behind."""
    return relation not in UNDECIDABLE


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))  # σ(t) without overflow for large |t|


def _parts(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = np.moveaxis(boxes, -1, 0)
    return x0, y0, x1, y1, np.maximum(x1 - x0, _TINY), np.maximum(y1 - y0, _TINY)


def _overlap(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0, None)


def _left_of(s: np.ndarray, o: np.ndarray) -> np.ndarray:
    sx0, _, sx1, _, sw, _ = _parts(s)
    ox0, _, ox1, _, ow, _ = _parts(o)
    return _sigmoid(DIRECTION_STEEPNESS * ((ox0 + ox1) - (sx0 + sx1)) / (sw + ow))


def _above(s: np.ndarray, o: np.ndarray) -> np.ndarray:
    _, sy0, _, sy1, _, sh = _parts(s)
    _, oy0, _, oy1, _, oh = _parts(o)
    return _sigmoid(DIRECTION_STEEPNESS * ((oy0 + oy1) - (sy0 + sy1)) / (sh + oh))


def _on(s: np.ndarray, o: np.ndarray) -> np.ndarray:
    sx0, sy0, sx1, sy1, sw, sh = _parts(s)
    ox0, oy0, ox1, oy1, _, _ = _parts(o)
    over = _overlap(sx0, sx1, ox0, ox1) / sw
    reaches = _sigmoid(ON_STEEPNESS * (ON_GAP - (oy0 - sy1) / sh))
    not_below = _sigmoid(DIRECTION_STEEPNESS * (oy1 - (sy0 + sy1) / 2) / (sh / 2))
    return over * reaches * not_below


def _near(s: np.ndarray, o: np.ndarray) -> np.ndarray:
    sx0, sy0, sx1, sy1, sw, sh = _parts(s)
    ox0, oy0, ox1, oy1, ow, oh = _parts(o)
    gap_x = np.maximum(0.0, np.maximum(ox0 - sx1, sx0 - ox1))
    gap_y = np.maximum(0.0, np.maximum(oy0 - sy1, sy0 - oy1))
    size = (sw + sh + ow + oh) / 4
    return _sigmoid(NEAR_STEEPNESS * (NEAR_RANGE - np.hypot(gap_x, gap_y) / size))


def _intersection(s: np.ndarray, o: np.ndarray) -> np.ndarray:
    sx0, sy0, sx1, sy1, _, _ = _parts(s)
    ox0, oy0, ox1, oy1, _, _ = _parts(o)
    return _overlap(sx0, sx1, ox0, ox1) * _overlap(sy0, sy1, oy0, oy1)


def _area(boxes: np.ndarray) -> np.ndarray:
    _, _, _, _, w, h = _parts(boxes)
    return w * h


def _inside(s: np.ndarray, o: np.ndarray) -> np.ndarray:
    return np.clip(_intersection(s, o) / _area(s), 0.0, 1.0)


def _iou(s: np.ndarray, o: np.ndarray) -> np.ndarray:
    inter = _intersection(s, o)
    return np.clip(inter / (_area(s) + _area(o) - inter), 0.0, 1.0)


_GEOMETRY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "left of": _left_of,
    "right of": lambda s, o: _left_of(o, s),
    "above": _above,
    "below": lambda s, o: _above(o, s),
    "on": _on,
    "near": _near,
    "far from": lambda s, o: 1.0 - _near(s, o),
    "inside": _inside,
    "around": lambda s, o: _inside(o, s),
}

SCORED: tuple[str, ...] = tuple(_GEOMETRY)  # every decidable relation of lexemes.RELATIONS


def relation_scores(
    relation: str, subject_boxes: np.ndarray, object_boxes: np.ndarray, negated: bool = False
) -> np.ndarray:
    """How well `subject <relation> object` holds for boxes [..., 4] (broadcast against each
    other), in [0, 1]; the formulas are in the module docstring."""
    if not is_decidable(relation):
        raise UndecidableRelationError(f"{relation!r} depends on depth, which boxes cannot show; it is not scored")
    geometry = _GEOMETRY.get(relation)
    if geometry is None:
        raise QueryError(f"unknown relation {relation!r}; known: {', '.join(SCORED)}")
    s, o = np.asarray(subject_boxes, np.float64), np.asarray(object_boxes, np.float64)
    if s.shape[-1:] != (4,) or o.shape[-1:] != (4,):
        raise QueryError(f"boxes must be [..., 4] (x0, y0, x1, y1), got shapes {s.shape} and {o.shape}")
    shape = np.broadcast_shapes(s.shape, o.shape)[:-1]
    # Box sides are computed per box and only the pairwise terms broadcast, so scoring K x K
    # candidate pairs costs K x K operations, not K x K x 4 box copies.
    score = geometry(s, o)
    if negated:
        score = 1.0 - score
    if relation not in OVERLAP_ALLOWED:
        score = score * (1.0 - _iou(s, o))
    return np.broadcast_to(score, shape).copy() if score.shape != shape else score


@dataclass(frozen=True)
class Assignment:
    """The best joint choice of one candidate per lexeme, for each image."""

    choice: np.ndarray  # [C, L] candidate index per lexeme; -1 where the lexeme had no valid candidate
    objective: np.ndarray  # [C] Σ lexeme scores + relation_weight · Σ relation terms of that choice
    lexeme_scores: np.ndarray  # [C, L] the chosen candidates' scores; NaN where choice is -1
    relation_scores: np.ndarray  # [C, R] unweighted term of every relation; NaN where a lexeme is missing
    exact: bool  # False when a cyclic component was enumerated over fewer candidates (module doc)


def assign_boxes(
    scores: np.ndarray,
    valid: np.ndarray,
    boxes: np.ndarray,
    relations: Sequence[RelationTriple],
    relation_weight: float = 1.0,
) -> Assignment:
    """Choose for every image one candidate region per lexeme, maximising the lexeme scores plus
    `relation_weight` times the relation terms (module docstring).

    scores [C, L, K] candidate scores (any finite value where `valid` is False); valid [C, L, K];
    boxes [C, L, K, 4] x0 y0 x1 y1; relations (subject, relation, object, negated) over lexeme
    indices, decidable ones only. A lexeme with no valid candidate in an image is left out of
    that image's objective (choice -1); so are the relations that involve it.
    """
    scores = np.asarray(scores, np.float64)
    valid = np.asarray(valid, bool)
    boxes = np.asarray(boxes, np.float64)
    if scores.ndim != 3 or valid.shape != scores.shape or boxes.shape != (*scores.shape, 4):
        raise QueryError(
            f"assign_boxes needs scores [C, L, K], valid of the same shape and boxes [C, L, K, 4]; got "
            f"{scores.shape}, {valid.shape}, {boxes.shape}"
        )
    n_images, n_lexemes, _ = scores.shape
    _check_relations(relations, n_lexemes)
    if not np.isfinite(scores[valid]).all() or not np.isfinite(boxes[valid]).all():
        raise QueryError("candidate scores and boxes must be finite where valid")

    missing = ~valid.any(axis=2)  # [C, L]
    # A lexeme with no candidate gets one dummy state worth 0 that every edge ignores, so the
    # solvers below never meet an empty choice.
    usable = valid.copy()
    usable[:, :, 0] |= missing
    unary = np.where(usable, np.where(missing[:, :, None], 0.0, scores), -np.inf)
    safe_boxes = np.where(usable[..., None], boxes, np.array([0.0, 0.0, 1.0, 1.0]))
    edges = _edge_potentials(safe_boxes, missing, relations, relation_weight)

    choice = np.zeros((n_images, n_lexemes), np.int64)
    exact = True
    for nodes in _components(n_lexemes, edges):
        if len(_edges_within(nodes, edges)) == len(nodes) - 1:
            _solve_tree(nodes, unary, edges, choice)
        else:
            exact &= _solve_by_enumeration(nodes, unary, edges, choice)
    return _assignment(scores, safe_boxes, missing, choice, relations, relation_weight, exact)


def _check_relations(relations: Sequence[RelationTriple], n_lexemes: int) -> None:
    for subject, relation, obj, _ in relations:
        if not (0 <= subject < n_lexemes and 0 <= obj < n_lexemes) or subject == obj:
            raise QueryError(
                f"relation {relation!r} links lexemes {subject} and {obj}; it needs two different "
                f"lexemes among 0..{n_lexemes - 1}"
            )
        if not is_decidable(relation):
            raise UndecidableRelationError(f"{relation!r} cannot be scored from boxes; leave it out of the assignment")


def _edge_potentials(
    boxes: np.ndarray, missing: np.ndarray, relations: Sequence[RelationTriple], weight: float
) -> dict[tuple[int, int], np.ndarray]:
    """(u, v) with u < v -> [C, K, K] weighted sum of the relation terms between u's candidate
    (rows) and v's candidate (columns), 0 where either lexeme is missing."""
    edges: dict[tuple[int, int], np.ndarray] = {}
    for subject, relation, obj, negated in relations:
        u, v = min(subject, obj), max(subject, obj)
        rows, cols = boxes[:, u, :, None, :], boxes[:, v, None, :, :]
        term = (
            relation_scores(relation, rows, cols, negated)
            if subject == u
            else relation_scores(relation, cols, rows, negated)
        )
        edges[(u, v)] = edges.get((u, v), 0.0) + weight * term
    for (u, v), potential in edges.items():
        potential[missing[:, u], 0, :] = 0.0
        potential[missing[:, v], :, 0] = 0.0
    return edges


def _components(n_lexemes: int, edges: dict[tuple[int, int], np.ndarray]) -> list[list[int]]:
    neighbours: dict[int, set[int]] = {n: set() for n in range(n_lexemes)}
    for u, v in edges:
        neighbours[u].add(v)
        neighbours[v].add(u)
    seen: set[int] = set()
    components = []
    for start in range(n_lexemes):
        if start in seen:
            continue
        order, frontier = [], [start]
        seen.add(start)
        while frontier:  # breadth first, so every node comes after its parent
            node = frontier.pop(0)
            order.append(node)
            for nxt in sorted(neighbours[node] - seen):
                seen.add(nxt)
                frontier.append(nxt)
        components.append(order)
    return components


def _edges_within(nodes: list[int], edges: dict[tuple[int, int], np.ndarray]) -> list[tuple[int, int]]:
    members = set(nodes)
    return [e for e in edges if e[0] in members]


def _oriented(edges: dict[tuple[int, int], np.ndarray], a: int, b: int) -> np.ndarray:
    """[C, K_a, K_b] potential between a (rows) and b (columns)."""
    return edges[(a, b)] if a < b else np.swapaxes(edges[(b, a)], 1, 2)


def _solve_tree(
    nodes: list[int], unary: np.ndarray, edges: dict[tuple[int, int], np.ndarray], choice: np.ndarray
) -> None:
    """Max-sum over a tree whose breadth-first order is `nodes` (root first)."""
    parent: dict[int, int] = {}
    placed = {nodes[0]}
    for node in nodes[1:]:
        parent[node] = next(p for p in placed if (min(p, node), max(p, node)) in edges)
        placed.add(node)
    belief = {n: unary[:, n, :].copy() for n in nodes}
    best_child: dict[int, np.ndarray] = {}
    for node in reversed(nodes[1:]):  # leaves first: fold each subtree into its parent
        total = _oriented(edges, parent[node], node) + belief[node][:, None, :]  # [C, K_parent, K_node]
        best_child[node] = total.argmax(axis=2)
        belief[parent[node]] += total.max(axis=2)
    rows = np.arange(unary.shape[0])
    choice[:, nodes[0]] = belief[nodes[0]].argmax(axis=1)
    for node in nodes[1:]:
        choice[:, node] = best_child[node][rows, choice[:, parent[node]]]


def _solve_by_enumeration(
    nodes: list[int], unary: np.ndarray, edges: dict[tuple[int, int], np.ndarray], choice: np.ndarray
) -> bool:
    """Try every joint choice of the component's candidates; returns whether all K were kept."""
    n_candidates = unary.shape[2]
    keep = n_candidates
    while keep > 1 and keep ** len(nodes) > MAX_JOINT_STATES:
        keep -= 1
    # Each lexeme's best `keep` candidates, per image (invalid ones score -inf and sort last).
    kept = {n: np.argsort(-unary[:, n, :], axis=1, kind="stable")[:, :keep] for n in nodes}
    combos = np.indices((keep,) * len(nodes)).reshape(len(nodes), -1)  # [n, keep^n]
    rows = np.arange(unary.shape[0])[:, None]
    picked = {n: kept[n][:, combos[j]] for j, n in enumerate(nodes)}  # [C, keep^n] candidate indices
    total = sum(np.take_along_axis(unary[:, n, :], picked[n], axis=1) for n in nodes)
    for u, v in _edges_within(nodes, edges):
        total = total + edges[(u, v)][rows, picked[u], picked[v]]
    best = total.argmax(axis=1)
    for n in nodes:
        choice[:, n] = picked[n][rows[:, 0], best]
    return keep == n_candidates


def _assignment(
    scores: np.ndarray,
    boxes: np.ndarray,
    missing: np.ndarray,
    choice: np.ndarray,
    relations: Sequence[RelationTriple],
    weight: float,
    exact: bool,
) -> Assignment:
    lexeme_scores = np.take_along_axis(scores, choice[:, :, None], axis=2)[:, :, 0]
    lexeme_scores = np.where(missing, np.nan, lexeme_scores)
    chosen = np.take_along_axis(boxes, choice[:, :, None, None], axis=2)[:, :, 0]  # [C, L, 4]
    terms = np.empty((scores.shape[0], len(relations)))
    for r, (subject, relation, obj, negated) in enumerate(relations):
        terms[:, r] = relation_scores(relation, chosen[:, subject], chosen[:, obj], negated)
        terms[missing[:, subject] | missing[:, obj], r] = np.nan
    objective = np.nansum(lexeme_scores, axis=1) + weight * np.nansum(terms, axis=1)
    return Assignment(np.where(missing, -1, choice), objective, lexeme_scores, terms, exact)
