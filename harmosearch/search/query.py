"""The first stage: a query's text, image and `--not` phrases in vectors, and its settings.

A text is parsed into lexemes and the relations between them (`model.lexemes`); the whole text
gives the global vector, averaged with a query image's when there is one. A `--not` phrase
(a negative) is scored as a whole against images and as the mean of its lexemes against
regions. The per-call options are laid over the search settings here, once per query.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.config import SearchConfig
from harmosearch.errors import ConfigError, QueryError
from harmosearch.limits import check_k, check_negatives, cut_query

SORTS = ("score", "date")

Relation = tuple[int, str, int, bool]  # (subject lexeme, relation, object lexeme, negated)


@dataclass(frozen=True)
class Query:
    """A query in vectors."""

    text: str
    global_vector: np.ndarray  # [D]
    lexeme_texts: list[str]
    lexeme_vectors: np.ndarray  # [L, D]
    relations: list[Relation]  # the ones 2D boxes can decide
    negative_global: np.ndarray  # [N, D] each --not phrase's global vector
    negative_regions: np.ndarray  # [N, D] and its region vector
    has_image: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return len(self.global_vector)


def query_settings(
    base: SearchConfig,
    k: int | None = None,
    alpha: float | None = None,
    min_score: float | str | None = None,
    relation_weight: float | None = None,
    refine: bool | None = None,
) -> SearchConfig:
    """The search settings with a call's options on top, checked like the config file. An
    `alpha` given for the call weighs the global score of every query, one lexeme or many."""
    try:
        s = replace(
            base,
            k=base.k if k is None else k,
            alpha=base.alpha if alpha is None else alpha,
            phrase_alpha=base.phrase_alpha if alpha is None else alpha,
            min_score=base.min_score if min_score is None else min_score,
            relation_weight=base.relation_weight if relation_weight is None else relation_weight,
            refine=base.refine if refine is None else refine,
        )
    except ConfigError as exc:
        raise QueryError(str(exc).removeprefix("search.")) from None
    check_k(s.k)
    return s


def text_settings(s: SearchConfig, asked_min_score: Any, has_image: bool, calibrated: bool, sort: str) -> SearchConfig:
    """The settings of a text or image query, with `--min-score auto` checked: refused when the
    caller asked it for an image query or the index has no calibration; a configured "auto"
    does not apply to image queries."""
    if sort not in SORTS:
        raise QueryError(f"unknown sort {sort!r}; use score or date")
    if s.min_score == "auto" and has_image:
        if asked_min_score == "auto":
            raise QueryError("--min-score auto does not apply to --image queries: image similarity is not calibrated")
        s = replace(s, min_score=None)
    if s.min_score == "auto" and not calibrated:
        raise QueryError("this index has no calibration for --min-score auto; update it with harmosearch index")
    return s


def encode_query(
    encoder: Any,
    text: str,
    image: Path | None = None,
    negatives: tuple[str, ...] = (),
    lexemes: bool = True,
    relations: bool = True,
) -> Query:
    """The query text (cut to MAX_QUERY_CHARS), the --not phrases and the query image, in vectors.
    lexemes=False (--global-only) keeps the global vector only; relations=False ranks the
    lexemes independently."""
    text, cut = cut_query(text or "")
    warnings = [cut] if cut else []
    require_query(text, image)
    for phrase in (text, *negatives):
        if not _is_utf8(phrase):
            raise QueryError(f"{phrase!r} is not valid UTF-8 text; check the terminal's encoding (LANG)")
    has_text = bool(text.strip())
    negatives = tuple(n for n in negatives if n.strip())
    check_negatives(negatives)
    encodings = encoder.encode_queries(([text] if has_text else []) + list(negatives))
    positive, negative = (encodings[0], encodings[1:]) if has_text else (None, encodings)
    vectors = []
    if positive is not None:
        vectors.append(positive.global_vector.numpy())
        if positive.parsed.truncated:
            warnings.append("query longer than the model's context; its tail was ignored")
    if image is not None:
        vectors.append(image_vector(encoder, image))
    g = unit(np.mean(vectors, axis=0))
    dim = len(g)
    use_lexemes = positive is not None and lexemes and len(positive.parsed.lexemes) > 0
    lexeme_vectors = np.zeros((0, dim), np.float32)
    if use_lexemes:
        lexeme_vectors = positive.lexeme_vectors.numpy().astype(np.float32)
    scored = decidable_relations(positive.parsed, warnings) if use_lexemes and relations else []
    return Query(
        text=text,
        global_vector=g,
        lexeme_texts=positive.parsed.lexeme_texts if use_lexemes else [],
        lexeme_vectors=lexeme_vectors,
        relations=scored,
        negative_global=_stack([n.global_vector.numpy() for n in negative], dim),
        # A --not phrase's region vector: the mean of its lexemes, or its global vector without any.
        negative_regions=_stack(
            [
                unit(n.lexeme_vectors.numpy().mean(0) if len(n.lexeme_vectors) else n.global_vector.numpy())
                for n in negative
            ],
            dim,
        ),
        has_image=image is not None,
        warnings=tuple(warnings),
    )


def require_query(text: str | None, image: Path | None) -> None:
    """Refuse a query of nothing: no text (or only spaces) and no image."""
    if not (text or "").strip() and image is None:
        raise QueryError("empty query; give some text or --image PATH")


def vector_query(vector: np.ndarray, lexeme: str | None = None) -> Query:
    """A query made of one stored or pooled vector, as it is: by itself (more like an image), or
    also as a lexeme named `lexeme` (more like a box drawn on an image)."""
    g = np.asarray(vector, np.float32)
    lexemes = g[None] if lexeme is not None else np.zeros((0, len(g)), np.float32)
    empty = np.zeros((0, len(g)), np.float32)
    return Query("", g, [lexeme] if lexeme is not None else [], lexemes, [], empty, empty, has_image=True)


def decidable_relations(parsed: Any, warnings: list[str]) -> list[Relation]:
    """The parsed relations that boxes can decide; a warning names each one that needs depth
    (in front of, behind)."""
    scored = []
    for r in parsed.relations:
        if r.decidable:
            scored.append((r.subject, r.relation, r.object, r.negated))
        else:
            warnings.append(
                f"{r.phrase!r} needs depth, which 2D boxes do not show; "
                f"{parsed.lexemes[r.subject].text!r} and {parsed.lexemes[r.object].text!r} are matched without it"
            )
    return scored


def image_vector(encoder: Any, path: Path) -> np.ndarray:
    """The global vector of a picture file given as a query."""
    from harmosearch.media.formats import open_still

    if not Path(path).is_file():
        raise QueryError(f"query image not found: {path}")
    try:
        image = open_still(Path(path)).image
    except Exception as exc:
        raise QueryError(f"cannot use {path} as a query: {exc}") from None
    global_vector, _ = encoder.encode_pixels(encoder.image_tensor(image)[None])
    return global_vector[0].numpy()


def unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def _stack(vectors: list[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)


def _is_utf8(text: str) -> bool:
    """False for text holding undecodable bytes (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
