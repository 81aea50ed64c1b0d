"""The bench with refine on measures what `query --refine` shows: refined grounding is
refine_boxes phrase by phrase, and the refined tasks' boxes and rankings are the query's."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harmosearch.bench.datasets import load_bench_set
from harmosearch.bench.tasks import Run, retrieval
from harmosearch.config import load_config

from .conftest import TEST_MODEL


@pytest.fixture(scope="module")
def few_scenes(tmp_path_factory):
    """Six scenes for the refined tasks: each refined query encodes a crop per candidate image,
    so every scene costs every query (the cross-checks hold at any size)."""
    from harmosearch.config import SynthConfig
    from harmosearch.synth import generate

    out = tmp_path_factory.mktemp("few-scenes")
    generate(out, SynthConfig(n=6, seed=7))
    return out


def test_refined_grounding_is_refine_boxes_phrase_by_phrase(scenes, tmp_path, monkeypatch, test_encoder):
    """Grounding with refine on: for each annotated phrase alone, its indexed box (refine off, the
    box grounding reports as indexed_accuracy) searched again by search_boxes on its own image,
    then IoU >= 0.5 with the phrase's box."""
    from harmosearch.bench.metrics import box_iou
    from harmosearch.bench.tasks import grounding
    from harmosearch.bench.vectors import as_an_index, bench_calibration, encode_images, phrase_vectors
    from harmosearch.search.box_search import search_boxes
    from harmosearch.search.calibration import ranking_unit
    from harmosearch.search.score import best_regions

    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    overrides = {"encoder.model": TEST_MODEL, "encoder.device": "cpu", "search.refine": True}
    overrides["search.refine_scale"] = 1.5
    config = load_config(overrides=overrides)
    bench = load_bench_set(str(scenes), None, config.paths.cache_dir, 12, "grounding", "test")
    images = encode_images(test_encoder, config, bench)
    # A box margin of 0.05 in cosine on these images, as before it was set in units of the spread:
    # with the default 0.5 units the random model's boxes (a wider band) never fit, a trivial case.
    unit = ranking_unit(bench_calibration(test_encoder, images))
    config = replace(config, search=replace(config.search, box_margin=0.05 / unit))
    ranked, images, _, _ = as_an_index(test_encoder, config, bench, images)  # the box margin in cosines
    assert ranked.search.box_margin == pytest.approx(0.05)
    got = grounding(Run(test_encoder, ranked, bench, images))
    s = ranked.search
    hits = []
    for (image, box, _), phrase in zip(bench.boxes, bench.phrases, strict=True):
        vector = phrase_vectors(test_encoder, [phrase])
        _, rows = best_regions(images.regions, np.array([image]), vector, s.box_margin)
        seed = images.regions.boxes[rows[0, 0]][None]
        picture = Image.open(bench.images[image]).convert("RGB")
        shown, _ = search_boxes(
            test_encoder, [(picture, *picture.size)], np.zeros(1, np.int64), vector, seed, s.refine_scale, s.box_margin
        )
        hits.append(box_iou(np.array([box], np.float32), shown)[0, 0] >= 0.5)
    assert got["accuracy"] == pytest.approx(np.mean(hits))
    assert got["phrases"] == len(hits) and 0 < np.mean(hits) < 1  # not a trivial case


