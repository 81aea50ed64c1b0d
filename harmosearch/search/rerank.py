"""Reranking (`--refine`): the best results looked at again on their pictures.

For the first max(k, search.rerank) results (only the k shown when search.rerank is 0), each
picture is decoded again and
- box search (`box_search`): each lexeme's box is searched again near the indexed one on the
  re-encoded dense maps, so the box shown fits the object (unless SearchConfig.searches_boxes
  keeps the indexed boxes, as it does at --detail high);
- crop scoring (`crops`): with search.rerank and search.crop_weight, the square around each
  lexeme's box is encoded alone and compared with the lexeme's text as a caption;
- reordering: with search.rerank, those results are ordered by `reordered_scores` and cut at a
  numeric min_score (the rest of the ranking is dropped, so every result shown is scored the
  same way).
A result whose picture is gone or cannot be decoded keeps its indexed boxes and lexeme scores
(in that same formula, without a crop score), with a warning. The bench calls `look_again` and
`reordered_scores` too, so it ranks as a query does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from harmosearch.config import SearchConfig
from harmosearch.search.box_search import as_seeds, decode_side, search_boxes
from harmosearch.search.contrast import Contrast
from harmosearch.search.crops import crop_scores
from harmosearch.search.fuse import absence_term, fuse, lexeme_part, negatives_term
from harmosearch.search.query import Query
from harmosearch.search.rank import Ranking, above
from harmosearch.search.score import RegionTable, Scored, best_regions, related_lexemes
from harmosearch.store.vectors import rows_as_float32


@dataclass(frozen=True)
class Sight:
    """What looking at results again needs."""

    encoder: Any
    picture: Callable[[int, int], tuple[Any, int, int]]  # (image id, min side) -> (image, width, height)
    name_of: Callable[[int], str]  # image id -> its path, for warnings
    regions: RegionTable  # the plain region table: indexed boxes and vectors
    detail: str  # the index's regions.detail


def reranks(query: Query, settings: SearchConfig, detail: str) -> bool:
    """Whether a query is looked at again: --refine on a query with lexemes, where looking
    changes anything (SearchConfig.refines_anything)."""
    return bool(settings.refine and len(query.lexeme_vectors) and settings.refines_anything(detail))


def look_again(
    encoder: Any,
    pictures: Sequence[tuple[Any, int, int]],
    image_of: np.ndarray,
    lexemes: np.ndarray,
    seeds: np.ndarray,
    settings: SearchConfig,
    searching: bool,
    contrast: Contrast | None = None,
    captions: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Request r: lexeme r [R, D] on picture image_of[r] near seeds[r] [R, 4] (pixels; NaN: no
    seed). Returns the boxes shown [R, 4] (searched again, or the seeds kept when not
    `searching`), their scores [R] (zeros when kept; with a contrast whose rows are the
    requests, the scores that rank) and the crop scores of those boxes against captions[r]
    [R, D] (zeros without captions)."""
    scores = np.zeros(len(image_of), np.float32)
    if searching:
        boxes, scores = search_boxes(
            encoder, pictures, image_of, lexemes, seeds, settings.refine_scale, settings.box_margin, contrast
        )
    else:
        boxes = np.nan_to_num(np.asarray(seeds, np.float32))
    crops = np.zeros(len(image_of), np.float32)
    if captions is not None:
        crops = crop_scores(encoder, pictures, image_of, boxes, captions)
    return boxes, scores, crops


def reordered_scores(
    settings: SearchConfig,
    fused: np.ndarray,
    global_scores: np.ndarray,
    lexeme_scores: np.ndarray,
    crops: np.ndarray,
    relation_scores: np.ndarray | None = None,
    negatives: np.ndarray | float = 0.0,
) -> np.ndarray:
    """The score that reorders results looked at again [C]: the fused score plus crop_weight
    times each result's mean crop score [C]; with crop_weight 0, refine_alpha times the global
    score plus the rest times the looked-at lexeme scores [C, L] (and the relations' part), less
    the --not phrases."""
    if settings.crop_weight:
        return fused + settings.crop_weight * crops
    return (
        fuse(global_scores, lexeme_scores, settings.refine_alpha, relation_scores, settings.relation_weight) - negatives
    )


