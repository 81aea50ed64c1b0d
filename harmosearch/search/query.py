"""The first stage: a query's text, image and `--not` phrases in vectors, and its settings.

A text is parsed into lexemes and the relations between them (`model.lexemes`); the whole text
gives the global vector, averaged with a query image's when there is one. A `--not` phrase
(a negative) is scored as a whole against images and as the mean of its lexemes against
regions. The per-call options are laid over the search settings here, once per query.

A counted lexeme ("two red circles") or a negated one ("without a blue square") is embedded as
one instance of its thing ("a red circle", `model.quantities.instance_text`), which is what one
box shows; the global vector of a text with a negation embeds the text without it (CLIP reads
"without a blue square" as a blue square), and relations that touch a negated lexeme are
dropped: there is no box to relate (search/count.py scores the rest).
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
    counts: tuple[Any, ...] = ()  # per lexeme: the model.quantities.Count asked, or None; () for none
    negated: tuple[bool, ...] = ()  # per lexeme: asked to be absent; () for none
    embedded: tuple[str, ...] = ()  # per lexeme: what its vector embeds (an instance's text); () as written

    @property
    def dim(self) -> int:
        return len(self.global_vector)

    @property
    def quantified(self) -> bool:
        """Whether a lexeme is counted or negated (search/count.py)."""
        return any(c is not None for c in self.counts) or any(self.negated)

    @property
    def wanted(self) -> np.ndarray:
        """The lexemes asked to be present: all but the negated ones."""
        return np.array([j for j in range(len(self.lexeme_texts)) if not (self.negated and self.negated[j])], np.int64)

    @property
    def embedded_texts(self) -> list[str]:
        """What each lexeme vector embeds, as the rivals (contrast.py) should read it."""
        return list(self.embedded) if self.embedded else list(self.lexeme_texts)


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
    extras = _quantity_texts((getattr(encoder, "parse", None) or _parse)(text), lexemes) if has_text else []
    encodings = encoder.encode_queries(([text] if has_text else []) + list(negatives) + extras)
    encodings, more = encodings[: len(encodings) - len(extras)], encodings[len(encodings) - len(extras) :]
    positive, negative = (encodings[0], encodings[1:]) if has_text else (None, encodings)
    vectors = []
    if positive is not None:
        vectors.append(positive.global_vector.numpy())
        if positive.parsed.truncated:
            warnings.append("query longer than the model's context; its tail was ignored")
    if image is not None:
        vectors.append(image_vector(encoder, image))
    use_lexemes = positive is not None and lexemes and len(positive.parsed.lexemes) > 0
    quantities = _quantities(positive.parsed, more, use_lexemes) if more else None
    if quantities is not None and quantities.global_vector is not None:
        vectors[0] = quantities.global_vector
    g = unit(np.mean(vectors, axis=0))
    dim = len(g)
    lexeme_vectors = np.zeros((0, dim), np.float32)
    if use_lexemes:
        lexeme_vectors = positive.lexeme_vectors.numpy().astype(np.float32)
    if quantities is not None and use_lexemes and quantities.instances:
        lexeme_vectors[list(quantities.instances)] = np.stack(list(quantities.instances.values()))
    scored = decidable_relations(positive.parsed, warnings) if use_lexemes and relations else []
    extra: dict[str, Any] = {}
    if quantities is not None and use_lexemes:
        parsed = positive.parsed
        scored = [r for r in scored if not (parsed.negated[r[0]] or parsed.negated[r[2]])]
        extra = {"counts": parsed.counts, "negated": parsed.negated, "embedded": quantities.texts}
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
        **extra,
    )


def require_query(text: str | None, image: Path | None) -> None:
    """Refuse a query of nothing: no text (or only spaces) and no image."""
    if not (text or "").strip() and image is None:
        raise QueryError("empty query; give some text or --image PATH")


@dataclass(frozen=True)
class _Quantities:
    global_vector: np.ndarray | None  # of the text without its negations (None: nothing negated)
    # lexeme -> its vector: one instance's for a counted or negated lexeme, the positive text's
    # for the others when something is negated
    instances: dict[int, np.ndarray]
    texts: tuple[str, ...]  # what each lexeme vector embeds


def _parse(text: str) -> Any:
    from harmosearch.model.lexemes import parse

    return parse(text)


def counts_or_negates(parsed: Any) -> bool:
    """Whether a parsed text counts or negates a lexeme."""
    return any(lex.count is not None or lex.negated for lex in parsed.lexemes)


def _quantified(parsed: Any, lexemes: bool) -> list[int]:
    """The lexemes a query counts or negates (none without lexemes: --global-only)."""
    return [j for j, lex in enumerate(parsed.lexemes) if lex.count is not None or lex.negated] if lexemes else []


def _quantity_texts(parsed: Any, lexemes: bool) -> list[str]:
    """The texts a query that counts or negates needs encoded besides its own (in the same call):
    the text without its negations, one instance of each counted or negated lexeme; none for any
    other query."""
    from harmosearch.model.quantities import instance_text

    positive = [parsed.positive_text()] if any(parsed.negated) else []
    return positive + [instance_text(parsed.lexemes[j].text) for j in _quantified(parsed, lexemes)]


def _quantities(parsed: Any, encodings: list[Any], lexemes: bool) -> _Quantities:
    """What the encodings of `_quantity_texts` give a query: the global vector of its positive
    text, and the vectors that replace its lexemes' own."""
    negated = any(parsed.negated)
    quantified = _quantified(parsed, lexemes)
    global_vector = encodings[0].global_vector.numpy() if negated else None
    instances, embedded = {}, list(parsed.lexeme_texts)
    kept = [j for j, lex in enumerate(parsed.lexemes) if not lex.negated]
    if negated and lexemes and encodings[0].parsed.lexeme_texts == [parsed.lexemes[j].text for j in kept]:
        # A lexeme after a negation ("no cars, only a bicycle") would see it in the text's tokens.
        instances = {j: v.astype(np.float32) for j, v in zip(kept, encodings[0].lexeme_vectors.numpy(), strict=True)}
    for j, one in zip(quantified, encodings[1:] if negated else encodings, strict=True):
        if len(one.parsed.lexemes) == 1:  # else the lexeme keeps its vector from the text
            instances[j] = one.lexeme_vectors.numpy()[0].astype(np.float32)
            embedded[j] = one.parsed.lexemes[0].text
    return _Quantities(global_vector, instances, tuple(embedded))


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
