"""An honest "no confident match": a query's score measured against what unrelated queries
score on the same index.

Cosine scores mean different things with different models, and the best of 100 images scores
lower than the best of 100,000 by chance alone, so no fixed `--min-score` fits every index.
At index time, `calibrate` scores a fixed bank of NULL_QUERIES (phrases that name no thing, so
that no library holds what they ask for: word salad, made-up words, a colour before a made-up
word; see null_bank) as a query's confidence is measured (without the relations' term and the
window penalty),

    fused = alpha * global + (1 - alpha) * mean over lexemes of the image's best region

and keeps, for each null query, its best score over the whole index at each alpha of ALPHAS.
Those maxima are the null distribution: how high the top result of a query climbs on this
index with this model when the index cannot hold what it names.

At query time a result is confident when its score beats the `confident_quantile` (0.92)
quantile of the null maxima at the query's alpha: when it scores higher than the best result of
92% of the unrelated queries. When the first result is not confident, the honest answer is "no
confident match"; `--min-score auto` is that quantile. Each null query's maximum is linearly
interpolated between the stored alphas; the maximum over images of a fused score is convex in
alpha, so the interpolation errs high, on the side of calling a result weak. The empirical p-value
(the share of null queries whose best score reaches the result's) is given beside. The
quantile was chosen on synthetic scenes with the bundled model and an earlier bank of everyday
things, and checked with this bank on validation scenes plus photographs, each query at the
alpha it fuses at (benchmarks/calibration.py --split val: 0.90 calls more present pairs
confident but a quarter of absent things in a present colour, "a red bicycle", too).
Queries with an image (`--image`) score on another scale and are not calibrated; `--global-only`
queries use alpha 1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from harmosearch.errors import DataError
from harmosearch.search.count import FALLBACK_SPREAD
from harmosearch.search.fuse import fuse
from harmosearch.search.score import best_region_scores

if TYPE_CHECKING:
    from harmosearch.config import SearchConfig

CALIBRATION_VERSION = 2  # of the method and the bank: a stored calibration of another version is stale
CONFIDENT_QUANTILE = 0.92
ALPHAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))

# The null bank: queries that no library can hold, because they name no thing. A third are
# word salad, three function words that a tokenizer knows as one token each and that name
# nothing ("although quite beneath"); a third made-up words, the letters of an everyday word
# shuffled into one that is no word ("a tlaber"); a third a colour before a made-up word ("a red
# tlaber"), which measures how high a query climbs on its colour alone. All are drawn once, from
# a fixed seed, so every index is calibrated against the same bank. An earlier bank of everyday
# things ("a dog", "a red car") set the bar by whatever a real library held: its best scores were
# true matches.
FUNCTION_WORDS: tuple[str, ...] = tuple(
    """about above across after again against almost along already also although always among
    another anyway because before behind below beneath beside besides between beyond both
    certain despite during either else enough even ever every except further hence however
    indeed instead itself least less maybe meanwhile merely might moreover much must neither
    never nobody none nor nothing often once only otherwise perhaps quite rather seldom several
    should since some somehow still such than thence therefore these though through thus
    together toward unless until upon usually very whereas whether which while whose within
    without would yet""".split()
)
COLOUR_WORDS: tuple[str, ...] = (
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "grey",
    "golden",
    "silver",
)
SHUFFLED_WORDS: tuple[str, ...] = tuple(
    """table window garden bottle pencil blanket kitchen mirror basket candle ladder pillow
    rabbit turtle monkey parrot spider lemon carrot cherry potato tomato button jacket bucket
    hammer saddle wallet helmet anchor barrel bridge castle tunnel forest meadow island valley
    camera guitar pepper trumpet rocket engine napkin sofa bench kettle""".split()
)
NULL_SEED = 20261207


def null_bank(count: int = 102, seed: int = NULL_SEED) -> tuple[str, ...]:
    """`count` phrases that name no thing: word salad, made-up words and coloured made-up
    words, in turn."""
    rng = np.random.default_rng(seed)
    words = set(SHUFFLED_WORDS)
    out: dict[str, None] = {}
    while len(out) < count:
        if len(out) % 3 == 0:
            out[" ".join(str(w) for w in rng.choice(FUNCTION_WORDS, size=3, replace=False))] = None
            continue
        letters = list(str(rng.choice(SHUFFLED_WORDS)))
        rng.shuffle(letters)
        made_up = "".join(letters)
        if made_up in words:
            continue
        colour = f"{rng.choice(COLOUR_WORDS)} " if len(out) % 3 == 2 else ""
        out[f"{'an' if colour.startswith('o') else 'a'} {colour}{made_up}"] = None
    return tuple(out)


NULL_QUERIES: tuple[str, ...] = null_bank()

# encode(texts) -> per text (global vector [D], lexeme vectors [L, D]), normalised, as queries are encoded.
TextEncoder = Callable[[list[str]], Sequence[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class Calibration:
    """The null distribution of one index; JSON-ready through to_dict / from_dict."""

    null_max: tuple[tuple[float, ...], ...]  # [null query][alpha]: the best fused score over the index
    alphas: tuple[float, ...] = ALPHAS
    n_images: int = 0
    confident_quantile: float = CONFIDENT_QUANTILE
    version: int = CALIBRATION_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "n_images": self.n_images,
            "confident_quantile": self.confident_quantile,
            "alphas": list(self.alphas),
            "null_max": [[round(v, 5) for v in row] for row in self.null_max],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        try:
            return cls(
                null_max=tuple(tuple(float(v) for v in row) for row in data["null_max"]),
                alphas=tuple(float(a) for a in data["alphas"]),
                n_images=int(data["n_images"]),
                confident_quantile=float(data["confident_quantile"]),
                version=int(data["version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed calibration: {exc}") from None

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """null_max [null query, alpha] and alphas as arrays, made once (a query reads them a few
        times; a tuple of tuples made into an array each time cost it 0.1 ms a read)."""
        table = np.asarray(self.null_max, dtype=np.float64)
        table.flags.writeable = False
        return table, np.asarray(self.alphas, dtype=np.float64)

    def null_at(self, alpha: float) -> np.ndarray:
        """Each null query's best score at this alpha, interpolated between the stored alphas."""
        table, alphas = self._arrays
        if not alphas[0] - 1e-9 <= alpha <= alphas[-1] + 1e-9:
            raise DataError(f"this calibration covers alpha {alphas[0]:g} to {alphas[-1]:g}, not {alpha:g}")
        if len(alphas) == 1:
            return table[:, 0]
        lo = int(np.clip(np.searchsorted(alphas, alpha, side="right") - 1, 0, len(alphas) - 2))
        weight = (alpha - alphas[lo]) / (alphas[lo + 1] - alphas[lo])
        return (1 - weight) * table[:, lo] + weight * table[:, lo + 1]

    def spread(self, alpha: float = 0.0) -> float:
        """The standard deviation of the null at this alpha: how much the best score of a query
        for nothing varies on this index (the unit of the ranking's amounts, `ranking_unit`)."""
        return float(np.std(self.null_at(alpha)))

    def min_score(self, alpha: float) -> float:
        """`--min-score auto`: scores above this are confident at this alpha."""
        return float(np.quantile(self.null_at(alpha), self.confident_quantile))


