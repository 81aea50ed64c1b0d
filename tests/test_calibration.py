"""Calibration: null maxima computed as queries are scored, and read back honestly."""

import json

import numpy as np
import pytest

from harmosearch.errors import DataError
from harmosearch.search import score as scoring
from harmosearch.search.calibration import (
    ALPHAS,
    CONFIDENT_QUANTILE,
    NULL_QUERIES,
    Calibration,
    assess,
    best_fused,
    calibrate,
)
from harmosearch.search.fuse import fuse
from harmosearch.search.score import best_region_scores


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def random_index(rng, n=30, dim=16):
    counts = rng.integers(0, 6, size=n)
    counts[3] = 0  # an image without regions
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return unit(rng.standard_normal((n, dim))), unit(rng.standard_normal((int(start[-1]), dim))), start


def test_best_region_scores_match_a_loop_over_images(monkeypatch):
    rng = np.random.default_rng(0)
    _, regions, start = random_index(rng)
    lexemes = unit(rng.standard_normal((4, 16)))
    monkeypatch.setattr(scoring, "BLOCK_ROWS", 7)  # many blocks, some cutting between images
    got = best_region_scores(regions, start, lexemes)
    for i in range(len(start) - 1):
        rows = regions[start[i] : start[i + 1]]
        expected = (rows @ lexemes.T).max(axis=0) if len(rows) else np.full(4, -1.0)
        assert np.allclose(got[i], expected, atol=1e-6)


def test_best_fused_scores_as_fusion_does():
    rng = np.random.default_rng(1)
    images, regions, start = random_index(rng)
    texts = unit(rng.standard_normal((3, 16)))
    lexemes = [unit(rng.standard_normal((2, 16))), np.zeros((0, 16), np.float32), unit(rng.standard_normal((1, 16)))]
    got = best_fused(images, regions, start, texts, lexemes, ALPHAS)
    for q in range(3):
        per_image = np.array(
            [
                [
                    (regions[start[i] : start[i + 1]] @ lex).max() if start[i + 1] > start[i] else -1.0
                    for lex in lexemes[q]
                ]
                for i in range(len(images))
            ]
        ).reshape(len(images), len(lexemes[q]))
        for a, alpha in enumerate(ALPHAS):
            expected = fuse(images @ texts[q], per_image, alpha).max()
            assert got[q, a] == pytest.approx(expected, abs=1e-5)


def test_interpolating_between_alphas_never_underestimates_the_null():
    rng = np.random.default_rng(2)
    images, regions, start = random_index(rng)
    vectors = {text: unit(rng.standard_normal(16)) for text in ("a", "b", "c")}

    def encode(texts):
        return [(vectors[t], vectors[t][None]) for t in texts]

    calibration = calibrate(images, regions, start, encode, bank=("a", "b", "c"))
    texts = np.stack([vectors[t] for t in "abc"])
    for alpha in (0.05, 0.35, 0.77):
        exact = best_fused(images, regions, start, texts, [t[None] for t in texts], [alpha])[:, 0]
        assert np.all(calibration.null_at(alpha) >= exact - 1e-6)
        assert np.allclose(calibration.null_at(alpha), exact, atol=0.05)


def test_reading_a_calibration():
    table = [[0.25, 0.75], [0.125, 0.375], [0.0, 0.25], [0.375, 0.375], [0.5, 0.75]]
    calibration = Calibration(null_max=tuple(map(tuple, table)), alphas=(0.0, 1.0), n_images=9, confident_quantile=0.5)
    assert np.allclose(calibration.null_at(0.25), [0.375, 0.1875, 0.0625, 0.375, 0.5625])
    assert calibration.null_at(0.5).tolist() == [0.5, 0.25, 0.125, 0.375, 0.625]
    assert calibration.min_score(0.5) == 0.375  # the median of five
    judged = assess(calibration, [0.4, 0.375, 0.7], 0.5)
    assert judged.confident.tolist() == [True, False, True]
    assert judged.p.tolist() == [2 / 5, 3 / 5, 0.0]
    again = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert again == calibration
    with pytest.raises(DataError, match="covers alpha"):
        calibration.null_at(1.5)
    with pytest.raises(DataError, match="malformed"):
        Calibration.from_dict({"null_max": []})


def test_a_present_query_is_confident_and_an_absent_one_is_not():
    """Hand-made world: images are made of four 'things' (basis directions); the bank names
    unrelated directions; a query for a thing the index holds beats them, one for a thing it
    lacks does not."""
    rng = np.random.default_rng(3)
    dim = 32
    basis = np.eye(dim, dtype=np.float32)
    images = unit(basis[rng.integers(0, 4, size=40)] + 0.3 * rng.standard_normal((40, dim)))
    regions = unit(np.repeat(images, 3, axis=0) + 0.2 * rng.standard_normal((120, dim)))
    start = np.arange(0, 121, 3)
    bank = [f"null {k}" for k in range(50)]
    null_vectors = {t: unit(rng.standard_normal(dim)) for t in bank}

    def encode(texts):
        return [(null_vectors[t], null_vectors[t][None]) for t in texts]

    calibration = calibrate(images, regions, start, encode, bank=bank)
    assert calibration.n_images == 40 and len(calibration.null_max) == 50
    present, absent = basis[1], basis[9]
    for query, expected in ((present, True), (absent, False)):
        best = best_fused(images, regions, start, query[None], [query[None]], [0.5])[0, 0]
        assert bool(assess(calibration, [best], 0.5).confident[0]) is expected


