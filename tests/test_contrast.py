"""Lexemes weighed against a vocabulary of rivals (contrast.py), against written-out softmaxes."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from harmosearch.errors import ConfigError
from harmosearch.search.contrast import (
    Contrast,
    Vocabulary,
    read_phrases,
    training_vocabulary,
    vocabulary_phrases,
    words_of,
)
from harmosearch.search.score import best_regions, match_regions, top_regions

from .test_scoring import random_table, slow_score

DIM = 8


def unit_rows(rng, n, dim=DIM):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def slow_term(region, lexeme, rivals, temperature, weight):
    """weight * log p for one region and one lexeme, p the softmax over [lexeme, rivals] written out."""
    mine = math.exp(temperature * float(region @ lexeme))
    others = sum(math.exp(temperature * float(region @ r)) for r in rivals)
    return weight * math.log(mine / (mine + others))


def test_rivals_leave_out_the_lexemes_own_thing_and_more_specific_or_general_ones():
    phrases = ("red circle", "blue circle", "small red circle", "red star", "the circle")
    vocabulary = Vocabulary(phrases, unit_rows(np.random.default_rng(0), len(phrases)), 10.0)
    contrast = vocabulary.for_lexemes(
        ["circle", "red circle", "a red star", "umbrella"], unit_rows(np.random.default_rng(1), 4), 0.5
    )
    assert contrast.keep.tolist() == [
        [False, False, False, True, False],  # every circle names the thing, or a more specific one
        [False, True, False, True, False],  # nor a more general one ("the circle")
        [True, True, True, False, True],  # articles do not count
        [True, True, True, True, True],
    ]
    assert words_of("The small-ish RED circle, again") == {"small-ish", "red", "circle", "again"}
    lexeme = unit_rows(np.random.default_rng(2), 1)
    assert vocabulary.for_lexemes(["circle"], lexeme, 0.0) is None
    assert Vocabulary((), np.zeros((0, DIM), np.float32), 10.0).for_lexemes(["circle"], lexeme, 0.5) is None


def test_the_term_is_the_written_out_log_probability(monkeypatch):
    from harmosearch.search import contrast as module

    monkeypatch.setattr(module, "CHUNK_ROWS", 3)  # rows weighed in chunks, the last one short
    rng = np.random.default_rng(1)
    regions, lexemes, vectors = unit_rows(rng, 7), unit_rows(rng, 4), unit_rows(rng, 5)
    keep = np.array([[1, 1, 0, 1, 1], [1, 1, 0, 1, 1], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)
    contrast = Contrast(vectors, keep, 25.0, 0.3)
    got = contrast.term(regions @ lexemes.T, regions)
    for r in range(len(regions)):
        for j in range(len(lexemes)):
            want = slow_term(regions[r], lexemes[j], vectors[keep[j]], 25.0, 0.3)
            assert got[r, j] == pytest.approx(want, abs=1e-5)
    assert (got[:, 3] == 0).all()  # no rival: p = 1
    assert (got[:, :3] <= 0).all() and (got[:, :3] < 0).any()
    # One column's contrast is that column's rows of the whole.
    np.testing.assert_allclose(contrast.columns([2, 0]).term(regions @ lexemes[[2, 0]].T, regions), got[:, [2, 0]])


def test_a_lexeme_far_ahead_of_its_rivals_loses_almost_nothing():
    """Large similarity gaps at a high temperature: the log-sum-exp must not overflow."""
    region = np.array([[1.0, 0.0]], np.float32)
    rivals = np.array([[0.0, 1.0], [-1.0, 0.0]], np.float32)
    contrast = Contrast(rivals, np.ones((2, 2), bool), 100.0, 1.0)
    term = contrast.term(np.array([[1.0, -1.0]], np.float32), region)
    assert term[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert term[0, 1] == pytest.approx(-100.0, rel=1e-6)  # p = e^-100 / (1 + 2 e^-100): finite


def slow_ranked(table, row, lexeme, rivals, temperature, weight, window_penalty):
    region = np.asarray(table.vectors[row], np.float32)
    return slow_score(table, row, lexeme, window_penalty) + slow_term(region, lexeme, rivals, temperature, weight)


def weighed_rows(table, lo, hi, lexeme, window_penalty, per_image):
    """The rows lo:hi an image's contrast weighs for a lexeme: its per_image best by the plain
    score with the window penalty, the first on ties."""
    return sorted(range(lo, hi), key=lambda r: (-slow_score(table, r, lexeme, window_penalty), r))[:per_image]


@pytest.mark.parametrize(("window_penalty", "per_image"), [(0.0, 100), (0.3, 100), (0.0, 1), (0.3, 2)])
def test_best_regions_rank_with_the_contrast_and_show_the_plain_box(window_penalty, per_image, monkeypatch):
    from harmosearch.search import score as scoring

    monkeypatch.setattr(scoring, "BLOCK_ROWS", 9)  # several blocks of images
    monkeypatch.setattr(scoring, "BLOCK_LEXEMES", 2)  # and of lexemes
    rng = np.random.default_rng(5)
    plain = random_table(rng)
    table = plain.penalising_windows(window_penalty)
    lexemes = rng.standard_normal((5, DIM)).astype(np.float32)
    vectors = unit_rows(rng, 6)
    keep = rng.random((5, 6)) < 0.7
    contrast = Contrast(vectors, keep, 20.0, 2.0, per_image)
    images = np.array([5, 3, 0, 17, 5, 29, 12, 1, 2, 4, 6, 7, 8, 9, 10])
    scores, rows = best_regions(table, images, lexemes, 0.1, contrast)
    every = best_regions(table, images, lexemes, 0.1, replace(contrast, per_image=100))[0]
    assert (per_image < 100) == (not np.allclose(scores, every, atol=1e-4))  # a region further down can win
    _, plain_rows = best_regions(table, images, lexemes, 0.1)
    np.testing.assert_array_equal(rows, plain_rows)  # the box shown does not move
    for c, image in enumerate(images):
        lo, hi = int(plain.start[image]), int(plain.start[image + 1])
        for j, lexeme in enumerate(lexemes):
            if hi == lo:
                assert scores[c, j] == -1
                continue
            want = max(
                slow_ranked(plain, r, lexeme, vectors[keep[j]], 20.0, 2.0, window_penalty)
                for r in weighed_rows(plain, lo, hi, lexeme, window_penalty, per_image)
            )
            assert scores[c, j] == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("per_image", [100, 2, 4])
def test_top_regions_order_by_the_contrasted_scores(per_image):
    """The k best by the contrasted scores among each image's max(k, per_image) best by the
    plain ones (the window penalty included)."""
    rng = np.random.default_rng(8)
    plain = random_table(rng)
    table = plain.penalising_windows(0.2)
    lexemes = rng.standard_normal((3, DIM)).astype(np.float32)
    vectors = unit_rows(rng, 4)
    keep = np.ones((3, 4), bool)
    contrast = Contrast(vectors, keep, 30.0, 1.0, per_image)
    images = np.array([0, 3, 8, 21])
    scores, rows = top_regions(table, images, lexemes, 3, None, contrast)
    for c, image in enumerate(images):
        lo, hi = int(table.start[image]), int(table.start[image + 1])
        for j, lexeme in enumerate(lexemes):
            weighed = weighed_rows(plain, lo, hi, lexeme, 0.2, max(3, per_image))
            ranked = sorted(
                ((slow_ranked(plain, r, lexeme, vectors, 30.0, 1.0, 0.2), r) for r in weighed),
                key=lambda t: -t[0],
            )[:3]
            assert rows[c, j, : len(ranked)].tolist() == [r for _, r in ranked]
            np.testing.assert_allclose(scores[c, j, : len(ranked)], [s for s, _ in ranked], atol=1e-4)


@pytest.mark.parametrize("relations", [[], [(0, "left of", 2, False)]])
def test_plain_scores_leave_the_contrast_out(relations):
    """What a result's confidence is measured on does not change with the contrast."""
    rng = np.random.default_rng(11)
    table = random_table(rng).penalising_windows(0.1)
    images = np.arange(table.n_images)
    lexemes = rng.standard_normal((3, DIM)).astype(np.float32)
    contrast = Contrast(unit_rows(rng, 5), np.ones((3, 5), bool), 20.0, 0.5)
    with_contrast = match_regions(table, images, lexemes, relations, 0.05, 0.5, 4, contrast)
    without = match_regions(table, images, lexemes, relations, 0.05, 0.5, 4)
    assert not np.allclose(with_contrast.scores, without.scores)
    for c in range(len(images)):
        for j, lexeme in enumerate(lexemes):
            row = with_contrast.rows[c, j]
            want = -1.0 if row < 0 else slow_score(table, row, lexeme)
            assert with_contrast.plain_scores[c, j] == pytest.approx(want, abs=1e-5)
    if not relations:  # lone lexemes: the same box and the same plain best, contrast or not
        np.testing.assert_array_equal(with_contrast.rows, without.rows)
        np.testing.assert_allclose(with_contrast.plain_scores, without.plain_scores, atol=1e-6)


