"""Ranking logic on hand-made vectors: the right answers are known by construction."""

from dataclasses import replace

import numpy as np
import pytest

from harmosearch.config import Config, SearchConfig, load_config
from harmosearch.errors import IndexStoreError, QueryError
from harmosearch.search import Index
from harmosearch.search.fuse import fuse, negatives_term
from harmosearch.store import IndexData, write_generation

from .fakes import DIM, FakeEncoder, concept, unit

# Each image: objects (phrase, box). A region per object with that phrase's vector, plus the
# whole image with the normalised sum.
SCENES = [
    [("red circle", (10, 10, 50, 50))],
    [("blue star", (60, 60, 100, 100)), ("red circle", (0, 0, 20, 20))],
    [("blue star", (5, 5, 40, 40))],
    [("green ring", (30, 30, 90, 90)), ("yellow square", (100, 0, 140, 40))],
    [("yellow square", (0, 60, 40, 100))],
]


def make_data(scenes, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    images = {"path": [], "size": [], "mtime_ns": [], "sha256": [], "width": [], "height": []}
    regions = {k: [] for k in ("image_id", "x0", "y0", "x1", "y1", "nx0", "ny0", "nx1", "ny1", "scale")}
    gvecs, rvecs = [], []
    for i, objects in enumerate(scenes):
        for key, value in zip(images, (f"img{i:03d}.png", 1, 1, f"h{i}", 160, 120), strict=True):
            images[key].append(value)
        vectors = [unit(concept(p) + noise * rng.standard_normal(DIM)) for p, _ in objects]
        g = unit(np.sum(vectors, axis=0) + 0.5 * concept("background"))  # the whole image is more than its objects
        gvecs.append(g)
        for k, ((name, box), v) in enumerate([*zip(objects, vectors, strict=True), ((None, (0, 0, 160, 120)), g)]):
            regions["image_id"].append(i)
            for key, value in zip(("x0", "y0", "x1", "y1"), box, strict=True):
                regions[key].append(float(value))
            regions["nx0"].append(box[0] / 160)
            regions["ny0"].append(box[1] / 120)
            regions["nx1"].append(box[2] / 160)
            regions["ny1"].append(box[3] / 120)
            regions["scale"].append((0.5 if k % 2 else 0.0) if name else 1.0)  # windows, segments; the whole image
            rvecs.append(v)
    return IndexData(
        {k: np.asarray(v, dtype=object if k in ("path", "sha256") else np.int64) for k, v in images.items()},
        {k: np.asarray(v, dtype=np.int32 if k == "image_id" else np.float32) for k, v in regions.items()},
        np.stack(gvecs) if gvecs else np.zeros((0, DIM), np.float32),
        np.stack(rvecs) if rvecs else np.zeros((0, DIM), np.float32),
    )


def open_fake(tmp_path, scenes=SCENES, index_type="Flat", search=None, noise=0.0, data=None, extra=None):
    encoder = FakeEncoder()
    config = load_config(overrides={"index.index_type": index_type})
    write_generation(
        tmp_path / "idx",
        make_data(scenes, noise) if data is None else data,
        encoder.identity.to_dict(),
        config.to_dict(),
        index_type,
        tmp_path,
        None,
        extra=extra,
    )
    # exact boxes (the best region), and plain region scores unless a test asks for a window penalty
    run_config = Config(search=search or SearchConfig(box_margin=0.0, window_penalty=0.0))
    return Index(tmp_path / "idx", run_config, encoder=encoder)


def test_single_lexeme_finds_its_images_and_the_right_box(tmp_path):
    index = open_fake(tmp_path)
    response = index.search("a red circle", k=3)
    assert response.lexemes == ["red circle"]
    top2 = {r.path for r in response.results[:2]}
    assert top2 == {"img000.png", "img001.png"}
    boxes = {r.path: r.lexemes[0].box for r in response.results[:2]}
    assert boxes == {"img000.png": (10, 10, 50, 50), "img001.png": (0, 0, 20, 20)}


def test_two_lexemes_prefer_the_image_holding_both(tmp_path):
    index = open_fake(tmp_path)
    response = index.search("red circle near a blue star", k=5)
    assert response.results[0].path == "img001.png"
    matches = {m.text: m.box for m in response.results[0].lexemes}
    assert matches == {"red circle": (0, 0, 20, 20), "blue star": (60, 60, 100, 100)}


def test_negatives_push_images_down(tmp_path):
    index = open_fake(tmp_path)
    plain = [r.path for r in index.search("red circle", k=2).results]
    assert set(plain) == {"img000.png", "img001.png"}
    without_stars = [r.path for r in index.search("red circle", k=2, negatives=("blue star",)).results]
    assert without_stars[0] == "img000.png"
    scores = {r.path: r.score for r in index.search("red circle", k=5, negatives=("blue star",)).results}
    plain_scores = {r.path: r.score for r in index.search("red circle", k=5).results}
    assert scores["img001.png"] < plain_scores["img001.png"] - 0.2


def test_k_larger_than_the_collection_and_faiss_padding(tmp_path):
    index = open_fake(tmp_path, search=SearchConfig(region_candidates=1000, global_candidates=1000, window_penalty=0.0))
    response = index.search("green ring", k=50)
    assert len(response.results) == len(SCENES)  # FAISS returned -1 for the missing slots
    assert [r.rank for r in response.results] == list(range(1, len(SCENES) + 1))
    assert response.results[0].path == "img003.png"


def test_empty_index_returns_nothing(tmp_path):
    index = open_fake(tmp_path, scenes=[])
    assert index.search("red circle").results == []


def test_min_score_and_bad_options(tmp_path):
    index = open_fake(tmp_path)
    strict = index.search("red circle", k=10, min_score=0.9)
    assert "img000.png" in {r.path for r in strict.results}
    assert len(strict.results) < 5 and all(r.score >= 0.9 for r in strict.results)
    with pytest.raises(QueryError, match="k must be"):
        index.search("red circle", k=0)
    with pytest.raises(QueryError, match="alpha"):
        index.search("red circle", alpha=1.5)
    with pytest.raises(QueryError, match="empty query"):
        index.search("   ")


def test_global_only_ignores_regions(tmp_path):
    index = open_fake(tmp_path)
    response = index.search("red circle", global_only=True, k=5)
    assert response.lexemes == []
    assert all(r.score == pytest.approx(r.global_score) for r in response.results)


def test_other_encoder_is_refused(tmp_path):
    open_fake(tmp_path)
    other = FakeEncoder()
    object.__setattr__(other, "identity", other.identity.__class__("other", "w2", "x", DIM, 32, (4, 4)))
    with pytest.raises(IndexStoreError, match="built with model 'fake'"):
        Index(tmp_path / "idx", encoder=other)


def reference_scores(data, encoding, alpha, relation_weight=0.5, window_penalty=0.0, contrast=0.0, vocabulary=()):
    """Every image scored by the formula in harmosearch.search.fuse, with plain loops: lexemes in a
    relation try every combination of their regions (whole image excluded), the others take
    their best region; a window's score (0 < scale < 1) loses window_penalty; with a contrast,
    each region's score gains contrast * log p, p the softmax (at the fake's temperature, 100)
    over the lexeme and its rivals: the vocabulary's phrases whose words neither include all of
    the lexeme's words nor all occur in it."""
    import itertools
    import math

    from harmosearch.search.relations import relation_scores

    g = encoding.global_vector.numpy()
    texts = encoding.parsed.lexeme_texts
    rivals = [
        [concept(v) for v in vocabulary if not ({*t.split()} <= {*v.split()} or {*v.split()} <= {*t.split()})]
        for t in texts
    ]

    def region_score(j, m):
        window = 0 < data.regions["scale"][j] < 1
        region = data.region_vectors[j].astype(np.float32)
        score = float(region @ lexemes[m])
        if contrast and rivals[m]:
            mine = math.exp(100 * score)
            score += contrast * math.log(mine / (mine + sum(math.exp(100 * float(region @ r)) for r in rivals[m])))
        return score - (window_penalty if window else 0.0)

    lexemes = encoding.lexeme_vectors.numpy()
    relations = [(r.subject, r.relation, r.object, r.negated) for r in encoding.parsed.relations if r.decidable]
    related = sorted({r[0] for r in relations} | {r[2] for r in relations})
    boxes = np.stack([data.regions[c] for c in ("x0", "y0", "x1", "y1")], 1)
    scores = []
    for i in range(len(data.images["path"])):
        global_score = float(data.global_vectors[i] @ g)
        rows = [j for j in range(len(data.regions["image_id"])) if data.regions["image_id"][j] == i]
        if not len(lexemes):
            scores.append(global_score)
            continue
        total = sum(max(region_score(j, m) for j in rows) for m in range(len(lexemes)) if m not in related)
        objects = [j for j in rows if data.regions["scale"][j] < 1.0]
        best = -np.inf
        for combo in itertools.product(objects, repeat=len(related)):
            chosen = dict(zip(related, combo, strict=True))
            value = sum(region_score(chosen[m], m) for m in related)
            for s, name, o, negated in relations:
                value += relation_weight * (
                    float(relation_scores(name, boxes[chosen[s]], boxes[chosen[o]], negated)) - 0.5
                )
            best = max(best, value)
        total += best if related else 0.0
        scores.append(alpha * global_score + (1 - alpha) * total / len(lexemes))
    return np.array(scores)


@pytest.mark.parametrize(
    ("index_type", "window_penalty", "contrast"),
    [
        ("Flat", 0.0, 0.0),
        ("Flat", 2.0, 0.0),
        ("SQfp16", 0.0, 0.0),
        ("HNSW16", 0.0, 0.0),
        ("IVF4,Flat", 1.0, 0.0),
        ("Flat", 1.0, 0.5),
        ("SQfp16", 0.0, 0.2),
    ],
)
def test_ranking_equals_the_slow_reference(tmp_path, index_type, window_penalty, contrast):
    """The amounts are given in units of the index's spread: the reference takes them in cosines,
    times the standard deviation of the calibration's null at alpha 0, worked out here."""
    rng = np.random.default_rng(3)
    phrases = ["red circle", "blue star", "green ring", "yellow square", "white cross", "black triangle"]
    scenes = [
        [
            (str(p), (0, 0, 10 + k, 10 + k))
            for k, p in enumerate(rng.choice(phrases, size=rng.integers(1, 4), replace=False))
        ]
        for _ in range(120)
    ]
    search = SearchConfig(
        region_candidates=1000,
        global_candidates=1000,
        nprobe=4,
        window_penalty=window_penalty,
        contrast=contrast,
        vocabulary="trained",
        alpha=0.6,
        phrase_alpha=0.1,
    )
    data = make_data(scenes, 0.6)
    calibrated = {"calibration": fake_calibration(data, len(scenes)).to_dict()}
    index = open_fake(tmp_path, data=data, index_type=index_type, search=search, extra=calibrated)
    # The model's own phrases (a checkpoint's vocabulary): rivals for every lexeme but its own.
    vocabulary = (*phrases, "small red circle", "star")
    index.encoder.vocabulary = vocabulary
    null = np.asarray(index.calibration.null_max)[:, list(index.calibration.alphas).index(0.0)]
    unit = float(np.std(null))
    assert 0 < unit < 0.5
    for query in (
        "red circle",
        "blue star and a green ring",
        "white cross above black triangle",
        "red circle near a blue star left of a green ring",
    ):
        encoding = FakeEncoder().encode_queries([query])[0]
        # The configured weights (phrase_alpha for the one-lexeme query), or an explicit alpha for all.
        configured = 0.1 if len(encoding.lexeme_vectors) == 1 else 0.6
        for alpha, weight in ((None, configured), (0.3, 0.3)):
            amounts = (search.relation_weight * unit, window_penalty * unit, contrast * unit)
            expected = reference_scores(data, encoding, weight, *amounts, vocabulary)
            got = index.search(query, k=10, alpha=alpha)
            assert len(got.results) == 10
            for r in got.results:  # exact rescoring: every returned score is the reference score
                assert r.score == pytest.approx(expected[r.image_id], abs=2e-3)  # fp16 storage
            if index_type in ("Flat", "SQfp16"):  # the exact index types
                assert [r.image_id for r in got.results] == list(np.argsort(-expected, kind="stable")[:10])


def test_fusion_formula():
    g = np.array([0.5, 0.2])
    lex = np.array([[0.4, 0.6], [0.9, 0.9]])
    assert fuse(g, lex, 0.25) == pytest.approx([0.25 * 0.5 + 0.75 * 0.5, 0.25 * 0.2 + 0.75 * 0.9])
    assert fuse(g, np.zeros((2, 0)), 0.25) == pytest.approx(g)
    assert negatives_term(np.array([[0.1, 0.3]]), np.array([[0.5, 0.1]]), 0.5) == pytest.approx([0.3])


def test_exact_search_equals_faiss_flat_including_ties_and_padding():
    import faiss

    from harmosearch.store import search_vectors

    rng = np.random.default_rng(3)
    data = rng.standard_normal((500, 16)).astype(np.float32)
    data[100] = data[7]  # a tie: the lower id comes first
    flat = faiss.IndexFlatIP(16)
    flat.add(data)
    queries = np.concatenate([data[7:8], rng.standard_normal((4, 16)).astype(np.float32)])
    found = [search_vectors(flat, q[None], 10) for q in queries]  # one query at a time: the BLAS path
    scores, ids = np.concatenate([s for s, _ in found]), np.concatenate([i for _, i in found])
    faiss_scores, faiss_ids = flat.search(queries, 10)
    np.testing.assert_allclose(scores, faiss_scores, rtol=1e-5, atol=1e-5)
    assert (ids[1:] == faiss_ids[1:]).all()
    assert set(ids[0]) == set(faiss_ids[0])  # FAISS orders the tie its own way
    assert ids[0, 0] == 7 and ids[0, 1] == 100
    brute = data @ queries.T  # the obvious reference: full sort of every score
    for j in range(len(queries)):
        assert list(ids[j]) == list(np.lexsort((np.arange(500), -brute[:, j]))[:10])
    small = faiss.IndexFlatIP(16)
    small.add(data[:3])
    _, padded = search_vectors(small, queries[:1], 5)
    assert list(padded[0, 3:]) == [-1, -1] and sorted(padded[0, :3]) == [0, 1, 2]
    hnsw = faiss.index_factory(16, "HNSW8", faiss.METRIC_INNER_PRODUCT)
    hnsw.add(data)
    assert search_vectors(hnsw, queries, 3)[1].shape == (5, 3)  # other types: FAISS's own search


def test_auto_exact_index_is_lossless_for_float16_vectors():
    """The auto exact index stores float16 codes: for harmosearch's float16 vectors it returns
    what Flat returns."""
    from harmosearch.store import build_faiss, choose_index_type

    assert choose_index_type(1000, "auto", 200_000) == "SQfp16"
    assert choose_index_type(1000, "Flat", 200_000) == "Flat"
    assert choose_index_type(300_000, "auto", 200_000).startswith("IVF")
    rng = np.random.default_rng(5)
    data = rng.standard_normal((2000, 32)).astype(np.float16).astype(np.float32)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    flat_scores, flat_ids = build_faiss(data, "Flat").search(queries, 10)
    sq_scores, sq_ids = build_faiss(data, "SQfp16").search(queries, 10)
    assert (flat_ids == sq_ids).all()
    np.testing.assert_allclose(sq_scores, flat_scores, rtol=1e-6, atol=1e-5)


def test_relations_rank_the_true_layout_above_its_twin_and_show_its_boxes(tmp_path):
    """Two images with the same two objects in swapped places: the lexemes score the same in
    both, so only the relation can tell them apart."""
    scenes = [
        [("blue square", (10, 40, 50, 80)), ("white ring", (100, 40, 140, 80))],  # square left of ring
        [("blue square", (100, 40, 140, 80)), ("white ring", (10, 40, 50, 80))],  # ring left of square
    ]
    index = open_fake(tmp_path, scenes=scenes)
    response = index.search("a blue square to the left of a white ring", k=2)
    assert [r.path for r in response.results] == ["img000.png", "img001.png"]
    first, second = response.results
    assert {m.text: m.box for m in first.lexemes} == {"blue square": (10, 40, 50, 80), "white ring": (100, 40, 140, 80)}
    assert [(r.subject, r.relation, r.object) for r in first.relations] == [("blue square", "left of", "white ring")]
    assert first.relations[0].score > 0.9 > 0.1 > second.relations[0].score
    assert first.to_dict()["relations"][0]["relation"] == "left of"
    swapped = index.search("a white ring to the left of a blue square", k=2)
    assert [r.path for r in swapped.results] == ["img001.png", "img000.png"]
    plain = index.search("a blue square to the left of a white ring", k=2, relations=False)
    assert plain.results[0].score == pytest.approx(plain.results[1].score, abs=1e-4)
    assert plain.results[0].relations == ()


def test_depth_relations_are_named_as_not_scored(tmp_path):
    index = open_fake(tmp_path)
    response = index.search("a red circle in front of a blue star", k=2)
    assert any("needs depth" in w for w in response.warnings)
    assert all(r.relations == () for r in response.results)


# Calibration -----------------------------------------------------------------------------------


def fake_calibration(data, n_images):
    """The calibration indexing would give the fake encoder's index of `data`."""
    from harmosearch.search.calibration import calibrate

    counts = np.bincount(np.asarray(data.regions["image_id"], np.int64), minlength=n_images)
    start = np.concatenate([[0], np.cumsum(counts)])

    def encode(texts):
        return [(e.global_vector.numpy(), e.lexeme_vectors.numpy()) for e in FakeEncoder().encode_queries(texts)]

    return calibrate(data.global_vectors, data.region_vectors, start, encode)


def calibrated_fake(tmp_path, scenes=SCENES):
    data = make_data(scenes)
    calibration = fake_calibration(data, len(scenes))
    return open_fake(tmp_path, data=data, extra={"calibration": calibration.to_dict()}), calibration


def test_weak_results_are_marked_and_min_score_auto_keeps_the_confident_ones(tmp_path):
    from harmosearch.search.calibration import assess

    index, calibration = calibrated_fake(tmp_path)
    present = index.search("red circle", k=5)
    assert present.calibrated and present.confident_match is True
    # The reference: each result's fused score against the calibration, one by one.
    for r in present.results:
        assert r.confident == bool(assess(calibration, [r.score], 0.5).confident[0])
    assert [r.confident for r in present.results][:2] == [True, True]  # the two images holding a red circle
    assert present.to_dict()["results"][0]["confident"] is True
    absent = index.search("purple elephant", k=5)
    assert absent.confident_match is False and all(r.confident is False for r in absent.results)
    assert absent.to_dict()["confident_match"] is False
    auto = index.search("red circle", k=5, min_score="auto")
    assert [r.path for r in auto.results] == [r.path for r in present.results if r.confident]
    assert index.search("purple elephant", min_score="auto").results == []
    global_only = index.search("red circle", k=5, global_only=True)  # calibrated at alpha 1
    for r in global_only.results:
        assert r.confident == bool(assess(calibration, [r.global_score], 1.0).confident[0])


def test_confidence_is_measured_without_the_window_penalty(tmp_path):
    """The calibration's unrelated queries are scored without a penalty; so is what a result's
    confidence compares, while its ranking score does carry the penalty."""

    from harmosearch.search.calibration import assess

    # A crowded scene: its red circle is a window (make_data: every second object), and its
    # whole-image vector, shared among five objects, matches no lexeme well.
    names = ["blue star", "red circle", "green ring", "white cross", "black triangle"]
    scenes = [*SCENES, [(p, (20 * k, 20 * k, 20 * k + 15, 20 * k + 15)) for k, p in enumerate(names)]]
    index, calibration = calibrated_fake(tmp_path, scenes)
    # The bar at 0.6, between the crowded scene's red-circle score with and without the penalty;
    # a null that does not vary gives the fallback unit, 0.10: the penalty is 0.3 in cosine.
    calibration = replace(calibration, null_max=tuple((0.6,) * len(row) for row in calibration.null_max))
    penalised = Index(
        tmp_path / "idx", Config(search=SearchConfig(box_margin=0.0, window_penalty=3.0)), encoder=FakeEncoder()
    )
    index.calibration = penalised.calibration = calibration
    differ = 0  # results the penalised score would have judged otherwise
    for query in ("red circle", "a blue star and a green ring", "purple elephant"):
        plain = {r.path: r.score for r in index.search(query, k=len(scenes), alpha=0.5).results}
        for r in penalised.search(query, k=len(scenes), alpha=0.5).results:
            assert r.confident == bool(assess(calibration, [plain[r.path]], 0.5).confident[0])
            differ += r.confident != bool(assess(calibration, [r.score], 0.5).confident[0])
    assert differ


def test_uncalibrated_indexes_mark_nothing_and_refuse_min_score_auto(tmp_path):
    index, _ = calibrated_fake(tmp_path)
    uncalibrated = open_fake(tmp_path / "plain")
    response = uncalibrated.search("red circle", k=3)
    assert not response.calibrated and response.confident_match is None
    assert all(r.confident is None for r in response.results)
    with pytest.raises(QueryError, match="no calibration"):
        uncalibrated.search("red circle", min_score="auto")
    assert index.calibration is not None


def test_a_window_penalty_given_per_query_ranks_as_one_configured(tmp_path):
    names = ["blue star", "red circle", "green ring", "white cross", "black triangle"]
    scenes = [*SCENES, [(p, (20 * k, 20 * k, 20 * k + 15, 20 * k + 15)) for k, p in enumerate(names)]]
    plain = open_fake(tmp_path / "a", scenes=scenes)
    configured = open_fake(tmp_path / "b", scenes=scenes, search=SearchConfig(box_margin=0.0, window_penalty=0.3))
    asked = SearchConfig(box_margin=0.0, window_penalty=0.3)
    for query in ("red circle", "a blue star and a green ring", "white cross left of a red circle"):
        want = configured.search(query, k=len(scenes)).to_dict()
        before = plain.search(query, k=len(scenes)).to_dict()
        assert plain.search(query, k=len(scenes), settings=asked).to_dict() == want
        assert plain.search(query, k=len(scenes)).to_dict() == before  # the index's own setting again
    assert before != want  # the penalty changed something


def test_negatives_are_scored_without_the_window_penalty(tmp_path):
    """What `--not` subtracts uses the plain region scores (box queries: test_serve_search)."""
    plain = open_fake(tmp_path / "a")
    penalised = open_fake(tmp_path / "b", search=SearchConfig(box_margin=0.0, window_penalty=0.5))

    def subtracted(index):  # per image: the score lost to "not a red circle"
        without = {r.path: r.score for r in index.search("blue star", k=5).results}
        return {
            r.path: without[r.path] - r.score for r in index.search("blue star", k=5, negatives=["red circle"]).results
        }

    want, got = subtracted(plain), subtracted(penalised)
    assert got == pytest.approx(want, abs=1e-6)
    assert want["img001.png"] > 0.1  # its red circle is a window (make_data: every second object)


def test_a_query_scores_its_candidates_at_one_thread_per_pool(tmp_path, monkeypatch):
    """Every OpenMP and BLAS pool at one thread while the candidates are scored, and each back at
    its own count after (model/device.one_thread_per_pool)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from harmosearch.model import device
    from harmosearch.search import index as module

    index = open_fake(tmp_path)
    device._thread_pools.cache_clear()  # find the pools this process has loaded by now
    seen = []
    score = module.score_candidates

    def scoring(*args, **kwargs):
        seen.append({p["filepath"]: p["num_threads"] for p in threadpool_info()})
        return score(*args, **kwargs)

    monkeypatch.setattr(module, "score_candidates", scoring)
    with threadpool_limits(limits=2):
        before = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
        assert index.search("a red circle", k=3).results
        after = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
    assert before and set(before.values()) == {2}
    assert seen == [dict.fromkeys(before, 1)]
    assert after == before