def ranking_unit(calibration: Calibration | None) -> float:
    """The cosine of one unit of the ranking's additive amounts on an index (`in_cosines`): its
    null's standard deviation at alpha 0, which is how much the best region score of a query
    for nothing varies there, so how wide the band of this model's region cosines is on this
    library. Without a calibration (or with a null that does not vary) FALLBACK_SPREAD, count.py's
    unit, 0.10: harmo-tiny's spread on its validation scenes, so that such an index ranks with
    the cosine amounts the defaults held before they were set in units."""
    spread = None if calibration is None else calibration.spread(0.0)
    return spread if spread is not None and math.isfinite(spread) and spread > 1e-6 else FALLBACK_SPREAD


def in_cosines(settings: SearchConfig, calibration: Calibration | None) -> SearchConfig:
    """The search settings with their additive amounts, which the config gives in units of an
    index's spread, in cosines of this index (`ranking_unit`): search.window_penalty,
    search.box_margin, search.relation_weight (a relation adds up to relation_weight / 2 units)
    and search.contrast (contrast units per nat of log p). Ratios of two cosines (alpha,
    crop_weight) and the count and negation weights (count.py multiplies them by the spread
    itself) are left as they are. Called once per query, on settings in units."""
    unit = ranking_unit(calibration)
    return replace(
        settings,
        window_penalty=settings.window_penalty * unit,
        box_margin=settings.box_margin * unit,
        relation_weight=settings.relation_weight * unit,
        contrast=settings.contrast * unit,
    )


