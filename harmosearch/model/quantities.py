"""How many of a thing a query asks for, and whether it asks for its absence: the words before
a lexeme that count it ("two", "at least three", "a pair of") or negate it ("no", "without a",
"not any"), and "X-free" after it.

The parser (`lexemes.parse`) asks `quantity_phrases` for every count phrase first: their words
never join a lexeme ("a single red circle" is the lexeme "red circle", counted once), and a
phrase counts only when a content word follows it, so "one of the cups", "the red one" and "a
couple" (without "of") count nothing. Then `negator_before` walks back from each lexeme over
articles and its count phrase to a negator. A number asks for exactly that many; a comparator
before it widens the range. A thing asked for is wanted, so "at most two" is one or two; zero,
or a range with nothing in it ("fewer than one"), is a negation.

`singular` turns a counted or negated lexeme into the text of one instance of it ("red circles"
-> "red circle"), which is what a single box shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

NUMBER_WORDS: dict[str, int] = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}


@dataclass(frozen=True)
class Count:
    """How many instances a query asks for: low to high inclusive; high None for no bound."""

    low: int
    high: int | None

    def holds(self, n: int) -> bool:
        return self.low <= n and (self.high is None or n <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{self.low}+"
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


# Phrases that stand for a number by themselves: (words, low, high).
QUANTIFIERS: tuple[tuple[tuple[str, ...], int, int | None], ...] = (
    (("a", "single"), 1, 1),
    (("one", "single"), 1, 1),
    (("a", "pair", "of"), 2, 2),
    (("a", "couple", "of"), 2, 2),
    (("both",), 2, 2),
    (("several",), 3, None),
    (("many",), 4, None),
)
# Comparators before a number n -> the range they ask for (None: negation, nothing wanted).
COMPARATORS: dict[tuple[str, ...], Callable[[int], tuple[int, int | None]]] = {
    ("exactly",): lambda n: (n, n),
    ("only",): lambda n: (n, n),
    ("just",): lambda n: (n, n),
    ("at", "least"): lambda n: (n, None),
    ("no", "fewer", "than"): lambda n: (n, None),
    ("no", "less", "than"): lambda n: (n, None),
    ("not", "fewer", "than"): lambda n: (n, None),
    ("not", "less", "than"): lambda n: (n, None),
    ("more", "than"): lambda n: (n + 1, None),
    ("at", "most"): lambda n: (1, n),
    ("up", "to"): lambda n: (1, n),
    ("no", "more", "than"): lambda n: (1, n),
    ("not", "more", "than"): lambda n: (1, n),
    ("fewer", "than"): lambda n: (1, n - 1),
    ("less", "than"): lambda n: (1, n - 1),
}
_COMPARATORS_LONGEST_FIRST = sorted(COMPARATORS, key=len, reverse=True)
# Words between a count phrase and its lexeme that change nothing ("two very large elephants").
INTENSIFIERS = frozenset("very really quite rather fairly".split())
# Words that negate the lexeme after them when only articles (and its count phrase) stand between.
LEXEME_NEGATORS = frozenset({"no", "not", "never", "'t", "without"})
ARTICLES = frozenset({"a", "an", "the", "any", "some"})
FREE = ("-", "free")  # "sugar-free": the tokenizer's words


@dataclass(frozen=True)
class QuantityPhrase:
    """Words [start, end) that count the lexeme starting at `end` (after any intensifiers)."""

    start: int
    end: int
    count: Count | None  # None: the phrase negates (zero, or an empty range)
    both: bool = False  # "both": a conjunction, not a count, when the lexeme is followed by "and"


def quantity_phrases(
    words: Sequence[str], is_content: Callable[[str], bool], adjacent: Sequence[bool]
) -> list[QuantityPhrase]:
    """Every count phrase in `words`, left to right, each followed by a content word.
    adjacent[i]: word i + 1 touches word i in the text (so the tokenizer's "1", "2" read 12)."""
    found = []
    i = 0
    while i < len(words):
        phrase = _phrase_at(words, i, is_content, adjacent)
        if phrase is None:
            i += 1
            continue
        found.append(phrase)
        i = phrase.end
    return found


def _phrase_at(
    words: Sequence[str], i: int, is_content: Callable[[str], bool], adjacent: Sequence[bool]
) -> QuantityPhrase | None:
    for comparator in [*_COMPARATORS_LONGEST_FIRST, ()]:
        if tuple(words[i : i + len(comparator)]) != comparator:
            continue
        number = _number_at(words, i + len(comparator), adjacent)
        if number is None:
            continue
        n, low, high, end = number
        if comparator:
            if n is None:
                continue  # "at least several": no number to compare with
            low, high = COMPARATORS[comparator](n)
        if not _content_follows(words, end, is_content):
            continue
        empty = high is not None and (high < max(low, 1))
        count = None if empty else Count(low, high)
        return QuantityPhrase(i, end, count, both=words[i] == "both")
    return None


def _number_at(
    words: Sequence[str], i: int, adjacent: Sequence[bool]
) -> tuple[int | None, int, int | None, int] | None:
    """(n, low, high, end) of a number or quantifier at words[i]; n None for a quantifier of a range."""
    if i >= len(words):
        return None
    for quantifier, low, high in QUANTIFIERS:  # before the number words: "one single"
        if tuple(words[i : i + len(quantifier)]) == quantifier:
            return (low if low == high else None), low, high, i + len(quantifier)
    if words[i].isdecimal():
        end = i + 1
        while end < len(words) and words[end].isdecimal() and adjacent[end - 1]:
            end += 1
        n = int("".join(words[i:end])[:9])
        return n, n, n, end
    if words[i] in NUMBER_WORDS:
        n = NUMBER_WORDS[words[i]]
        return n, n, n, i + 1
    return None


def _content_follows(words: Sequence[str], i: int, is_content: Callable[[str], bool]) -> bool:
    while i < len(words) and words[i] in INTENSIFIERS:
        i += 1
    return i < len(words) and is_content(words[i])


def free_suffixes(words: Sequence[str], is_content: Callable[[str], bool]) -> list[int]:
    """Positions of "-" in "X-free" (a content word, "-", "free")."""
    return [i for i in range(1, len(words) - 1) if (words[i], words[i + 1]) == FREE and is_content(words[i - 1])]


def negator_before(words: Sequence[str], start: int, floor: int, consumed: Sequence[bool]) -> int | None:
    """The position of the negator of the lexeme starting at word `start`, looking back no
    further than `floor` over articles and count-phrase words; None when it is not negated. A
    word of a count phrase ("no more than") is never a negator."""
    i = start - 1
    while i >= floor and (words[i] in ARTICLES or words[i] in INTENSIFIERS or consumed[i]):
        i -= 1
    if i >= floor and words[i] in LEXEME_NEGATORS and not consumed[i]:
        return i
    return None


IRREGULAR_PLURALS = {
    "people": "person",
    "cookies": "cookie",
    "movies": "movie",
    "buses": "bus",
    "men": "man",
    "women": "woman",
    "children": "child",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "geese": "goose",
    "oxen": "ox",
    "knives": "knife",
    "leaves": "leaf",
    "wolves": "wolf",
    "shelves": "shelf",
    "loaves": "loaf",
    "halves": "half",
    "wives": "wife",
    "lives": "life",
}
_KEEP_S = ("ss", "us", "is", "ous")


def singular(word: str) -> str:
    """The singular of an English plural noun, by rule (irregular ones from a short list);
    other words as they are."""
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if len(word) <= 3 or not word.endswith("s") or word.endswith(_KEEP_S):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    return word[:-1]


def instance_text(lexeme: str) -> str:
    """The text of one instance of a lexeme: "small red circles" -> "a small red circle"."""
    words = lexeme.split()
    if not words:
        return lexeme
    words[-1] = singular(words[-1])
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
