"""A lexeme's region scores weighed against the other things the model could call the region.

A region's similarity to "red circle" says how much it looks like one, not whether it looks
more like something else: a box on a red star scores nearly as high for "red circle" as a box on
a red circle does (measured on the synthetic scenes: about 90% of the wrong results in a phrase
search's top 5 show an object of the asked colour and another shape). The model itself can tell
the two apart when asked to choose, so, for ranking, each region's score for a lexeme gains

    weight * log p,  p = softmax over [lexeme, vocabulary entries] of temperature * similarity

taken at the lexeme: the log-probability, at the model's own logit scale, that the region is the
lexeme's thing rather than one of the vocabulary's. The vocabulary (search.vocabulary) is by
default "everyday": about 1,500 everyday things shipped with the package (vocabularies/
everyday.txt; the kind of objects public detection datasets name, and colour and material
phrases), the same for every model, none of them a shape of the synthetic scenes, so that no
figure improves because the rivals are the test labels. "trained" is the phrases the model was
trained to tell apart (`vocabulary` in a checkpoint's harmosearch.json, written by
`harmosearch train` from its training annotations; none for other models); a path names a file
of phrases.
A rival is a phrase that names something else: an entry whose words include all of the
lexeme's words names the same thing or a more specific one ("red circle", "small red circle"
for "circle"), and one whose words all occur in the lexeme a more general one ("circle" or "red
circle" for "small red circle"); both are left out.

Like the window penalty, the term decides how images rank, not which box is shown nor how
confident a result is (both use the plain similarities).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import ConfigError

ARTICLES = frozenset({"a", "an", "the"})
MAX_ENTRIES = 4096  # a vocabulary file's most phrases
MAX_RIVALS = 64  # each lexeme weighed against at most this many (its nearest) phrases
# Each image's this many best regions for a lexeme (by their plain score, the window penalty
# included) are weighed against its rivals, and its ranking score is the best of theirs: the
# term is <= 0, so a region further down rarely overtakes them, and weighing 48 regions an image
# cost a query 1.7x its time with 1,000 rivals (benchmarks/contrast_cost.py).
WEIGHED_REGIONS = 4
MAX_FILE_BYTES = 1 << 20
MAX_TEMPERATURE = 100.0
CHUNK_ROWS = 16_384  # regions weighed at once
KEPT_VOCABULARIES = 8  # embedded vocabularies an index keeps (per setting of search.vocabulary)
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def words_of(text: str) -> frozenset[str]:
    """The lowercase words of a phrase, articles left out."""
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in ARTICLES)


@dataclass(frozen=True)
class Vocabulary:
    """Phrases embedded as query lexemes are, and the temperature the model compares them at."""

    phrases: tuple[str, ...]
    vectors: np.ndarray  # [K, D], L2-normalised
    temperature: float  # the model's logit scale
    # which of the vocabulary's words each phrase holds [K, W], the column of each word, and each
    # phrase's number of words [K]: a lexeme's rivals by array sums, not K set comparisons
    _holds: np.ndarray = field(init=False, repr=False, compare=False)
    _column: dict[str, int] = field(init=False, repr=False, compare=False)
    _sizes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words = tuple(words_of(p) for p in self.phrases)
        column = {w: i for i, w in enumerate(sorted(set().union(*words)))}
        holds = np.zeros((len(words), len(column)), dtype=np.int32)
        for k, phrase in enumerate(words):
            holds[k, [column[w] for w in phrase]] = 1
        object.__setattr__(self, "_holds", holds)
        object.__setattr__(self, "_column", column)
        object.__setattr__(self, "_sizes", holds.sum(1))

    def rivals(self, lexeme: frozenset[str]) -> np.ndarray:
        """[K] bool: the entries that name something else than a lexeme of these words: not
        every word of the lexeme in the entry (the same or a more specific thing), nor every
        word of the entry in the lexeme (a more general one)."""
        shared = self._holds[:, [self._column[w] for w in lexeme if w in self._column]].sum(1)
        return (shared != len(lexeme)) & (shared != self._sizes)

    def for_lexemes(self, texts: Sequence[str], vectors: np.ndarray, weight: float) -> Contrast | None:
        """The contrast of lexemes named `texts`, embedded as `vectors` [L, D] (None when there
        is nothing to weigh): each lexeme's rivals, at most MAX_RIVALS of them, the nearest to
        it in the text space (the ones a region of its thing could be taken for)."""
        if weight == 0 or not len(self.phrases) or not len(texts):
            return None
        keep = np.stack([self.rivals(words_of(t)) for t in texts])
        if len(self.phrases) > MAX_RIVALS:
            near = np.where(keep, np.asarray(vectors, dtype=np.float32) @ self.vectors.T, -np.inf)
            nearest = np.argsort(-near, axis=1, kind="stable")[:, :MAX_RIVALS]
            limited = np.zeros_like(keep)
            np.put_along_axis(limited, nearest, True, axis=1)
            keep &= limited
        return Contrast(self.vectors, keep, self.temperature, weight, WEIGHED_REGIONS)


@dataclass(frozen=True)
class Contrast:
    """The rivals of each of a query's lexemes (`keep` [L, K] over the vocabulary's vectors)."""

    vectors: np.ndarray  # [K, D]
    keep: np.ndarray  # [L, K] bool
    temperature: float
    weight: float
    per_image: int = WEIGHED_REGIONS  # regions of an image weighed, per lexeme (score.py)

    def columns(self, which: Any) -> Contrast:
        """The contrast of the lexemes `which` (an index, slice or list into its rows)."""
        return Contrast(self.vectors, self.keep[which], self.temperature, self.weight, self.per_image)

    def term(self, sims: np.ndarray, regions: np.ndarray) -> np.ndarray:
        """What ranking adds to plain scores sims [R, L] of region vectors [R, D]: weight *
        log p [R, L] (<= 0), in row chunks. One exponential per region and rival serves every
        lexeme: the sum over each lexeme's rivals is a product with its mask."""
        sims = np.asarray(sims, dtype=np.float32)
        out = np.zeros(sims.shape, dtype=np.float32)  # no rival: p = 1
        used = self.keep.any(0)
        if not used.any():
            return out
        vectors, masks = self.vectors[used], self.keep[:, used]
        # Cosines lie in [-1, 1], so logits shifted down by the temperature lie in [-2t, 0]: float32
        # holds their exponentials without underflow up to a temperature of 40 (harmo-tiny's is
        # 25), float64 up to MAX_TEMPERATURE (CLIP's; its training clamps the scale there too). A
        # fixed shift spares a pass for each row's largest logit.
        t = min(float(self.temperature), MAX_TEMPERATURE)
        dtype = np.float32 if t <= 40 else np.float64
        masks = masks.T.astype(dtype)
        for lo in range(0, len(sims), CHUNK_ROWS):
            part = slice(lo, lo + CHUNK_ROWS)
            shifted = (t * (np.asarray(regions[part], dtype=np.float32) @ vectors.T) - t).astype(dtype)  # [r, K']
            with np.errstate(divide="ignore"):  # a lexeme without rivals: log 0, so p = 1
                others = t + np.log(np.exp(shifted) @ masks)  # [r, L]
            mine = (t * sims[part]).astype(dtype)
            out[part] = self.weight * (mine - np.logaddexp(mine, others))
        return out