@dataclass(frozen=True)
class Assessment:
    p: np.ndarray  # [n] the share of null queries whose best score is at least the result's
    confident: np.ndarray  # [n] bool: the score is above the calibration's min_score


def assess(calibration: Calibration, scores: Sequence[float] | np.ndarray, alpha: float) -> Assessment:
    """Each result score measured against the index's null distribution at the query's alpha."""
    scores = np.asarray(scores, dtype=np.float64)
    null = calibration.null_at(alpha)
    p = (null[None, :] >= scores[:, None]).mean(axis=1)
    return Assessment(p, scores > calibration.min_score(alpha))


def calibrate(
    global_vectors: np.ndarray,
    region_vectors: np.ndarray,
    region_start: np.ndarray,
    encode: TextEncoder,
    bank: Sequence[str] = NULL_QUERIES,
    alphas: Sequence[float] = ALPHAS,
    confident_quantile: float = CONFIDENT_QUANTILE,
) -> Calibration:
    """The calibration of one index: global_vectors [n, D]; region_vectors [R, D] with image
    i's regions at rows region_start[i]:region_start[i + 1] (region_start [n + 1]); encode as
    TextEncoder. Cost: one matrix product of all vectors with the bank's ~200 text and lexeme vectors."""
    if len(global_vectors) == 0:
        raise DataError("cannot calibrate an empty index")
    encoded = list(encode(list(bank)))
    if len(encoded) != len(bank):
        raise DataError("the text encoder returned a different number of encodings than texts")
    texts = np.stack([np.asarray(g, dtype=np.float32) for g, _ in encoded])
    lexemes = [np.asarray(lex, dtype=np.float32).reshape(-1, texts.shape[1]) for _, lex in encoded]
    table = best_fused(global_vectors, region_vectors, region_start, texts, lexemes, alphas)
    return Calibration(
        null_max=tuple(tuple(float(v) for v in row) for row in table),
        alphas=tuple(float(a) for a in alphas),
        n_images=len(global_vectors),
        confident_quantile=confident_quantile,
    )


def best_fused(
    global_vectors: np.ndarray,
    region_vectors: np.ndarray,
    region_start: np.ndarray,
    texts: np.ndarray,
    lexemes: Sequence[np.ndarray],
    alphas: Sequence[float],
) -> np.ndarray:
    """[queries, alphas]: each query's highest fused score over all images."""
    parts = score_parts(global_vectors, region_vectors, region_start, texts, lexemes)
    out = np.empty((len(texts), len(alphas)), dtype=np.float64)
    for a, alpha in enumerate(alphas):
        out[:, a] = parts.fused(alpha).max(axis=0)
    return out


@dataclass(frozen=True)
class ScoreParts:
    """Every image's score parts for a batch of queries."""

    global_scores: np.ndarray  # [n, Q] each query's global vector against each image's
    lexeme_scores: np.ndarray  # [n, L] each lexeme's best region in each image (-1 without regions)
    owners: list[slice]  # the lexemes (columns of lexeme_scores) of each query

    def fused(self, alpha: float) -> np.ndarray:
        """[n, Q]: each image's score for each query at alpha, as a query fuses it (fuse.fuse);
        a query without lexemes scores its global score."""
        return np.stack(
            [fuse(self.global_scores[:, q], self.lexeme_scores[:, own], alpha) for q, own in enumerate(self.owners)],
            axis=1,
        ).reshape(len(self.global_scores), len(self.owners))


