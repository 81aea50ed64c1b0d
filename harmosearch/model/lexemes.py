"""Lexemes: the noun phrases of a query or caption, with the token span each one covers, and the
spatial relations that link them.

A lexeme is a run of content words ("small blue star", "red umbrella"); relations, verbs and
function words ("near", "to the left of", "holding", "a") split lexemes. Words come from the
open_clip tokenizer's own cleaning and word pattern, so every lexeme knows which positions of
the tokenized sequence it covers (position 0 is the start-of-text token).

Relations come from the *connector* between two consecutive lexemes: the run of non-lexeme
words between them ("to the left of an", "that is not near a"). The longest phrase of
RELATION_PHRASES inside the connector links the lexeme before it (subject) to the lexeme after
it (object), so a chain "a cup on a table next to a window" gives (cup, on, table) and
(table, near, window). When a connector holds two phrases ("to the left of and above") the
longest wins, and of equally long ones the first. A negator ("not", "never", "n't") anywhere
before the phrase in its connector negates it. Connectors without a phrase ("holding", "and",
"with", "of", a comma, nothing at all) give no relation. The rules and the spaCy parser share
this step: only the lexemes differ.

Counts and negations (`model.quantities`): a lexeme may be counted ("two cups", "at least three
stars", "a pair of shoes": `Lexeme.count`) or negated ("no people", "a dog without a collar",
"a sugar-free cake": `Lexeme.negated`); the words that say so never join a lexeme, and a negator
in the connector goes to the lexeme when nothing but articles (or its count phrase) stands
between them, to the relation when the relation phrase does. A text without such phrases parses
as it always did.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from typing import Any, Protocol

from harmosearch.errors import ConfigError, DataError
from harmosearch.model.quantities import (
    INTENSIFIERS,
    Count,
    QuantityPhrase,
    free_suffixes,
    negator_before,
    quantity_phrases,
)

DETERMINERS = frozenset(
    "a an the this that these those some any each every either neither no another other my your his "
    "her its our their whose which what".split()
)
CONJUNCTIONS = frozenset("and or but nor yet so plus versus vs while whereas as than then also".split())
PREPOSITIONS = frozenset(
    "near on in at of to from by with without within into onto upon over under above below beneath "
    "underneath behind beside besides between among amid around across along against toward towards "
    "through throughout past beyond inside outside off up down out about after before during for like "
    "via per top bottom left right front back next close far away atop nearby alongside opposite".split()
)
PRONOUNS = frozenset(
    "i me you he him she her it we us they them myself yourself himself herself itself ourselves "
    "themselves there here who whom one ones someone something anyone anything".split()
)
AUXILIARIES = frozenset(
    "is are was were be been being am has have had having do does did doing can could will would "
    "shall should may might must get gets got "
    # what the tokenizer leaves of a contraction before its "'t" ("isn't" -> "isn", "'t")
    "isn aren wasn weren don doesn didn hasn haven hadn won wouldn couldn shouldn".split()
)
VERBS = frozenset(
    "sits sit sat stands stand stood holds hold held wears wear wore rides ride rode eats eat ate "
    "plays play played looks look looked lies lie lay walks walk walked runs run ran jumps jump "
    "jumped carries carry carried shows show showed contains contain contained covered filled made "
    "seen shown placed parked drawn painted surrounded".split()
)
ADVERBS = frozenset("very really quite just only not never too also almost nearly slightly together each other".split())
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

# Spatial phrases -> canonical relation, read "subject <relation> object". Every word of every
# phrase is a stop word, so a phrase always lies in a connector and is never part of a lexeme.
# "on" is "above, resting on or set against" ("a cup on a table", "a picture on a wall");
# "in" and "into" mean inside ("a dog in a car"), which is wrong for clothing ("a man in a
# blue shirt": the shirt lies inside the man's box); "surrounded by" is inside with its
# arguments in reading order ("a pond surrounded by trees": the pond lies inside the trees).
RELATION_PHRASES: dict[str, str] = {
    "left of": "left of",
    "to the left of": "left of",
    "on the left of": "left of",
    "at the left of": "left of",
    "right of": "right of",
    "to the right of": "right of",
    "on the right of": "right of",
    "at the right of": "right of",
    "above": "above",
    "over": "above",
    "on top of": "above",
    "atop": "above",
    "below": "below",
    "under": "below",
    "underneath": "below",
    "beneath": "below",
    "on": "on",
    "onto": "on",
    "upon": "on",
    "near": "near",
    "near to": "near",
    "next to": "near",
    "beside": "near",
    "close to": "near",
    "by": "near",
    "alongside": "near",
    "nearby": "near",
    "far from": "far from",
    "away from": "far from",
    "inside": "inside",
    "inside of": "inside",
    "in": "inside",
    "into": "inside",
    "within": "inside",
    "surrounded by": "inside",
    "around": "around",
    "surrounding": "around",
    "encircling": "around",
    "in front of": "in front of",
    "behind": "behind",
    "in back of": "behind",
}
RELATIONS: tuple[str, ...] = tuple(dict.fromkeys(RELATION_PHRASES.values()))
# Depth order cannot be read from 2D boxes: these are parsed and reported, never scored.
UNDECIDABLE = frozenset({"in front of", "behind"})
NEGATORS = frozenset({"not", "never", "'t"})
# Words that join a negation to the text before it ("with no", "but not", "that isn't"): they go
# with it when the positive text leaves it out.
GLUE = CONJUNCTIONS | AUXILIARIES | frozenset({"with", "that", "which", "there", ","})
_PHRASE_WORDS = {tuple(phrase.split()): relation for phrase, relation in RELATION_PHRASES.items()}
_LONGEST_PHRASE = max(len(words) for words in _PHRASE_WORDS)


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
    count: Count | None = None  # how many the text asks for ("two", "at least three"); None: no number
    negated: bool = False  # the text asks for its absence ("no people", "without a hat", "sugar-free")
    quantity: tuple[int, int] | None = None  # [start, end) words of its count or negation phrase


@dataclass(frozen=True)
class Relation:
    """Lexeme `subject` stands in `relation` to lexeme `object`: (0, "left of", 1) for "a star to
    the left of a ring", negated for "a star not to the left of a ring"."""

    subject: int  # index into ParsedText.lexemes
    relation: str  # canonical name, a value of RELATION_PHRASES
    object: int
    phrase: str  # the words as written, e.g. "to the left of"
    negated: bool
    words: tuple[int, int]  # [start, end) of the phrase into ParsedText.words

    @property
    def decidable(self) -> bool:
        """False for relations 2D boxes cannot show (in front of, behind): never scored."""
        return self.relation not in UNDECIDABLE