def test_calibrate_refuses_what_it_cannot_do():
    with pytest.raises(DataError, match="empty index"):
        calibrate(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(1, np.int64), lambda texts: [])
    with pytest.raises(DataError, match="number of encodings"):
        calibrate(unit(np.ones((2, 4))), np.zeros((0, 4)), np.zeros(3, np.int64), lambda texts: [])


def test_the_bank_is_distinct_and_the_default_quantile_sane():
    assert len(set(NULL_QUERIES)) == len(NULL_QUERIES) >= 100
    assert 0.5 < CONFIDENT_QUANTILE < 1


def test_the_null_bank_names_no_thing_a_library_could_hold():
    """No word of the bank names an everyday thing (the shipped rivals' words) or a shape of the
    synthetic scenes; colours are its only real content words, and a made-up word is none of
    the words it was shuffled from."""
    from harmosearch.search.calibration import COLOUR_WORDS, FUNCTION_WORDS, SHUFFLED_WORDS, null_bank
    from harmosearch.search.contrast import vocabulary_phrases, words_of
    from harmosearch.synth import SHAPES

    things = set().union(*(words_of(p) for p in vocabulary_phrases("everyday", ()))) | set(SHAPES)
    words = set().union(*(words_of(q) for q in NULL_QUERIES))
    assert words & things <= set(COLOUR_WORDS)
    assert not words & set(SHUFFLED_WORDS)
    kinds = [len(words_of(q)) == 3 and words_of(q) <= set(FUNCTION_WORDS) for q in NULL_QUERIES]
    assert sum(kinds) == len(NULL_QUERIES) // 3  # a third word salad
    assert null_bank() == NULL_QUERIES and null_bank(seed=1) != NULL_QUERIES  # drawn from a fixed seed


@pytest.mark.slow
def test_bundled_model_says_no_confident_match_for_a_colour_the_scenes_lack(tmp_path):
    """Scenes without purple, indexed with harmo-tiny and asked as a user asks (Index.search, at
    the alpha the query fuses at): every "purple <shape>" query finds no confident match, and
    most colour-shape pairs the scenes hold find one."""
    import json as json_

    from harmosearch.config import SynthConfig, load_config
    from harmosearch.indexing import build_index
    from harmosearch.model.encoder import load_encoder
    from harmosearch.search import Index
    from harmosearch.synth import SHAPES, generate

    generate(tmp_path / "scenes", SynthConfig(n=90, seed=4242))
    data = json_.loads((tmp_path / "scenes" / "annotations.json").read_text())
    purple = {a["image_id"] for a in data["annotations"] if a["colour"] == "purple"}
    for image in data["images"]:
        if image["id"] in purple:
            (tmp_path / "scenes" / "images" / image["file_name"]).unlink()
    config = load_config(overrides={"encoder.model": "harmo-tiny", "encoder.device": "cpu", "index.workers": 0})
    encoder = load_encoder(config)
    build_index(tmp_path / "scenes" / "images", tmp_path / "index", config, encoder=encoder)
    index = Index(tmp_path / "index", config, encoder=encoder)
    present = sorted({a["phrase"] for a in data["annotations"] if a["image_id"] not in purple})
    absent = [f"purple {shape}" for shape in SHAPES]
    assert not any(index.search(text, k=5).confident_match for text in absent)
    confident = [index.search(text, k=5).confident_match for text in present]
    share = float(np.mean(confident))
    print(f"confident: {share:.3f} of {len(present)} present colour-shape pairs")
    # Spec floor: the docstring's "most", more than half (issue #30's 90% is measured by
    # benchmarks/calibration.py on a larger library). Measured here: 35/42 = 0.833 (20/42 was
    # measured at alpha 0.5, which no one-lexeme query fuses at; several objects appear once,
    # and harmo-tiny often ranks another scene first for them). Regression guard: two pairs under.
    assert share > 0.5
    assert share >= 33 / 42


def test_the_bank_is_encoded_once_per_model_and_path(tmp_path, monkeypatch):
    """An update's calibration reads the bank's encodings from the cache: the same vectors as
    encoding them, kept apart per inference path."""
    from harmosearch.config import load_config
    from harmosearch.model.encoder import load_encoder
    from harmosearch.search.calibration import cached_bank_encoder

    from .conftest import TEST_MODEL

    def encoder(precision):
        overrides = {"encoder.model": TEST_MODEL, "encoder.precision": precision, "paths.cache": str(tmp_path)}
        return load_encoder(load_config(overrides=overrides))

    fp32, texts = encoder("fp32"), ["a red circle", "two blue squares", "nothing"]
    fresh = cached_bank_encoder(fp32)(texts)
    expected = fp32.encode_queries(texts)
    for (g, lexemes), e in zip(fresh, expected, strict=True):
        assert np.array_equal(g, e.global_vector.numpy()) and np.array_equal(lexemes, e.lexeme_vectors.numpy())
    monkeypatch.setattr(type(fp32), "encode_queries", lambda *_: pytest.fail("encoded again"))
    for (g, lexemes), (g2, lexemes2) in zip(fresh, cached_bank_encoder(fp32)(texts), strict=True):
        assert np.array_equal(g, g2) and np.array_equal(lexemes, lexemes2)
    monkeypatch.undo()
    cached_bank_encoder(encoder("bf16"))(texts)
    assert len(list((tmp_path / "calibration").glob("bank-*.npz"))) == 2
