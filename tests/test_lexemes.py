import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmosearch.lexemes import default_tokenizer, parse

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


def test_table_has_at_least_30_cases():
    assert len(CASES) >= 30


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


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_never_raises_and_spans_index_the_right_tokens(text):
    tok = default_tokenizer()
    parsed = parse(text, tok, context_length=77)
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
    from harmosearch import lexemes

    fake = _FakeSpacy([("the big red umbrella", "DET ADJ ADJ NOUN"), ("a wooden bench", "DET ADJ NOUN")])
    monkeypatch.setattr(lexemes, "_spacy_pipeline", lambda: fake)
    text = "the big red umbrella near a wooden bench"
    spacy_parse = lexemes.parse(text, parser="spacy")
    auto_parse = lexemes.parse(text, parser="auto")  # spaCy is "installed": auto uses it
    rules_parse = lexemes.parse(text, parser="rules")
    assert [lx.text for lx in spacy_parse.lexemes] == ["big red umbrella", "wooden bench"]
    assert spacy_parse.lexemes == auto_parse.lexemes
    # The determiners are dropped, so the spans are exactly the rule parser's for the same words.
    assert [lx.tokens for lx in spacy_parse.lexemes] == [lx.tokens for lx in rules_parse.lexemes]


def test_spacy_chunk_of_only_function_words_gives_no_lexeme(monkeypatch):
    from harmosearch import lexemes

    monkeypatch.setattr(lexemes, "_spacy_pipeline", lambda: _FakeSpacy([("it", "PRON"), ("a dog", "DET NOUN")]))
    parsed = lexemes.parse("it chased a dog", parser="spacy")
    assert [lx.text for lx in parsed.lexemes] == ["dog"]