def test_refined_boxes_rank_by_the_best_contrasted_box_inside_the_seed():
    import torch

    from harmosearch.search.box_search import best_boxes

    rng = np.random.default_rng(2)
    vectors = [torch.as_tensor(unit_rows(rng, 20)), torch.as_tensor(unit_rows(rng, 12))]
    corners = [rng.uniform(0, 0.6, (n, 2)) for n in (20, 12)]
    frames = [torch.as_tensor(np.concatenate([c, c + 0.3], 1).astype(np.float32)) for c in corners]
    lexemes = torch.as_tensor(unit_rows(rng, 3))
    seeds = torch.tensor([[0.0, 0.0, 0.5, 0.5], [float("nan")] * 4, [0.2, 0.2, 1.0, 1.0]])
    rivals = unit_rows(rng, 4)
    contrast = Contrast(rivals, np.ones((3, 4), bool), 20.0, 0.5)
    plain_boxes, _ = best_boxes(vectors, frames, lexemes, seeds, 0.05)
    boxes, scores = best_boxes(vectors, frames, lexemes, seeds, 0.05, contrast)
    torch.testing.assert_close(boxes, plain_boxes)  # chosen on the plain scores
    every = torch.cat(vectors).numpy()
    frame = torch.cat(frames).numpy()
    centre = (frame[:, :2] + frame[:, 2:]) / 2
    for j in range(3):
        seed = seeds[j].numpy()
        within = (
            np.zeros(len(frame), bool) if np.isnan(seed).any() else ((centre >= seed[:2]) & (centre <= seed[2:])).all(1)
        )
        rows = np.flatnonzero(within) if within.any() else np.arange(len(frame))
        lexeme = lexemes[j].numpy()
        want = max(float(every[r] @ lexeme) + slow_term(every[r], lexeme, rivals, 20.0, 0.5) for r in rows)
        assert float(scores[j]) == pytest.approx(want, abs=1e-4)