def read_phrases(path: Path) -> list[str]:
    """A vocabulary file: one phrase per line; blank lines and lines starting with # are skipped,
    and so is a phrase with the words of an earlier one ("a red star" after "Red star")."""
    try:
        if Path(path).stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(
                f"search.vocabulary: {path} is over {MAX_FILE_BYTES // 2**20} MiB; give a list of phrases"
            )
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"search.vocabulary: cannot read {path}: {exc}") from None
    seen: set[frozenset[str]] = set()
    phrases = []
    for line in text.splitlines():
        phrase, words = line.strip(), words_of(line)
        if phrase and not phrase.startswith("#") and words and words not in seen:
            seen.add(words)
            phrases.append(phrase)
    if len(phrases) > MAX_ENTRIES:
        raise ConfigError(f"search.vocabulary: {path} holds {len(phrases):,} phrases; the most is {MAX_ENTRIES:,}")
    return phrases


SHIPPED = ("everyday",)  # vocabularies in the package, by name (vocabularies/<name>.txt)
NAMED = ("everyday", "auto", "trained", "none")  # settings that are not files; "auto" is "everyday"


def shipped_path(name: str) -> Path:
    """Where a vocabulary shipped with the package lies."""
    return Path(str(resources.files("harmosearch.search") / "vocabularies" / f"{name}.txt"))


def vocabulary_phrases(setting: str, model_vocabulary: Sequence[str]) -> list[str]:
    """The phrases search.vocabulary names: "everyday" (and its older name "auto") the shipped
    list of everyday things, "trained" the model's own (none for a model without one), "none"
    none, anything else a file of phrases."""
    if setting in ("everyday", "auto"):
        return read_phrases(shipped_path("everyday"))
    if setting == "trained":
        return list(model_vocabulary)
    if setting == "none":
        return []
    return read_phrases(Path(setting).expanduser())