def score_parts(
    global_vectors: np.ndarray,
    region_vectors: np.ndarray,
    region_start: np.ndarray,
    texts: np.ndarray,
    lexemes: Sequence[np.ndarray],
) -> ScoreParts:
    """The score parts of queries with global vectors `texts` [Q, D] and lexemes [L_q, D] each,
    on every image: global_vectors [n, D]; region_vectors [R, D] with image i's regions at rows
    region_start[i]:region_start[i + 1]."""
    global_scores = np.asarray(global_vectors, dtype=np.float32) @ np.asarray(texts, dtype=np.float32).T
    dim = np.asarray(texts).shape[1]
    own = [np.asarray(lex, np.float32).reshape(-1, dim) for lex in lexemes]
    flat = np.concatenate([np.zeros((0, dim), np.float32), *own])
    ends = np.cumsum([len(lex) for lex in own], dtype=np.int64)
    owners = [slice(int(end - len(lex)), int(end)) for end, lex in zip(ends, own, strict=True)]
    return ScoreParts(global_scores, best_region_scores(region_vectors, region_start, flat), owners)


def stored_calibration(manifest: dict[str, Any]) -> Calibration | None:
    """The index's calibration, or None when it has none of the current version."""
    stored = manifest.get("calibration")
    if not stored or stored.get("version") != CALIBRATION_VERSION:
        return None
    return Calibration.from_dict(stored)


# Bumped when the text forward or the query encoding changes, so bank encodings cached by an
# older harmosearch are made again (2: texts run without their padding, which in int8 moves the
# vectors slightly: a batch's activations are quantised together).
BANK_CACHE_VERSION = 2


def cached_bank_encoder(encoder: Any) -> TextEncoder:
    """`encode` for `calibrate`: the encoder's query encodings, kept on disk under paths.cache per
    model weights, inference path and text settings, so the bank (the same for every index) is
    encoded once per model and machine, not on every update: its ~100 texts cost about as much
    as 35 photos with ViT-B/16 (benchmarks/encode.py, calibration texts)."""
    import hashlib
    import importlib.util
    import json

    from harmosearch.model.runtimes import vectors_made_by
    from harmosearch.store.manifest import write_atomic

    def encode(texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        settings = {k: getattr(encoder.config, k) for k in ("lexeme_mode", "lexeme_pool", "lexeme_prompt", "parser")}
        # parser auto takes spaCy when it is installed, which splits lexemes otherwise
        spacy = all(importlib.util.find_spec(name) is not None for name in ("spacy", "en_core_web_sm"))
        made_by = [BANK_CACHE_VERSION, vectors_made_by(encoder), settings, spacy, texts]
        key = hashlib.sha256(json.dumps(made_by, sort_keys=True).encode()).hexdigest()[:20]
        cache_dir = getattr(encoder, "cache_dir", None)
        cached = None if cache_dir is None else cache_dir / "calibration" / f"bank-{key}.npz"
        if cached is not None and cached.is_file():
            with np.load(cached) as data:
                ends = np.cumsum(data["counts"])
                return list(zip(data["texts"], np.split(data["lexemes"], ends[:-1]), strict=True))
        encoded = [(e.global_vector.numpy(), e.lexeme_vectors.numpy()) for e in encoder.encode_queries(texts)]
        if cached is not None and encoded:
            cached.parent.mkdir(parents=True, exist_ok=True)
            arrays = {
                "texts": np.stack([g for g, _ in encoded]),
                "lexemes": np.concatenate([lex.reshape(-1, len(encoded[0][0])) for _, lex in encoded]),
                "counts": np.array([len(lex) for _, lex in encoded]),
            }
            write_atomic(cached, lambda path: _save_npz(path, arrays))
        return encoded

    return encode


def _save_npz(path: Any, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add .npz to a temporary name
        np.savez(f, **arrays)