@dataclass(frozen=True)
class ParsedText:
    text: str  # as the tokenizer cleans it
    words: tuple[str, ...]
    word_tokens: tuple[tuple[int, int], ...]  # token span of every word
    lexemes: tuple[Lexeme, ...]
    truncated: bool  # the text had more tokens than the context holds
    relations: tuple[Relation, ...] = ()

    @property
    def lexeme_texts(self) -> list[str]:
        return [lex.text for lex in self.lexemes]

    @property
    def counts(self) -> tuple[Count | None, ...]:
        return tuple(lex.count for lex in self.lexemes)

    @property
    def negated(self) -> tuple[bool, ...]:
        return tuple(lex.negated for lex in self.lexemes)

    def positive_text(self) -> str:
        """The text without its negated lexemes and the words that negate them ("a red circle
        without a blue square" -> "a red circle"): what a global vector should embed, since
        CLIP embeds "without a blue square" as a blue square. The text itself when nothing is
        negated."""
        dropped: set[int] = set()
        for j, lex in enumerate(self.lexemes):
            if lex.negated:
                lo, hi = lex.words
                q_lo, q_hi = lex.quantity or (lo, hi)
                start, floor = min(lo, q_lo), self.lexemes[j - 1].words[1] if j else 0
                while start > floor and self.words[start - 1] in GLUE:  # "with", "but", "that is"
                    start -= 1
                dropped.update(range(start, max(hi, q_hi)))
        if not dropped:
            return self.text
        return " ".join(w for i, w in enumerate(self.words) if i not in dropped)


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


def _spacy_chunks(cleaned: str, words: list[str], starts: list[int]) -> list[tuple[int, int]]:
    nlp = _spacy_pipeline()
    ends = [start + len(word) for start, word in zip(starts, words, strict=True)]
    chunks = []
    for chunk in nlp(cleaned).noun_chunks:
        content = [t for t in chunk if t.pos_ not in ("DET", "PRON", "NUM", "CCONJ", "ADP")]
        # "the left" in "to the left of" is a noun chunk to spaCy, but a relation word here.
        if all(t.text in STOP_WORDS for t in content):
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