def embed_vocabulary(encoder: Any, phrases: Sequence[str]) -> Vocabulary:
    """Each phrase as a query's lexeme is embedded: the vector of its one lexeme (the mean of
    its lexemes when it parses into several, its global vector when into none)."""
    dim = encoder.identity.embed_dim
    rows = []
    for start in range(0, len(phrases), 256):
        for encoding in encoder.encode_queries(list(phrases[start : start + 256])):
            vectors = encoding.lexeme_vectors.numpy()
            row = vectors.mean(0) if len(vectors) else encoding.global_vector.numpy()
            rows.append(row / max(float(np.linalg.norm(row)), 1e-12))
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    return Vocabulary(tuple(phrases), vectors, encoder.temperature)


def load_vocabulary(encoder: Any, setting: str, cache: Path | None = None) -> Vocabulary | None:
    """search.vocabulary embedded by `encoder` (None when it names no phrases). With a `cache`
    folder the vectors are kept there, by the encoder's identity and the phrases, so that a new
    process (each `harmosearch query`) reads them instead of embedding ~1,500 phrases again."""
    phrases = vocabulary_phrases(setting, encoder.vocabulary)
    if not phrases:
        return None
    file = None if cache is None else _cache_file(cache, encoder, phrases)
    if file is not None:
        try:
            vectors = np.load(file, allow_pickle=False)
            if vectors.shape == (len(phrases), encoder.identity.embed_dim) and vectors.dtype == np.float32:
                return Vocabulary(tuple(phrases), vectors, encoder.temperature)
        except (OSError, ValueError):
            pass  # not there yet, or unreadable: embedded again and written anew
    vocabulary = embed_vocabulary(encoder, phrases)
    if file is not None:
        _write_quietly(file, vocabulary.vectors)
    return vocabulary


# Bumped when the text forward changes, so vocabularies embedded by an older harmosearch are
# embedded again (2: texts run without their padding, which in int8 moves the vectors slightly).
VOCABULARY_CACHE_VERSION = 2


def _cache_file(cache: Path, encoder: Any, phrases: Sequence[str]) -> Path:
    """Where the vectors of `phrases` embedded by `encoder` are kept under `cache`."""
    key = json.dumps([VOCABULARY_CACHE_VERSION, encoder.identity.to_dict(), list(phrases)], sort_keys=True)
    return Path(cache).expanduser() / "vocabularies" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"


def _write_quietly(file: Path, vectors: np.ndarray) -> None:
    """Writes the cache file whole (a temporary file renamed over it); a cache that cannot be
    written is no error, the next process embeds the phrases again."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npy")
        np.save(partial, vectors, allow_pickle=False)
        os.replace(partial, file)
    except OSError:
        pass


class Vocabularies:
    """The vocabularies one encoder has embedded, once per setting of search.vocabulary (a file:
    again when it changes), so that a query pays for its rivals, not for embedding them."""

    def __init__(self, encoder: Any, cache: Path | None = None) -> None:
        self.encoder = encoder
        self.cache = cache  # where embedded vocabularies are kept between processes (None: not kept)
        self._kept: dict[tuple[str, tuple[int, int] | None], Vocabulary | None] = {}

    def contrast(self, texts: Sequence[str], vectors: np.ndarray, setting: str, weight: float) -> Contrast | None:
        """The rivals of lexemes `texts` [L] with `vectors` [L, D] in the vocabulary `setting`
        names, at `weight` (None when the weight is 0, there are no lexemes or no phrases)."""
        if weight == 0 or not len(texts):
            return None
        key = (setting, _file_signature(setting))
        if key not in self._kept:
            if len(self._kept) >= KEPT_VOCABULARIES:
                self._kept.clear()
            self._kept[key] = load_vocabulary(self.encoder, setting, self.cache)
        vocabulary = self._kept[key]
        return None if vocabulary is None else vocabulary.for_lexemes(texts, vectors, weight)


def _file_signature(setting: str) -> tuple[int, int] | None:
    """(mtime, size) of a vocabulary file, None for a named setting or a file that is not there
    (reading it then says why)."""
    if setting in NAMED:
        return None
    try:
        stat = Path(setting).expanduser().stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def training_vocabulary(names: Sequence[str], limit: int = MAX_ENTRIES) -> list[str]:
    """The phrases a checkpoint records from its training annotations: the `limit` most frequent
    (ties alphabetically), in alphabetical order."""
    counts: dict[str, int] = {}
    for name in names:
        name = name.strip().lower()
        if name:
            counts[name] = counts.get(name, 0) + 1
    common = sorted(counts, key=lambda n: (-counts[n], n))[:limit]
    return sorted(common)
