import functools
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmosearch.model.lexemes import (
    NEGATORS,
    RELATION_PHRASES,
    RELATIONS,
    UNDECIDABLE,
    default_tokenizer,
    is_content_word,
    parse,
)

CASES = [
    ("red umbrella near bench", ["red umbrella", "bench"]),
    ("a dog and a cat", ["dog", "cat"]),
    ("man in a blue shirt holding a red kite", ["man", "blue shirt", "red kite"]),
    ("", []),
    ("!!! ?? ...", []),
    ("a", []),
    ("the of and near", []),
    ("red circle", ["red circle"]),
    ("a small blue star to the left of an orange ring", ["small blue star", "orange ring"]),
    ("a red circle on a striped background", ["red circle", "striped background"]),
    ("a yellow square above a green cross", ["yellow square", "green cross"]),
    ("a white triangle below a black ring", ["white triangle", "black ring"]),
    ("a purple star next to a red square", ["purple star", "red square"]),
    ("four shapes: a red circle, a blue ring and a black star", ["shapes", "red circle", "blue ring", "black star"]),
    ("Red Umbrella NEAR Bench", ["red umbrella", "bench"]),
    ("  red   umbrella\tnear\nbench  ", ["red umbrella", "bench"]),
    ("a woman riding a bicycle on the street", ["woman", "bicycle", "street"]),
    ("two dogs playing in the snow", ["dogs", "snow"]),
    ("a girl wearing a golden ring", ["girl", "golden ring"]),
    ("a cat sitting under a wooden table", ["cat", "wooden table"]),
    ("people standing in front of a tall building", ["people", "tall building"]),
    ("a bowl of fresh fruit", ["bowl", "fresh fruit"]),
    ("the dog's red ball", ["dog", "red ball"]),
    ("car, bus, truck", ["car", "bus", "truck"]),
    ("a red-and-white lighthouse", ["red", "white lighthouse"]),
    ("3 red apples", ["red apples"]),
    ("un parapluie rouge près du banc", ["un parapluie rouge près du banc"]),
    ("красный зонт рядом со скамейкой", ["красный зонт рядом со скамейкой"]),
    ("赤い傘", ["赤い傘"]),
    ("🐶 dog with a 🎈 balloon", ["dog", "balloon"]),
    ("a very large elephant", ["large elephant"]),
    ("it is a sunny morning", ["sunny morning"]),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_parser_table(text, expected):
    assert parse(text).lexeme_texts == expected


def test_spans_follow_the_real_token_sequence():
    tok = default_tokenizer()
    text = "a small blue star to the left of an orange ring on a striped background"
    parsed = parse(text, tok)
    ids = [tok.sot_token_id, *tok.encode(text), tok.eot_token_id]
    for lexeme in parsed.lexemes:
        lo, hi = lexeme.tokens
        assert tok.decode(ids[lo:hi]).strip() == lexeme.text


def test_long_text_is_truncated_to_the_context():
    text = " ".join(["red circle near blue square"] * 100)  # 500 words
    parsed = parse(text, context_length=77)
    assert parsed.truncated
    assert parsed.lexemes and all(lex.tokens[1] <= 76 for lex in parsed.lexemes)
    assert not parse("red circle").truncated


def documented_relations():
    """The README's relation table: {canonical relation: phrases listed under "written as"}.
    A row such as "above, below | above, over, ... / below, under, ..." pairs the relations with
    the phrase lists in order; "..." says the list goes on."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| relation | written as |", 1)[1].split("\n\n", 1)[0]
    documented: dict[str, set[str]] = {}
    for row in re.findall(r"^\| ([a-z ,]+) \|\s*([^|]*?)\s*\|", table, flags=re.MULTILINE):
        names, written = [part.strip() for part in row]
        relations = [name.strip() for name in names.split(",")]
        lists = written.split("/") if written else []
        for relation, phrases in itertools.zip_longest(relations, lists, fillvalue=""):
            documented[relation] = {p.strip() for p in phrases.split(",") if p.strip() and p.strip() != "..."}
    return documented


def triples(text, parser="rules"):
    parsed = parse(text, parser=parser)
    names = parsed.lexeme_texts
    return [(names[r.subject], r.relation, names[r.object], r.negated) for r in parsed.relations]


@pytest.mark.parametrize(("phrase", "relation"), sorted(RELATION_PHRASES.items()))
def test_every_relation_phrase_gives_its_canonical_relation(phrase, relation):
    parsed = parse(f"a red cup {phrase} a wooden table")
    assert parsed.lexeme_texts == ["red cup", "wooden table"]
    (found,) = parsed.relations
    assert (found.subject, found.relation, found.object, found.negated) == (0, relation, 1, False)
    assert found.phrase == phrase and " ".join(parsed.words[found.words[0] : found.words[1]]) == phrase
    assert found.decidable == (relation not in ("in front of", "behind"))


def test_the_phrase_table_is_the_documented_vocabulary():
    documented = documented_relations()
    assert set(documented) == set(RELATIONS) == set(RELATION_PHRASES.values())
    assert {"in front of", "behind"} == UNDECIDABLE
    for relation, phrases in documented.items():
        assert phrases <= {p for p, r in RELATION_PHRASES.items() if r == relation}, relation
    # Relation words never join a lexeme, so they are always seen in a connector.
    assert not [w for phrase in RELATION_PHRASES for w in phrase.split() if is_content_word(w)]
    assert not [w for w in NEGATORS if is_content_word(w)]


RELATION_CASES = [
    # chains link each lexeme to the next
    (
        "a cup on a table next to a window",
        [("cup", "on", "table", False), ("table", "near", "window", False)],
    ),
    (
        "a red circle above a blue square below a green star",
        [("red circle", "above", "blue square", False), ("blue square", "below", "green star", False)],
    ),
    # negation
    ("a cup not near a plate", [("cup", "near", "plate", True)]),
    ("a cup that is not next to a plate", [("cup", "near", "plate", True)]),
    ("a cup that isn't next to a plate", [("cup", "near", "plate", True)]),
    ("a star not to the left of a ring", [("star", "left of", "ring", True)]),
    ("a cup never on a table", [("cup", "on", "table", True)]),
    ("a cup not on a table next to a window", [("cup", "on", "table", True), ("table", "near", "window", False)]),
    # a longer phrase wins over the short one inside it
    ("people standing in front of a tall building", [("people", "in front of", "tall building", False)]),
    ("a star on the left of a ring", [("star", "left of", "ring", False)]),
    ("a cup on top of a box", [("cup", "above", "box", False)]),
    ("a pond surrounded by tall trees", [("pond", "inside", "tall trees", False)]),
    ("a cat far away from a dog", [("cat", "far from", "dog", False)]),
    # two phrases in one connector: the longest, then the first
    ("a star to the left of and above a ring", [("star", "left of", "ring", False)]),
    ("a star above and below a ring", [("star", "above", "ring", False)]),
    # verbs and adverbs around the phrase do not matter
    ("a cat sitting under a wooden table", [("cat", "below", "wooden table", False)]),
    ("a dog sleeping right next to a sofa", [("dog", "near", "sofa", False)]),
    ("a dog behind a fence", [("dog", "behind", "fence", False)]),
    # words with no box meaning give no relation
    ("a man holding a red kite", []),
    ("a dog with a ball", []),
    ("a bowl of fresh fruit", []),
    ("a dog and a cat", []),
    ("car, bus, truck", []),
    # conjunctions keep lexemes separate; only the pair around the phrase is linked
    ("a red circle and a blue square to the left of a star", [("blue square", "left of", "star", False)]),
    ("a red circle to the left of a star and a blue square", [("red circle", "left of", "star", False)]),
    # a phrase with a lexeme on one side only links nothing
    ("above a table", []),
    ("a cup on", []),
    ("next to", []),
    ("red umbrella near bench", [("red umbrella", "near", "bench", False)]),
]


@pytest.mark.parametrize(("text", "expected"), RELATION_CASES)
def test_relations_table(text, expected):
    assert triples(text) == expected


def test_undecidable_relations_are_parsed_but_marked():
    parsed = parse("a dog behind a fence next to a car in front of a house")
    assert [(r.relation, r.decidable) for r in parsed.relations] == [
        ("behind", False),
        ("near", True),
        ("in front of", False),
    ]


def test_relations_between_truncated_lexemes_are_dropped():
    text = " ".join(["red circle near blue square"] * 100)
    parsed = parse(text, context_length=77)
    assert parsed.relations
    assert all(r.object < len(parsed.lexemes) for r in parsed.relations)
    assert len(parsed.relations) == len(parsed.lexemes) - 1  # every neighbour pair: "near" or none


def check_relations(parsed):
    for r in parsed.relations:
        assert 0 <= r.subject < len(parsed.lexemes) and r.object == r.subject + 1
        lo, hi = r.words
        assert parsed.lexemes[r.subject].words[1] <= lo < hi <= parsed.lexemes[r.object].words[0]
        assert r.phrase == " ".join(parsed.words[lo:hi]) and RELATION_PHRASES[r.phrase] == r.relation
        connector_before = parsed.words[parsed.lexemes[r.subject].words[1] : lo]
        assert r.negated == any(w in NEGATORS for w in connector_before)


WORDS = ["red", "cup", "table", "a", "the", "not", "and", ",", "holding", "'t", "of", "blue", "star"]
WORDS += sorted({w for phrase in RELATION_PHRASES for w in phrase.split()})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=25))
def test_fuzz_relations_link_neighbouring_lexemes_through_their_phrase(words):
    parsed = parse(" ".join(words))
    check_relations(parsed)
    # Every pair of neighbours whose connector holds a phrase is linked, and only those.
    linked = {r.subject for r in parsed.relations}
    for i, (a, b) in enumerate(itertools.pairwise(parsed.lexemes)):
        connector = " " + " ".join(parsed.words[a.words[1] : b.words[0]]) + " "
        assert (i in linked) == any(f" {phrase} " in connector for phrase in RELATION_PHRASES)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_never_raises_and_spans_index_the_right_tokens(text):
    tok = default_tokenizer()
    parsed = parse(text, tok, context_length=77)
    check_relations(parsed)
    ids = [tok.sot_token_id, *tok.encode(text)]
    # Word spans tile the token sequence without gaps.
    position = 1
    for lo, hi in parsed.word_tokens:
        assert lo == position and hi > lo
        position = hi
    assert position == len(ids)
    for lexeme in parsed.lexemes:
        lo, hi = lexeme.tokens
        assert 1 <= lo < hi <= 76
        w0, w1 = lexeme.words
        assert lexeme.text == " ".join(parsed.words[w0:w1])
        # The span holds exactly the tokens of the lexeme's words.
        if not parsed.truncated:
            assert tok.decode(ids[lo:hi]).strip() == lexeme.text


class _Token:
    def __init__(self, text, idx, pos):
        self.text, self.idx, self.pos_ = text, idx, pos


class _FakeSpacy:
    """Stands in for a spaCy pipeline (no model can be downloaded here): noun chunks are the
    given phrases, tagged word by word, found in the text."""

    def __init__(self, chunks):
        self.chunks = chunks

    def __call__(self, text):
        doc, cursor = type("Doc", (), {})(), 0
        doc.noun_chunks = []
        for words, tags in self.chunks:
            chunk = []
            for word, tag in zip(words.split(), tags.split(), strict=True):
                cursor = text.index(word, cursor)
                chunk.append(_Token(word, cursor, tag))
                cursor += len(word)
            doc.noun_chunks.append(chunk)
        return doc


def test_spacy_noun_chunks_map_onto_tokenizer_spans(monkeypatch):
    from harmosearch.model import lexemes

    fake = _FakeSpacy([("the big red umbrella", "DET ADJ ADJ NOUN"), ("a wooden bench", "DET ADJ NOUN")])
    monkeypatch.setattr(lexemes, "_spacy_pipeline", lambda: fake)
    # spacy_available asks once a process: a fresh cache for this test, the real one back after
    monkeypatch.setattr(lexemes, "spacy_available", functools.cache(lexemes.spacy_available.__wrapped__))
    text = "the big red umbrella near a wooden bench"
    spacy_parse = lexemes.parse(text, parser="spacy")
    auto_parse = lexemes.parse(text, parser="auto")  # spaCy is "installed": auto uses it
    rules_parse = lexemes.parse(text, parser="rules")
    assert [lx.text for lx in spacy_parse.lexemes] == ["big red umbrella", "wooden bench"]
    assert spacy_parse.lexemes == auto_parse.lexemes
    # The determiners are dropped, so the spans are exactly the rule parser's for the same words.
    assert [lx.tokens for lx in spacy_parse.lexemes] == [lx.tokens for lx in rules_parse.lexemes]


def test_spacy_chunk_of_only_function_words_gives_no_lexeme(monkeypatch):
    from harmosearch.model import lexemes

    monkeypatch.setattr(lexemes, "_spacy_pipeline", lambda: _FakeSpacy([("it", "PRON"), ("a dog", "DET NOUN")]))
    parsed = lexemes.parse("it chased a dog", parser="spacy")
    assert [lx.text for lx in parsed.lexemes] == ["dog"]


def test_spacy_relations_come_from_the_words_between_chunks(monkeypatch):
    from harmosearch.model import lexemes

    chunks = [
        ("the big red umbrella", "DET ADJ ADJ NOUN"),
        ("the left", "DET NOUN"),  # spaCy's chunk inside "to the left of" is no lexeme
        ("a wooden bench", "DET ADJ NOUN"),
        ("a tall tree", "DET ADJ NOUN"),
    ]
    monkeypatch.setattr(lexemes, "_spacy_pipeline", lambda: _FakeSpacy(chunks))
    text = "the big red umbrella to the left of a wooden bench not near a tall tree"
    assert (
        triples(text, parser="spacy")
        == triples(text, parser="rules")
        == [
            ("big red umbrella", "left of", "wooden bench", False),
            ("wooden bench", "near", "tall tree", True),
        ]
    )


def test_spacy_chunks_next_to_each_other_are_not_related(monkeypatch):
    from harmosearch.model import lexemes

    chunks = [("the tennis", "DET NOUN"), ("ball", "NOUN"), ("a net", "DET NOUN")]
    monkeypatch.setattr(lexemes, "_spacy_pipeline", lambda: _FakeSpacy(chunks))
    assert triples("the tennis ball near a net", parser="spacy") == [("ball", "near", "net", False)]


# Counts and negations: text -> [(lexeme, count as Count.__str__ or None, negated)].
QUANTITY_CASES = [
    ("two red circles", [("red circles", "2", False)]),
    ("2 red circles", [("red circles", "2", False)]),
    ("12 eggs", [("eggs", "12", False)]),  # the tokenizer splits digits one by one
    ("one red circle", [("red circle", "1", False)]),
    ("ten cups", [("cups", "10", False)]),
    ("a single red circle", [("red circle", "1", False)]),
    ("one single cup", [("cup", "1", False)]),
    ("a pair of shoes", [("shoes", "2", False)]),
    ("a couple of dogs", [("dogs", "2", False)]),
    ("several cats", [("cats", "3+", False)]),
    ("many birds", [("birds", "4+", False)]),
    ("both red circles", [("red circles", "2", False)]),
    ("at least two cups", [("cups", "2+", False)]),
    ("more than three stars", [("stars", "4+", False)]),
    ("fewer than three stars", [("stars", "1-2", False)]),
    ("less than four stars", [("stars", "1-3", False)]),
    ("at most two cups", [("cups", "1-2", False)]),
    ("up to three cups", [("cups", "1-3", False)]),
    ("exactly one red circle", [("red circle", "1", False)]),
    ("only one red circle", [("red circle", "1", False)]),
    ("no more than two cups", [("cups", "1-2", False)]),  # "no" of a comparator is no negation
    ("no fewer than two cups", [("cups", "2+", False)]),
    ("two very large elephants", [("large elephants", "2", False)]),
    # chains and relations keep working
    ("two cups on a table", [("cups", "2", False), ("table", None, False)]),
    ("a red circle above three blue squares", [("red circle", None, False), ("blue squares", "3", False)]),
    ("at least two cups on a pair of tables", [("cups", "2+", False), ("tables", "2", False)]),
    # negation
    ("a red circle without a blue square", [("red circle", None, False), ("blue square", None, True)]),
    ("a red circle with no blue square", [("red circle", None, False), ("blue square", None, True)]),
    ("a red circle but no blue square", [("red circle", None, False), ("blue square", None, True)]),
    ("a red circle and not a blue square", [("red circle", None, False), ("blue square", None, True)]),
    ("a red circle without any blue squares", [("red circle", None, False), ("blue squares", None, True)]),
    ("a beach without people", [("beach", None, False), ("people", None, True)]),
    ("no people on a beach", [("people", None, True), ("beach", None, False)]),
    ("a people-free beach", [("people", None, True), ("beach", None, False)]),
    ("a dog and no people", [("dog", None, False), ("people", None, True)]),
    ("a room that isn't a kitchen", [("room", None, False), ("kitchen", None, True)]),
    ("zero people", [("people", None, True)]),
    ("not a single red circle", [("red circle", None, True)]),  # a negation wins over its count
    ("fewer than one cup", [("cup", None, True)]),
    # not counts
    ("one of the cups", [("cups", None, False)]),
    ("the red one", [("red", None, False)]),
    ("both a dog and a cat", [("dog", None, False), ("cat", None, False)]),
    ("a single bed", [("bed", "1", False)]),
    ("single bed", [("single bed", None, False)]),
    ("red circles", [("red circles", None, False)]),
    ("a beach with people", [("beach", None, False), ("people", None, False)]),
    ("free parking", [("free parking", None, False)]),
    ("a cup not near a plate", [("cup", None, False), ("plate", None, False)]),  # the relation is negated
]


@pytest.mark.parametrize(("text", "expected"), QUANTITY_CASES)
def test_counts_and_negations_table(text, expected):
    parsed = parse(text)
    found = [(lex.text, None if lex.count is None else str(lex.count), lex.negated) for lex in parsed.lexemes]
    assert found == expected
    assert parsed.counts == tuple(lex.count for lex in parsed.lexemes)
    assert parsed.negated == tuple(e[2] for e in expected)


@pytest.mark.parametrize(
    ("text", "relations"),
    [
        ("two cups on a table", [("cups", "on", "table", False)]),
        ("no people on a beach", [("people", "on", "beach", False)]),  # parsed; the query drops it
        ("a cup not near a plate", [("cup", "near", "plate", True)]),
        ("a cup near no plate", [("cup", "near", "plate", False)]),
        ("a cup not on two tables", [("cup", "on", "tables", True)]),
    ],
)
def test_relations_with_counts_and_negations(text, relations):
    assert triples(text) == relations


@pytest.mark.parametrize(
    ("text", "positive"),
    [
        ("a red circle without a blue square", "a red circle"),
        ("a red circle with no blue square", "a red circle"),
        ("a red circle but no blue square", "a red circle"),
        ("a beach, no people", "a beach"),
        ("a people-free beach", "a beach"),
        ("no people on a beach", "on a beach"),
        ("two red circles", "two red circles"),
        ("Red Circle", "red circle"),
    ],
)
def test_positive_text_leaves_out_what_is_negated(text, positive):
    assert parse(text).positive_text() == positive


def test_count_and_negation_words_never_join_a_lexeme():
    for text in (
        "exactly two cups",
        "at least two cups",
        "more than two cups",
        "fewer than two cups",
        "a pair of cups",
    ):
        assert parse(text).lexeme_texts == ["cups"], text
    assert parse("a couple of single beds").lexeme_texts == ["single beds"]


@pytest.mark.parametrize(
    ("word", "one"),
    [
        ("circles", "circle"),
        ("boxes", "box"),
        ("benches", "bench"),
        ("glasses", "glass"),
        ("berries", "berry"),
        ("people", "person"),
        ("children", "child"),
        ("glass", "glass"),
        ("bus", "bus"),
        ("circle", "circle"),
    ],
)
def test_singular(word, one):
    from harmosearch.model.quantities import singular

    assert singular(word) == one


def test_instance_text():
    from harmosearch.model.quantities import instance_text

    assert instance_text("small red circles") == "a small red circle"
    assert instance_text("orange stars") == "an orange star"


PLAIN_WORDS = ["red", "cup", "table", "a", "the", "and", ",", "holding", "of", "blue", "star", "-", "free", "single"]
PLAIN_WORDS += ["pair", "least", "more", "fewer", "than", "at", "couple", "only", "exactly", "very", "many", "both"]
PLAIN_WORDS += sorted({w for phrase in RELATION_PHRASES for w in phrase.split()})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PLAIN_WORDS), max_size=20))
def test_fuzz_a_text_without_count_or_negation_parses_as_before(words):
    """A text with no count or negation phrase: its lexemes are the plain chunks, uncounted and
    not negated, and its relations as they were."""
    from harmosearch.model import lexemes
    from harmosearch.model.quantities import free_suffixes, quantity_phrases

    parsed = parse(" ".join(words))
    adjacent = [True] * len(parsed.words)
    if quantity_phrases(parsed.words, is_content_word, adjacent) or free_suffixes(parsed.words, is_content_word):
        return
    before = lexemes._rule_chunks(list(parsed.words))
    assert [lex.words for lex in parsed.lexemes] == before
    assert not any(lex.negated or lex.count for lex in parsed.lexemes)
    assert parsed.relations == lexemes._relations(list(parsed.words), before)
    assert parsed.positive_text() == parsed.text