def test_vocabulary_settings_and_files(tmp_path):
    assert vocabulary_phrases("trained", ("red circle", "blue star")) == ["red circle", "blue star"]
    assert vocabulary_phrases("trained", ()) == []
    everyday = vocabulary_phrases("everyday", ("red circle",))
    assert vocabulary_phrases("auto", ()) == everyday  # the older name of the default
    assert vocabulary_phrases("none", ("red circle",)) == []
    file = tmp_path / "rivals.txt"
    file.write_text("# my rivals\n\nred circle\n  blue star  \nRed Circle\na blue star\nthe\n", encoding="utf-8")
    assert vocabulary_phrases(str(file), ()) == ["red circle", "blue star"]  # one per set of words
    (tmp_path / "huge.txt").write_bytes(b"x\n" * (1 << 20))
    with pytest.raises(ConfigError, match="over 1 MiB"):
        read_phrases(tmp_path / "huge.txt")
    with pytest.raises(ConfigError, match="cannot read"):
        read_phrases(tmp_path / "missing.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read"):
        read_phrases(tmp_path / "binary.txt")


def test_training_vocabulary_keeps_the_most_frequent_names_sorted():
    names = ["Red Circle", "blue star", "red circle", "", "green ring", "blue star", "red circle"]
    assert training_vocabulary(names) == ["blue star", "green ring", "red circle"]
    assert training_vocabulary(names, limit=2) == ["blue star", "red circle"]