@functools.cache
def spacy_available() -> bool:
    """Whether spaCy and its model load (asked once a process: a failed import is not cached by
    Python, and looking for spaCy again cost every query half a millisecond)."""
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
    starts = _offsets(cleaned, words)
    adjacent = [starts[i] + len(words[i]) == starts[i + 1] for i in range(len(words) - 1)]
    counted = quantity_phrases(words, is_content_word, adjacent)
    free = free_suffixes(words, is_content_word)
    consumed = [False] * len(words)
    for i in [j for p in counted for j in range(p.start, p.end)] + [j for f in free for j in (f, f + 1)]:
        consumed[i] = True
    use_spacy = parser == "spacy" or (parser == "auto" and spacy_available())
    chunks = _spacy_chunks(cleaned, words, starts) if use_spacy else _rule_chunks(words)
    lexemes = []
    last_usable = context_length - 1
    for lo, hi in _split_at(chunks, consumed):
        # A lexeme cut off by truncation keeps only the words the model will see.
        while hi > lo and spans[hi - 1][1] > last_usable:
            hi -= 1
        if hi > lo:
            lexemes.append(Lexeme(" ".join(words[lo:hi]), (lo, hi), (spans[lo][0], spans[hi - 1][1])))
    lexemes = _quantified(words, lexemes, counted, free, consumed)
    relations = _relations(words, [lex.words for lex in lexemes])
    return ParsedText(cleaned, tuple(words), tuple(spans), tuple(lexemes), truncated, relations)


def _offsets(cleaned: str, words: list[str]) -> list[int]:
    """Where each tokenizer word starts in the cleaned text."""
    starts, cursor = [], 0
    for word in words:
        cursor = cleaned.index(word, cursor)
        starts.append(cursor)
        cursor += len(word)
    return starts


def _split_at(chunks: list[tuple[int, int]], consumed: list[bool]) -> list[tuple[int, int]]:
    """The chunks with the words of count and negation phrases taken out ("single red circle"
    -> "red circle"; a chunk split in two where such a word stands inside it)."""
    out = []
    for lo, hi in chunks:
        start = None
        for i in range(lo, hi + 1):
            if i < hi and not consumed[i]:
                start = i if start is None else start
            elif start is not None:
                out.append((start, i))
                start = None
    return out


def _quantified(
    words: list[str], lexemes: list[Lexeme], counted: list[QuantityPhrase], free: list[int], consumed: list[bool]
) -> list[Lexeme]:
    """Each lexeme with the count its phrase asks for, or negated (model.quantities): a negation
    wins over a count ("not a single red circle" asks for none)."""
    by_end = {p.end: p for p in counted}
    out = []
    for j, lex in enumerate(lexemes):
        lo, hi = lex.words
        floor = lexemes[j - 1].words[1] if j else 0
        before = lo
        while before > floor and words[before - 1] in INTENSIFIERS:
            before -= 1
        phrase = by_end.get(before)
        count, quantity = None, None
        if phrase is not None and phrase.start >= floor:
            count, quantity = phrase.count, (phrase.start, phrase.end)
            following = words[hi : lexemes[j + 1].words[0]] if j + 1 < len(lexemes) else []
            if phrase.both and "and" in following:  # "both a dog and a cat": a conjunction
                count, quantity = None, None
        negator = negator_before(words, lo, floor, consumed)
        if negator is not None:
            out.append(replace(lex, negated=True, quantity=(negator, lo)))
        elif hi in free:
            out.append(replace(lex, negated=True, quantity=(hi, hi + 2)))
        elif quantity is not None and count is None:  # zero, or a range with nothing in it
            out.append(replace(lex, negated=True, quantity=quantity))
        else:
            out.append(replace(lex, count=count, quantity=quantity))
    return out


def _relations(words: list[str], lexeme_words: list[tuple[int, int]]) -> tuple[Relation, ...]:
    relations = []
    for subject, ((_, lo), (hi, _)) in enumerate(itertools.pairwise(lexeme_words)):
        found = find_relation_phrase(words[lo:hi])
        if found is None:
            continue
        start, end, relation = found
        negated = any(word in NEGATORS for word in words[lo : lo + start])
        phrase = " ".join(words[lo + start : lo + end])
        relations.append(Relation(subject, relation, subject + 1, phrase, negated, (lo + start, lo + end)))
    return tuple(relations)


def find_relation_phrase(connector: list[str]) -> tuple[int, int, str] | None:
    """(start, end, canonical relation) of the longest RELATION_PHRASES phrase in a run of words,
    the first of equally long ones; None when there is none."""
    for length in range(min(_LONGEST_PHRASE, len(connector)), 0, -1):
        for start in range(len(connector) - length + 1):
            relation = _PHRASE_WORDS.get(tuple(connector[start : start + length]))
            if relation is not None:
                return start, start + length, relation
    return None


def span_of(parsed: ParsedText, words: tuple[str, ...]) -> tuple[int, int]:
    """Token span of `words` inside a parsed text (their last occurrence), e.g. of a class name
    inside its prompt "a photo of a {}"."""
    n = len(words)
    for i in range(len(parsed.words) - n, -1, -1):
        if tuple(parsed.words[i : i + n]) == tuple(words):
            return (parsed.word_tokens[i][0], parsed.word_tokens[i + n - 1][1])
    raise DataError(f"{' '.join(words)!r} not found in {parsed.text!r}")
