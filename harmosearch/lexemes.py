"""Lexemes: the noun phrases of a query or caption, with the token span each one covers.

A lexeme is a run of content words ("small blue star", "red umbrella"); relations, verbs and
function words ("near", "to the left of", "holding", "a") split lexemes and are dropped. Words
come from the open_clip tokenizer's own cleaning and word pattern, so every lexeme knows which
positions of the tokenized sequence it covers (position 0 is the start-of-text token).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol

from harmosearch.errors import ConfigError, DataError

DETERMINERS = frozenset(
    "a an the this that these those some any each every either neither no another other my your his "
    "her its our their whose which what".split()
)
CONJUNCTIONS = frozenset("and or but nor yet so plus versus vs while whereas as than then also".split())
PREPOSITIONS = frozenset(
    "near on in at of to from by with without within into onto upon over under above below beneath "
    "underneath behind beside besides between among amid around across along against toward towards "
    "through throughout past beyond inside outside off up down out about after before during for like "
    "via per top bottom left right front back next close far atop nearby alongside opposite".split()
)
PRONOUNS = frozenset(
    "i me you he him she her it we us they them myself yourself himself herself itself ourselves "
    "themselves there here who whom one ones someone something anyone anything".split()
)
AUXILIARIES = frozenset(
    "is are was were be been being am has have had having do does did doing can could will would "
    "shall should may might must get gets got".split()
)
VERBS = frozenset(
    "sits sit sat stands stand stood holds hold held wears wear wore rides ride rode eats eat ate "
    "plays play played looks look looked lies lie lay walks walk walked runs run ran jumps jump "
    "jumped carries carry carried shows show showed contains contain contained covered filled made "
    "seen shown placed parked drawn painted surrounded".split()
)
ADVERBS = frozenset("very really quite just only not too also almost nearly slightly together each other".split())
NUMBERS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve several many few lots lot "
    "couple dozen both all".split()
)
# Nouns that end in -ing and so must not be mistaken for verbs.
ING_NOUNS = frozenset(
    "ring rings building buildings painting paintings king kings string strings wing wings ceiling "
    "ceilings clothing swing swings spring thing things sling wedding pudding stocking stockings "
    "earring earrings sibling siblings awning awnings railing railings landing lightning morning "
    "evening ping sing bling icing frosting stuffing dressing duckling seedling bedding fencing "
    "lighting parking".split()
)
STOP_WORDS = DETERMINERS | CONJUNCTIONS | PREPOSITIONS | PRONOUNS | AUXILIARIES | VERBS | ADVERBS | NUMBERS


class WordTokenizer(Protocol):
    """What the parser needs of a tokenizer: open_clip's SimpleTokenizer has all of it."""

    pat: Any

    def clean_fn(self, text: str) -> str: ...

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Lexeme:
    text: str
    words: tuple[int, int]  # [start, end) into ParsedText.words
    tokens: tuple[int, int]  # [start, end) positions in the tokenized sequence; 0 is <start_of_text>


@dataclass(frozen=True)
class ParsedText:
    text: str  # as the tokenizer cleans it
    words: tuple[str, ...]
    word_tokens: tuple[tuple[int, int], ...]  # token span of every word
    lexemes: tuple[Lexeme, ...]
    truncated: bool  # the text had more tokens than the context holds

    @property
    def lexeme_texts(self) -> list[str]:
        return [lex.text for lex in self.lexemes]


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> WordTokenizer:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def is_content_word(word: str) -> bool:
    if not any(ch.isalpha() for ch in word):
        return False  # punctuation, digits, emoji
    if word in STOP_WORDS or word.startswith("'"):
        return False
    return not (word.endswith("ing") and len(word) > 5 and word not in ING_NOUNS)


def _words(
    text: str, tokenizer: WordTokenizer, context_length: int
) -> tuple[str, list[str], list[tuple[int, int]], bool]:
    cleaned = tokenizer.clean_fn(text)
    words = tokenizer.pat.findall(cleaned)
    spans: list[tuple[int, int]] = []
    position = 1  # after <start_of_text>
    for word in words:
        count = _token_count(tokenizer, word)
        spans.append((position, position + count))
        position += count
    last_usable = context_length - 1  # the final position holds <end_of_text> when truncated
    return cleaned, words, spans, position > last_usable