def test_the_bundled_model_knows_the_names_its_training_scenes_annotate():
    """harmo-tiny's vocabulary is what `harmosearch train` writes for the scenes make_bundled
    trains on: every colour-shape name of the synthetic scenes (each annotation's phrase, which
    the training set links; the scenes are drawn, not rendered: their pictures add nothing here)."""
    from harmosearch.config import SynthConfig
    from harmosearch.model.loading import BUNDLED_DIR
    from harmosearch.synth.scenes import sample_scene

    config = SynthConfig(n=400, seed=1000)
    names = [obj.phrase for i in range(config.n) for obj in sample_scene(config.seed, i, config).objects]
    bundled = json.loads((BUNDLED_DIR / "harmo-tiny" / "harmosearch.json").read_text())
    assert bundled["vocabulary"] == training_vocabulary(names)
    assert len(bundled["vocabulary"]) == 48


def test_a_large_vocabulary_gives_each_lexeme_its_nearest_rivals(monkeypatch):
    from harmosearch.search import contrast as module

    monkeypatch.setattr(module, "MAX_RIVALS", 3)
    rng = np.random.default_rng(6)
    phrases = ("red circle", "red star", "blue star", "green ring", "white cross", "black square", "circle")
    vectors = unit_rows(rng, len(phrases))
    lexemes = unit_rows(rng, 2)
    got = Vocabulary(phrases, vectors, 10.0).for_lexemes(["red circle", "umbrella"], lexemes, 0.5).keep
    for j, text in enumerate(["red circle", "umbrella"]):
        allowed = [
            k for k, p in enumerate(phrases) if not ({*p.split()} <= {*text.split()} or {*text.split()} <= {*p.split()})
        ]
        nearest = sorted(allowed, key=lambda k: -float(lexemes[j] @ vectors[k]))[:3]
        assert np.flatnonzero(got[j]).tolist() == sorted(nearest)


@pytest.mark.parametrize("temperature", [25.0, 100.0, 400.0])
def test_each_lexemes_rivals_count_however_far_below_the_others(temperature):
    """Lexemes with disjoint rivals: one lexeme's rivals far below another's must not vanish
    (a shared shift could underflow them). Temperatures above 100 count as 100, as CLIP clamps."""
    regions = np.array([[1.0, 0.0, 0.0]], np.float32)
    vectors = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], np.float32)  # rival 0 near, rival 1 opposite
    keep = np.array([[True, False], [False, True]])
    sims = np.array([[1.0, -1.0]], np.float32)  # lexeme 1 ties with its only rival
    term = Contrast(vectors, keep, temperature, 1.0).term(sims, regions)
    assert term[0, 0] == pytest.approx(math.log(0.5), abs=1e-5)
    assert term[0, 1] == pytest.approx(math.log(0.5), abs=1e-5)