def test_refined_bench_tasks_are_what_query_refine_shows(few_scenes, tmp_path, monkeypatch):
    """The search task (and retrieval's refined ranking, below) with refine and rerank on ranks
    and boxes each phrase as `Index.search` does for it (refined, reordered): P@1, hit@1 and
    box@0.5 computed from the query's own results.
    With the bundled model, so that some boxes fit and some do not."""
    from harmosearch.bench.metrics import box_iou
    from harmosearch.bench.tasks import search as phrase_search
    from harmosearch.bench.vectors import as_an_index, encode_images
    from harmosearch.indexing import build_index
    from harmosearch.model.encoder import load_encoder
    from harmosearch.search import Index

    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    # A window penalty and a contrast too (the everyday rivals, then a file's): the
    # bench must score regions as the query does.
    rivals = tmp_path / "rivals.txt"
    rivals.write_text("# rivals\nred circle\nblue star\ngreen ring\nyellow square\n")
    overrides = {
        "encoder.model": "harmo-tiny",
        "encoder.device": "cpu",
        "index.workers": 0,
        "search.refine": True,
        "search.window_penalty": 1.0,
        "search.contrast": 5.0,
        # the regions fully weighed whatever the indexes' measured trust: Run takes settings as given
        "search.trust_low": 0.0,
        "search.trust_high": 0.0,
    }
    # The dense map's segments, not the pixels': with them every box shown on these 6 scenes fits,
    # and the box comparison below needs some that do not.
    overrides["regions.pixel_segments"] = ()
    config = load_config(overrides={**overrides, "search.rerank": 8, "search.crop_weight": 0.7})
    test_encoder = load_encoder(config)
    bench = load_bench_set(str(few_scenes), None, config.paths.cache_dir, 6, "search", "test")
    images = encode_images(test_encoder, config, bench)
    # as an index of these scenes ranks: the amounts (in units) in their calibration's cosines
    ranked, images, _, calibration = as_an_index(test_encoder, config, bench, images)
    unit = calibration.spread()
    assert images.regions.bias is not None and images.regions.bias.min() == pytest.approx(-1.0 * unit)
    # k=1: the order itself is compared, not only which images make the top.
    run = Run(test_encoder, ranked, bench, images)
    assert run.vocabulary is not None and len(run.vocabulary.phrases) > 500  # the everyday rivals
    got = phrase_search(run, k=1)
    build_index(few_scenes / "images", tmp_path / "index", config, encoder=test_encoder)
    index = Index(tmp_path / "index", config, encoder=test_encoder)
    precision, hits, boxed = [], [], []
    for phrase in sorted(set(bench.phrases)):
        truth = {
            bench.images[i].name: box for (i, box, _), p in zip(bench.boxes, bench.phrases, strict=True) if p == phrase
        }
        results = index.search(phrase, k=1).results
        relevant = [r for r in results if Path(r.path).name in truth]
        precision.append(len(relevant))
        hits.append(bool(relevant))
        if relevant:
            shown = np.array([relevant[0].lexemes[0].box], np.float32)
            boxed.append(box_iou(np.array([truth[Path(relevant[0].path).name]], np.float32), shown)[0, 0] >= 0.5)
    assert got["P@1"] == pytest.approx(np.mean(precision))
    assert got["hit@1"] == pytest.approx(np.mean(hits))
    assert got["box@0.5"] == pytest.approx(np.mean(boxed))
    assert got["refine_seconds_per_image"] > 0 and 0 < np.mean(boxed) < 1
    # Retrieval's "refined" ranking: each caption as `query --refine` ranks it without relations,
    # with the random test model (the bundled one finds every caption's image among 6).
    config = load_config(
        overrides={**overrides, "encoder.model": TEST_MODEL, "search.rerank": 8, "search.vocabulary": str(rivals)}
    )
    test_encoder = load_encoder(config)
    build_index(few_scenes / "images", tmp_path / "random", config, encoder=test_encoder)
    index = Index(tmp_path / "random", config, encoder=test_encoder)
    captions = load_bench_set(str(few_scenes), None, config.paths.cache_dir, 6, "retrieval", "test")
    ranked, images, _, _ = as_an_index(test_encoder, config, captions, encode_images(test_encoder, config, captions))
    run = Run(test_encoder, ranked, captions, images, mode="fused")
    refined = retrieval(run)["modes"]["refined"]
    ranks = []
    for caption, image in zip(captions.captions, captions.caption_image, strict=True):
        paths = [Path(r.path).name for r in index.search(caption, k=10, relations=False).results]
        ranks.append(paths.index(captions.images[image].name) if captions.images[image].name in paths else 99)
    for k in (1, 5, 10):
        assert refined[f"t2i_R@{k}"] == pytest.approx(np.mean(np.array(ranks) < k))
    assert 0 < refined["t2i_R@1"] < 1