def _token_count(tokenizer: WordTokenizer, word: str) -> int:
    """BPE tokens of one already-cleaned word (encode() would clean it again, out of context)."""
    bpe = getattr(tokenizer, "bpe", None)
    byte_encoder = getattr(tokenizer, "byte_encoder", None)
    if bpe is None or byte_encoder is None:
        return len(tokenizer.encode(word))
    return len(bpe("".join(byte_encoder[b] for b in word.encode("utf-8"))).split(" "))


def _rule_chunks(words: list[str]) -> list[tuple[int, int]]:
    chunks: list[tuple[int, int]] = []
    start: int | None = None
    for i, word in enumerate([*words, ""]):
        if word and is_content_word(word):
            if start is None:
                start = i
        elif start is not None:
            chunks.append((start, i))
            start = None
    return chunks


def _spacy_chunks(cleaned: str, words: list[str]) -> list[tuple[int, int]]:
    nlp = _spacy_pipeline()
    starts, ends, cursor = [], [], 0
    for word in words:  # character offsets of every tokenizer word in the cleaned text
        cursor = cleaned.index(word, cursor)
        starts.append(cursor)
        cursor += len(word)
        ends.append(cursor)
    chunks = []
    for chunk in nlp(cleaned).noun_chunks:
        content = [t for t in chunk if t.pos_ not in ("DET", "PRON", "NUM", "CCONJ", "ADP")]
        if not content:
            continue
        lo, hi = content[0].idx, content[-1].idx + len(content[-1].text)
        inside = [i for i, (s, e) in enumerate(zip(starts, ends, strict=True)) if s >= lo and e <= hi]
        if inside:
            chunks.append((inside[0], inside[-1] + 1))
    return chunks


@functools.lru_cache(maxsize=1)
def _spacy_pipeline() -> Any:
    try:
        import spacy

        return spacy.load("en_core_web_sm", disable=["ner", "lemmatizer"])
    except (ImportError, OSError):
        raise ConfigError(
            "encoder.parser = spacy needs spaCy and its en_core_web_sm model installed; "
            "use parser = rules (no downloads) instead"
        ) from None


def spacy_available() -> bool:
    try:
        _spacy_pipeline()
    except ConfigError:
        return False
    return True


def parse(
    text: str,
    tokenizer: WordTokenizer | None = None,
    context_length: int = 77,
    parser: str = "rules",
) -> ParsedText:
    """Split `text` into lexemes. parser: rules | spacy | auto (spacy when it is installed)."""
    tokenizer = tokenizer or default_tokenizer()
    cleaned, words, spans, truncated = _words(text, tokenizer, context_length)
    use_spacy = parser == "spacy" or (parser == "auto" and spacy_available())
    chunks = _spacy_chunks(cleaned, words) if use_spacy else _rule_chunks(words)
    lexemes = []
    last_usable = context_length - 1
    for lo, hi in chunks:
        # A lexeme cut off by truncation keeps only the words the model will see.
        while hi > lo and spans[hi - 1][1] > last_usable:
            hi -= 1
        if hi > lo:
            lexemes.append(Lexeme(" ".join(words[lo:hi]), (lo, hi), (spans[lo][0], spans[hi - 1][1])))
    return ParsedText(cleaned, tuple(words), tuple(spans), tuple(lexemes), truncated)


def span_of(parsed: ParsedText, words: tuple[str, ...]) -> tuple[int, int]:
    """Token span of `words` inside a parsed text (their last occurrence), e.g. of a class name
    inside its prompt "a photo of a {}"."""
    n = len(words)
    for i in range(len(parsed.words) - n, -1, -1):
        if tuple(parsed.words[i : i + n]) == tuple(words):
            return (parsed.word_tokens[i][0], parsed.word_tokens[i + n - 1][1])
    raise DataError(f"{' '.join(words)!r} not found in {parsed.text!r}")
