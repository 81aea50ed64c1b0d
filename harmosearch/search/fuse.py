"""How a query's scores become one ranking.

For a candidate image with global similarity g (global text vector vs global image vector), and
for each of the query's m lexemes the similarity r_l of the region chosen for it (less
search.window_penalty when that region is a window proposal: scoring.RegionTable; plus
search.contrast times the log-probability of the lexeme against its rivals: contrast.py), and
for each
of its n decidable relations the geometric score rho_k in [0, 1] of the chosen boxes
(`relations`):

    fused = alpha * g + (1 - alpha) * (r_1 + ... + r_m + w * ((rho_1 - 1/2) + ... + (rho_n - 1/2))) / m

where w is search.relation_weight. The amounts here and in the region scores (w, the window
penalty, the contrast's weight) are in cosines: the settings give them in units of the index's
spread, and the query turns them into its cosines once (calibration.in_cosines). The regions
are chosen jointly to maximise the bracket (`scoring.match_regions`); a lexeme in no relation
takes its best region, so a query without relations (or with w = 0) ranks by alpha * g + (1 -
alpha) * mean best region score. A relation that holds adds up to w/2, one that is violated
takes up to w/2 away, and one the boxes cannot tell (rho = 1/2) changes nothing: so captions
with relations do not outscore captions without them merely for having them (which matters when
one image ranks many captions). A query without lexemes ranks by g alone. Each `--not` phrase
is scored the same way (its global and its best-region similarity) and subtracted:

    fused -= alpha * g_not + (1 - alpha) * r_not      (the largest over the --not phrases)

A query that counts or negates lexemes ("two red circles", "a beach without people") takes its
negated lexemes out of the mean (m counts the others, and alpha is that m's), takes each counted
lexeme's count term off its r_l (so a count weighs as much as the lexeme it counts: all of a
"two red circles", a quarter of the region part of "three shapes: a red circle, a blue ring and
a star"), and subtracts the negated lexemes' absence term (`count.Tally`); any other query ranks
exactly as above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from harmosearch.config import SearchConfig
    from harmosearch.search.score import Scored


def fuse(
    global_scores: np.ndarray,
    lexeme_scores: np.ndarray,
    alpha: float,
    relation_scores: np.ndarray | None = None,
    relation_weight: float = 0.0,
) -> np.ndarray:
    """global_scores [C]; lexeme_scores [C, m] (m may be 0); relation_scores [C, n] -> fused [C]."""
    global_scores = np.asarray(global_scores, dtype=np.float32)
    lexeme_scores = np.asarray(lexeme_scores, dtype=np.float32)
    if lexeme_scores.ndim != 2:  # [C] or flat; no candidates cannot be reshaped by -1
        lexeme_scores = lexeme_scores.reshape(len(global_scores), -1 if len(global_scores) else 0)
    m = lexeme_scores.shape[1]
    if m == 0:
        return global_scores.copy()
    regions = lexeme_scores.sum(axis=1)
    if relation_scores is not None and relation_weight:
        regions = regions + relation_weight * (np.asarray(relation_scores, dtype=np.float32) - 0.5).sum(axis=1)
    return alpha * global_scores + (1 - alpha) * regions / m


def negatives_term(negative_global: np.ndarray, negative_region: np.ndarray, alpha: float) -> np.ndarray:
    """negative_global, negative_region [C, n] for n --not phrases -> the amount to subtract [C]."""
    negative_global = np.asarray(negative_global, dtype=np.float32)
    if negative_global.size == 0:
        return np.zeros(negative_global.shape[0], dtype=np.float32)
    combined = alpha * negative_global + (1 - alpha) * np.asarray(negative_region, dtype=np.float32)
    return combined.max(axis=1)


def fused_scores(scored: Scored, settings: SearchConfig) -> np.ndarray:
    """The score that ranks each candidate [C]: the formula above at the query's alpha
    (settings.alpha_for its lexeme count), less its --not phrases; for a query that counts or
    negates, each counted lexeme's score less its count term and the negated lexemes' absence
    term subtracted (count.py; negated lexemes leave the mean)."""
    alpha = settings.alpha_for(scored.n_wanted)
    fused = fuse(
        scored.global_scores,
        lexeme_part(scored, settings, scored.match.scores),
        alpha,
        scored.match.relation_scores,
        settings.relation_weight,
    )
    return (
        fused - negatives_term(scored.negative_global, scored.negative_regions, alpha) - absence_term(scored, settings)
    )


def plain_fused_scores(scored: Scored, settings: SearchConfig) -> np.ndarray:
    """The score an index's calibration measures [C]: the plain scores of the lexemes asked to be
    present (no window penalty, no rivals), no relation, count or absence term (the unrelated
    queries of the calibration get none), less the --not phrases; a query without such lexemes
    scores its global score."""
    alpha = settings.alpha_for(scored.n_wanted)
    plain = fuse(scored.global_scores, scored.match.plain_scores[:, scored.wanted], alpha)
    return plain - negatives_term(scored.negative_global, scored.negative_regions, alpha)


def lexeme_part(scored: Scored, settings: SearchConfig, scores: np.ndarray) -> np.ndarray:
    """The lexeme scores [C, L] the mean takes [C, m]: the wanted lexemes', a counted one's less
    its count term (count.py); all of them, as they are, for a query that neither counts nor
    negates."""
    if scored.tally is None:
        return scores
    wanted = scored.wanted
    return scores[:, wanted] - scored.tally.count_terms(settings.count_weight)[:, wanted]


def absence_term(scored: Scored, settings: SearchConfig) -> np.ndarray | float:
    """The negated lexemes' absence term [C] (count.py); 0 for a query that negates nothing."""
    if scored.tally is None:
        return 0.0
    return scored.tally.absence_terms(settings.negation_weight)