def test_a_checkpoint_vocabulary_that_is_not_a_list_of_phrases_is_refused(tmp_path):
    import shutil

    from harmosearch.config import load_config
    from harmosearch.errors import ModelLoadError
    from harmosearch.model.encoder import load_encoder
    from harmosearch.model.loading import BUNDLED_DIR

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_DIR / "harmo-tiny", model)
    meta = json.loads((model / "harmosearch.json").read_text())
    assert load_encoder(load_config(overrides={"encoder.model": str(model)})).vocabulary == tuple(meta["vocabulary"])
    meta["vocabulary"] = "red circle"
    (model / "harmosearch.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="vocabulary that is not a list of phrases"):
        load_encoder(load_config(overrides={"encoder.model": str(model)}))


def test_the_everyday_rivals_hold_none_of_the_synthetic_scenes_phrases():
    """The default rivals are everyday things, the same for every model, and none is a phrase
    the synthetic scenes are drawn from or names one of their shapes: a figure measured with
    them does not improve because the rivals are the test labels."""
    from harmosearch.config import SearchConfig
    from harmosearch.synth import COLOURS, SHAPES, SIZES

    assert SearchConfig().vocabulary == "everyday"
    everyday = vocabulary_phrases("everyday", ())
    assert 500 <= len(everyday) <= 1500 + 100
    assert len({words_of(p) for p in everyday}) == len(everyday)
    scene_phrases = {
        words_of(" ".join(parts))
        for c in COLOURS
        for shape in SHAPES
        for parts in [(c, shape), (shape,), (c,), *[(size, c, shape) for size in SIZES]]
    }
    assert not scene_phrases & {words_of(p) for p in everyday}
    assert not any(words_of(p) & set(SHAPES) for p in everyday)
    assert {"dog", "car", "umbrella", "red car", "wooden chair"} <= set(everyday)


def test_an_embedded_vocabulary_is_kept_between_processes(tmp_path):
    """With a cache folder the vectors are embedded once and read back (the same ones) later,
    by encoder identity and phrases; an unwritable cache is no error."""
    from harmosearch.search.contrast import load_vocabulary

    from .fakes import FakeEncoder

    class Counting(FakeEncoder):
        calls = 0

        def encode_queries(self, texts):
            Counting.calls += 1
            return super().encode_queries(texts)

    encoder = Counting()
    first = load_vocabulary(encoder, "everyday", tmp_path / "cache")
    calls = Counting.calls
    assert calls > 0 and len(list((tmp_path / "cache" / "vocabularies").glob("*.npy"))) == 1
    again = load_vocabulary(encoder, "everyday", tmp_path / "cache")
    assert Counting.calls == calls  # read, not embedded
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert again.phrases == first.phrases
    file = tmp_path / "few.txt"
    file.write_text("dog\ncat\n", encoding="utf-8")
    few = load_vocabulary(encoder, str(file), tmp_path / "cache")  # other phrases: another file
    assert few.phrases == ("dog", "cat") and Counting.calls > calls
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    assert load_vocabulary(encoder, "everyday", tmp_path / "blocked").phrases == first.phrases


def test_rivals_by_word_counts_are_the_set_comparisons_written_out():
    rng = np.random.default_rng(12)
    words = ["red", "blue", "small", "circle", "star", "ring", "the", "old"]
    phrases = tuple(dict.fromkeys(" ".join(rng.choice(words, rng.integers(1, 4))) for _ in range(60)))
    vocabulary = Vocabulary(phrases, unit_rows(rng, len(phrases)), 10.0)
    for lexeme in ["circle", "red circle", "a small red star", "umbrella", "red umbrella", "the", "old the ring"]:
        w = words_of(lexeme)
        want = [not (w <= words_of(p) or words_of(p) <= w) for p in phrases]
        assert vocabulary.rivals(w).tolist() == want, lexeme


def test_a_benchmark_keeps_its_rivals_in_the_encoders_cache_as_an_index_does(tmp_path):
    from dataclasses import replace

    from harmosearch.bench.vectors import bench_vocabulary
    from harmosearch.config import SearchConfig

    from .fakes import FakeEncoder

    encoder = FakeEncoder()
    encoder.cache_dir = tmp_path / "cache"
    rivals = bench_vocabulary(encoder, SearchConfig())
    assert rivals is not None and len(list((tmp_path / "cache" / "vocabularies").glob("*.npy"))) == 1
    assert bench_vocabulary(encoder, replace(SearchConfig(), contrast=0.0)) is None
