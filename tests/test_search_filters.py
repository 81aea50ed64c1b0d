"""Filters (capture dates, folders) applied before ranking: k results come back when k pass, the
selector's search equals brute force over the allowed rows, and date order."""

from dataclasses import replace

import numpy as np
import pytest

from harmosearch.config import SearchConfig
from harmosearch.errors import QueryError

from .fakes import FakeEncoder
from .test_search import make_data, open_fake, reference_scores

DAY = 86_400.0


JAN_1_2024 = 19_723 * DAY  # 2024-01-01T00:00 in local seconds (media.metadata.local_seconds)


def dated_library(n=120, seed=4):
    """n images, one a day from 2024-01-01, in folders a/ (the first half) and b/; a red circle
    in every fourth image, other objects elsewhere."""
    rng = np.random.default_rng(seed)
    others = ["blue star", "green ring", "yellow square", "white cross", "black triangle"]
    scenes = []
    for i in range(n):
        objects = [(str(p), (0, 0, 20 + k, 20 + k)) for k, p in enumerate(rng.choice(others, 2, replace=False))]
        if i % 4 == 0:
            objects.append(("red circle", (40, 40, 80, 80)))
        scenes.append(objects)
    data = make_data(scenes, noise=0.6)
    data.images["path"] = np.array([f"{'a' if i < n // 2 else 'b'}/img{i:03d}.png" for i in range(n)], dtype=object)
    data.images["taken_local"] = JAN_1_2024 + DAY * np.arange(n) + 3600.0  # 01:00 each day
    return scenes, data


def filtered_reference(data, query, allowed, k):
    """The top k allowed images by the fusion formula, scored one by one."""
    encoding = FakeEncoder().encode_queries([query])[0]
    defaults = SearchConfig()  # a query of one lexeme weighs the global score by phrase_alpha
    scores = reference_scores(data, encoding, defaults.phrase_alpha if len(encoding.lexeme_vectors) == 1 else 0.5)
    ids = np.flatnonzero(allowed)
    return list(ids[np.argsort(-scores[ids], kind="stable")][:k])


FILTERS = [
    ({"before": "2024-01-20"}, lambda i: i < 19),
    ({"after": "2024-03", "before": "2024-03-15"}, lambda i: 60 <= i < 74),
    ({"under": ["b"], "after": "2024-04-20"}, lambda i: i >= 110),
    ({"under": ["./a/"]}, lambda i: i < 60),
]


@pytest.mark.parametrize("index_type", ["Flat", "SQfp16", "HNSW16", "IVF4,Flat", "PQ4x4"])
@pytest.mark.parametrize("exact_subset", [True, False])
def test_filters_apply_before_ranking_so_k_results_come_back(tmp_path, monkeypatch, index_type, exact_subset):
    """Candidates limited to the single best global image and region: without filtering before
    ranking, a filter that leaves out the query's top matches would leave almost nothing."""
    import harmosearch.search.retrieve

    if not exact_subset:  # FAISS searches the allowed rows through an ID selector
        monkeypatch.setattr(harmosearch.search.retrieve, "EXACT_SUBSET_REGIONS", 0)
    scenes, data = dated_library()
    # No rivals: the reference scores without the contrast.
    narrow = SearchConfig(global_candidates=1, region_candidates=1, box_margin=0.0, window_penalty=0.0, contrast=0.0)
    index = open_fake(tmp_path, index_type=index_type, search=narrow, data=data)
    for filters, passes in FILTERS:
        allowed = np.array([passes(i) for i in range(len(scenes))])
        got = index.search("red circle", k=10, **filters)
        assert len(got.results) == min(10, allowed.sum())
        assert all(allowed[r.image_id] for r in got.results)
        if exact_subset:  # every allowed image is scored: exactly the reference
            assert [r.image_id for r in got.results] == filtered_reference(data, "red circle", allowed, 10)
    wide = replace(narrow, global_candidates=1000, region_candidates=1000)
    if index_type in ("Flat", "SQfp16"):  # exact index types with every row a candidate
        index = open_fake(tmp_path / "wide", index_type=index_type, search=wide, data=data)
        for filters, passes in FILTERS:
            allowed = np.array([passes(i) for i in range(len(scenes))])
            got = index.search("red circle", k=10, **filters)
            assert [r.image_id for r in got.results] == filtered_reference(data, "red circle", allowed, 10)


def test_selector_search_equals_brute_force_over_the_allowed_rows():
    from harmosearch.store import build_faiss, search_vectors

    rng = np.random.default_rng(8)
    data = rng.standard_normal((800, 16)).astype(np.float16).astype(np.float32)
    queries = rng.standard_normal((3, 16)).astype(np.float32)
    allowed = rng.random(800) < 0.05
    brute = np.where(allowed[:, None], data @ queries.T, -np.inf)
    for index_type in ("Flat", "SQfp16"):
        index = build_faiss(data, index_type)
        for j, q in enumerate(queries):
            scores, ids = search_vectors(index, q[None], 60, allowed)  # more than are allowed: padded
            expected = np.lexsort((np.arange(800), -brute[:, j]))[: allowed.sum()]
            assert list(ids[0, : allowed.sum()]) == list(expected) and (ids[0, allowed.sum() :] == -1).all()
            np.testing.assert_allclose(scores[0, : allowed.sum()], brute[expected, j], rtol=1e-5, atol=1e-5)
        batched = search_vectors(index, queries, 5, allowed)[1]  # several queries: FAISS with the selector
        assert all(allowed[i] for i in batched.ravel())


def test_sort_by_date_and_the_python_api_accepts_dates(tmp_path):
    from datetime import date

    _, data = dated_library()
    index = open_fake(tmp_path, data=data)
    by_score = index.search("red circle", k=5, after=date(2024, 2, 1))
    by_date = index.search("red circle", k=5, after=date(2024, 2, 1), sort="date")
    assert sorted(r.image_id for r in by_date.results) == sorted(r.image_id for r in by_score.results)
    assert [r.image_id for r in by_date.results] == sorted((r.image_id for r in by_score.results), reverse=True)
    assert all(r.image_id >= 31 for r in by_date.results)
    with pytest.raises(QueryError, match="unknown sort"):
        index.search("red circle", sort="size")
