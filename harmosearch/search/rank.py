"""Ranking: the fused scores in order, a video once at its best frame, the minimum score, and
which results the index's calibration finds confident."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harmosearch.config import SearchConfig
from harmosearch.search.fuse import plain_fused_scores
from harmosearch.search.score import Scored


@dataclass(frozen=True)
class Ranking:
    """The candidates in order, with the scores that ordered them and what each result shows."""

    order: np.ndarray  # positions in Scored.candidates, best first
    fused: np.ndarray  # [C] the score of each candidate
    lexeme_scores: np.ndarray  # [C, L] each lexeme's score shown
    confident: np.ndarray | None = None  # [C] above the calibration's bar; None when not calibrated
    boxes: dict[int, np.ndarray] = field(default_factory=dict)  # position -> [L, 4] boxes found again

    def head(self, k: int) -> Ranking:
        return replace(self, order=self.order[:k])


def confidence(calibration: Any, scored: Scored, settings: SearchConfig) -> np.ndarray:
    """Which candidates score above the calibration's bar. The score measured leaves out the
    relations' geometric term, the window penalty and the count and negation terms, which the
    null queries do not get (so an index's calibration holds whatever search.window_penalty
    is); a query without lexemes (or with negated ones only) ranks by its global score, which
    the calibration holds at alpha 1."""
    from harmosearch.search.calibration import assess

    at = settings.alpha_for(scored.n_wanted) if scored.n_wanted else 1.0
    return assess(calibration, plain_fused_scores(scored, settings), at).confident


def rank(
    scored: Scored,
    fused: np.ndarray,
    paths: np.ndarray,
    min_score: float | str | None,
    confident: np.ndarray | None = None,
    exclude: int | None = None,
) -> Ranking:
    """The candidates best first (ties by image id; a video's best frame only; `exclude` left
    out) that pass min_score ("auto": the confident ones). `paths` [I] are the images' files."""
    candidates = scored.candidates
    order = np.lexsort((candidates, -fused))
    if exclude is not None:
        order = order[candidates[order] != exclude]
    order = best_frame_only(paths[candidates[order]], order)
    return Ranking(above(order, fused, min_score, confident), fused, scored.match.scores, confident)


def above(
    order: np.ndarray, fused: np.ndarray, min_score: float | str | None, confident: np.ndarray | None = None
) -> np.ndarray:
    """`order` without the positions below min_score: a number, or "auto" (the confident ones;
    without a calibration, all)."""
    if min_score == "auto" and confident is not None:
        return order[confident[order]]
    if not isinstance(min_score, float):
        return order
    return order[fused[order].astype(np.float64) >= min_score]  # a huge bound overflows float32


def best_frame_only(paths: np.ndarray, order: np.ndarray) -> np.ndarray:
    """`order` without the rows of a file already listed (`paths`: the file of each position in
    `order`): a video keeps its best frame."""
    _, first = np.unique(np.asarray(paths, dtype=object).astype(str), return_index=True)
    return order[np.sort(first)]