def rerank(
    ranking: Ranking, scored: Scored, query: Query, settings: SearchConfig, sight: Sight
) -> tuple[Ranking, list[str]]:
    """The ranking with its head looked at again (see the module's docstring), and warnings."""
    s = settings
    head = ranking.order[: max(s.k, s.rerank)]
    pictures, kept, warnings = _read(head, scored.candidates, sight, decode_side(sight.encoder, s.refine_scale))
    searching = s.searches_boxes(sight.detail)
    lexeme_scores = scored.match.plain_scores.astype(np.float32)  # a copy
    count = len(query.lexeme_vectors)
    contrast = scored.contrast if s.rerank else None  # only the reordering uses the scores
    # Looked-at scores know no window penalty; a picture not read again, or every one when the
    # indexed boxes are kept, keeps its indexed scores without it too (with the contrast, as
    # looked-at scores have it), so that one formula scores the reordered results.
    if contrast is not None and (len(kept) < len(head) or not searching):
        others = np.setdiff1d(head, kept) if searching else head
        lexeme_scores[others] = _indexed_scores(scored, others, query, s, contrast, sight.regions)
    found: dict[int, np.ndarray] = {}
    crops = np.zeros(len(scored.candidates), np.float32)  # each candidate's mean crop score
    if kept:
        captions = None
        if s.rerank and s.crop_weight:
            captions = np.tile(sight.encoder.encode_texts(list(query.lexeme_texts)).numpy(), (len(kept), 1))
        boxes, scores, looks = look_again(
            sight.encoder,
            pictures,
            np.repeat(np.arange(len(kept)), count),
            np.tile(query.lexeme_vectors, (len(kept), 1)),
            as_seeds(sight.regions.boxes_of(scored.match.rows[kept])),
            s,
            searching,
            None if contrast is None else contrast.columns(np.tile(np.arange(count), len(kept))),
            captions,
        )
        if searching:
            found = {p: boxes[i * count : (i + 1) * count] for i, p in enumerate(kept)}
            lexeme_scores[kept] = scores.reshape(len(kept), count)
        crops[kept] = looks.reshape(len(kept), count)[:, scored.wanted].mean(1)
    if not s.rerank:
        return replace(ranking, boxes=found), warnings
    return _reordered(ranking, scored, head, lexeme_scores, crops, s, found), warnings


def _reordered(
    ranking: Ranking,
    scored: Scored,
    head: np.ndarray,
    lexeme_scores: np.ndarray,
    crops: np.ndarray,
    s: SearchConfig,
    found: dict[int, np.ndarray],
) -> Ranking:
    """The head reordered by `reordered_scores` and cut at a numeric min_score; a query's negated
    lexemes stay out of the mean, its count and negation terms as the fused scores hold them."""
    match = scored.match
    alpha = s.alpha_for(scored.n_wanted)
    fused = ranking.fused.copy()
    absent = absence_term(scored, s)
    fused[head] = reordered_scores(
        s,
        fused[head],
        scored.global_scores[head],
        lexeme_part(scored, s, lexeme_scores)[head],
        crops[head],
        match.relation_scores[head] if match.relation_scores.size else None,
        negatives_term(scored.negative_global[head], scored.negative_regions[head], alpha)
        + (absent[head] if isinstance(absent, np.ndarray) else absent),
    )
    head = head[np.lexsort((scored.candidates[head], -fused[head]))]
    return replace(
        ranking, order=above(head, fused, s.min_score), fused=fused, lexeme_scores=lexeme_scores, boxes=found
    )


def _read(
    head: np.ndarray, candidates: np.ndarray, sight: Sight, side: int
) -> tuple[list[tuple[Any, int, int]], list[int], list[str]]:
    """The pictures of the head's images, the positions read, and a warning naming the unread."""
    from harmosearch.errors import HarmosearchError

    pictures, kept, unread = [], [], []
    for p in head:
        image_id = int(candidates[p])
        try:
            pictures.append(sight.picture(image_id, side))
        except HarmosearchError as exc:  # gone since indexing, or undecodable
            unread.append(f"{sight.name_of(image_id)}: {exc}")
            continue
        kept.append(int(p))
    warnings = []
    if unread:
        warnings.append(
            f"{len(unread)} of the best {len(head)} results were not looked at again, their pictures unread "
            f"({unread[0]}); they keep their indexed boxes"
        )
    return pictures, kept, warnings


def _indexed_scores(
    scored: Scored, positions: np.ndarray, query: Query, s: SearchConfig, contrast: Contrast, regions: RegionTable
) -> np.ndarray:
    """Lexeme scores [P, L] of results not looked at, scored as looked-at ones are (no window
    penalty, the contrast's term): a lone lexeme's best region, a related lexeme's region chosen
    with the relations (-1 without one)."""
    lexemes = query.lexeme_vectors
    scores = best_regions(regions, scored.candidates[positions], lexemes, s.box_margin, contrast)[0]
    rows = scored.match.rows[positions]
    for j in related_lexemes(query.relations) if s.relation_weight else []:
        chosen = rows[:, j]
        present = chosen >= 0
        vectors = rows_as_float32(regions.vectors, chosen[present])
        plain = (vectors @ lexemes[j])[:, None]
        scores[present, j] = (plain + contrast.columns([j]).term(plain, vectors))[:, 0]
        scores[~present, j] = -1.0
    return scores
