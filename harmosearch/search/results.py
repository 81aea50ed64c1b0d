"""Results: what a search returns, each ranked image with its scores and the box of each lexeme."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.search.query import Relation
from harmosearch.search.rank import Ranking
from harmosearch.search.score import RegionTable, Scored

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class LexemeMatch:
    text: str
    score: float
    box: Box  # x0, y0, x1, y1 in pixels of the original image
    count: int | None = None  # instances found, when the query counts this lexeme ("two red circles")
    instances: tuple[Box, ...] = ()  # the box of each instance counted, best first
    negated: bool = False  # the query asks for its absence; `box` is where it would be
    presence: float | None = None  # a negated lexeme's presence in [0, 1] (search/count.py)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "score": round(self.score, 6), "box": _rounded(self.box)}
        if self.count is not None:
            out["count"] = self.count
            out["instances"] = [_rounded(box) for box in self.instances]
        if self.negated:
            out["negated"] = True
            out["presence"] = None if self.presence is None else round(self.presence, 4)
        return out


def _rounded(box: Box) -> list[float]:
    return [round(v, 1) for v in box]


@dataclass(frozen=True)
class RelationMatch:
    subject: str  # the lexemes' texts
    relation: str  # canonical name, e.g. "left of"
    object: str
    negated: bool
    score: float  # the geometric score in [0, 1] of the boxes shown for subject and object

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "relation": self.relation,
            "object": self.object,
            "negated": self.negated,
            "score": round(self.score, 6),
        }


@dataclass(frozen=True)
class Result:
    rank: int
    image_id: int
    path: str  # relative to the photo root
    absolute: Path
    score: float
    global_score: float
    lexemes: tuple[LexemeMatch, ...]
    width: int
    height: int
    relations: tuple[RelationMatch, ...] = ()
    frame_time: float | None = None  # seconds into a video: the frame that matched; None for a still
    taken: str | None = None  # capture time, ISO 8601 (media.metadata)
    confident: bool | None = None  # scores above the index's calibration; None when not calibrated

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "path": self.path,
            "frame_time": None if self.frame_time is None else round(self.frame_time, 3),
            "score": round(self.score, 6),
            "global_score": round(self.global_score, 6),
            "confident": self.confident,
            "taken": self.taken,
            "lexemes": [m.to_dict() for m in self.lexemes],
            "relations": [r.to_dict() for r in self.relations],
        }


@dataclass
class SearchResponse:
    query: str
    lexemes: list[str]
    results: list[Result]
    warnings: list[str] = field(default_factory=list)
    calibrated: bool = False  # results were measured against the index's calibration

    @property
    def confident_match(self) -> bool | None:
        """Whether any result is confident; None when the query was not calibrated."""
        return any(r.confident for r in self.results) if self.calibrated else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "lexemes": self.lexemes,
            "confident_match": self.confident_match,
            "results": [r.to_dict() for r in self.results],
        }


def build_results(
    scored: Scored,
    ranking: Ranking,
    lexeme_texts: Sequence[str],
    relations: Sequence[Relation],
    images: Mapping[str, np.ndarray],
    regions: RegionTable,
    photos_root: Path,
) -> list[Result]:
    """The ranking's positions as Results, in order: scores, each lexeme's box (the one found
    again where the reranking looked) and each relation's score. `images` is the index's
    images table."""
    match = scored.match
    results = []
    for rank, p in enumerate(ranking.order, start=1):
        image_id = int(scored.candidates[p])
        shown = ranking.boxes[int(p)] if int(p) in ranking.boxes else regions.boxes_of(match.rows[p])
        lexemes = tuple(
            LexemeMatch(text, float(ranking.lexeme_scores[p, j]), tuple(float(v) for v in shown[j]))
            for j, text in enumerate(lexeme_texts)
        )
        if scored.tally is not None:
            lexemes = tuple(_counted(m, scored.tally, p, j, regions) for j, m in enumerate(lexemes))
        related = tuple(
            RelationMatch(lexeme_texts[s], name, lexeme_texts[o], negated, float(match.relation_scores[p, r]))
            for r, (s, name, o, negated) in enumerate(relations)
        )
        path = str(images["path"][image_id])
        seconds = float(images["frame_time"][image_id])
        taken = images["taken"][image_id]
        results.append(
            Result(
                rank=rank,
                image_id=image_id,
                path=path,
                absolute=photos_root / path,
                score=float(ranking.fused[p]),
                global_score=float(scored.global_scores[p]),
                lexemes=lexemes,
                width=int(images["width"][image_id]),
                height=int(images["height"][image_id]),
                relations=related,
                frame_time=None if math.isnan(seconds) else seconds,
                taken=taken if isinstance(taken, str) else None,
                confident=None if ranking.confident is None else bool(ranking.confident[p]),
            )
        )
    return results


def _counted(match: LexemeMatch, tally: Any, p: int, j: int, regions: RegionTable) -> LexemeMatch:
    """A lexeme's match with what the query's count or negation found (search/count.py)."""
    if tally.negated[j]:
        return replace(match, negated=True, presence=float(tally.presence[p, j]))
    if not tally.counted[j]:
        return match
    rows = tally.instances[p, j]
    boxes = tuple(tuple(float(v) for v in box) for box in regions.boxes[rows[rows >= 0]])
    return replace(match, count=int(tally.found[p, j]), instances=boxes)


def by_date(results: list[Result], taken_local: np.ndarray) -> list[Result]:
    """The results newest first (by capture time on the photo's own clock; undated last, ties in
    score order), ranked in that order."""
    taken = np.asarray(taken_local, dtype=np.float64)[[r.image_id for r in results]]
    order = np.argsort(-np.nan_to_num(taken, nan=-np.inf), kind="stable")
    return [replace(results[i], rank=rank) for rank, i in enumerate(order, start=1)]
