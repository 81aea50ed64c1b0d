"""Region trust (harmosearch.regions.trust): measured on an index's own images, kept in its
manifest, shown by `info`, and weighing the regions in fusion."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from harmosearch.config import SearchConfig, load_config
from harmosearch.errors import ConfigError
from harmosearch.indexing import build_index
from harmosearch.regions.trust import (
    TRUST_FIRST,
    TRUST_IMAGES,
    TRUST_VERSION,
    TRUST_Z,
    RegionTrust,
    chance_mrr,
    measure_trust,
    normalised,
    own_box_mrr,
    phrase_space_mrr,
    reciprocal_ranks,
    region_weight,
    sample_boxes,
    sample_images,
    sample_order,
    settled,
    stored_trust,
    trust_estimate,
    trusted_settings,
    weighed,
)
from harmosearch.search.fuse import fused_scores
from harmosearch.search.query import encode_query
from harmosearch.search.score import RegionTable, score_candidates
from harmosearch.store import read_manifest
from tests.conftest import TEST_MODEL, invoke
from tests.fakes import FakeEncoder, concept, unit

CONFIG = {"encoder.device": "cpu", "index.workers": 0, "regions.max_regions": 24}


def _flat(table: str) -> str:
    """A rich table's text with its borders and line folds taken out."""
    return " ".join(re.sub("[│┃┌┐└┘├┤┬┴┼─]", " ", table).split())


def _config(model: str):
    return load_config(overrides={**CONFIG, "encoder.model": model})


@pytest.fixture(scope="module")
def built(scenes, tmp_path_factory):
    """The shared scenes indexed by the bundled model and by a model of random weights."""
    root = tmp_path_factory.mktemp("trust")
    out = {}
    for name, model in (("tiny", "harmo-tiny"), ("random", TEST_MODEL)):
        build_index(scenes / "images", root / name, _config(model))
        out[name] = root / name
    return out


def test_trust_is_high_for_the_bundled_model_and_low_for_random_regions(built):
    defaults = SearchConfig()
    tiny = stored_trust(read_manifest(built["tiny"]))
    random = stored_trust(read_manifest(built["random"]))
    assert tiny is not None and random is not None
    # up to 6 boxes on each of the 12 pictures; a picture whose regions hold no box of the
    # measured sizes (2-50% of it; with pixel segments some hold only specks and the background)
    # is left out
    assert 10 <= tiny.images <= 12 and tiny.regions >= 24
    assert tiny.trust >= defaults.trust_high  # ranks as it did before trust was measured
    assert random.trust <= defaults.trust_low  # ranks as --global-only
    assert region_weight(tiny, defaults.trust_low, defaults.trust_high) == 1.0
    assert region_weight(random, defaults.trust_low, defaults.trust_high) == 0.0


def test_the_manifest_round_trips_the_trust_and_an_update_keeps_it(built, scenes, tmp_path):
    manifest = read_manifest(built["random"])
    trust = stored_trust(manifest)
    assert RegionTrust.from_dict(json.loads(json.dumps(trust.to_dict()))) == replace(
        trust, seconds=round(trust.seconds, 3)
    )
    assert stored_trust({}) is None  # an index made before trust was measured
    # a trust written without its version was measured the first way: the next update measures it again
    unversioned = {k: v for k, v in trust.to_dict().items() if k != "version"}
    assert stored_trust({"region_trust": unversioned}).version == 1


def test_an_index_without_trust_ranks_as_before_and_its_next_update_measures_it(built, scenes):
    """An older manifest (no region_trust) opens and ranks with the regions fully weighed; `info`
    says it is not measured and how to get it; the next update, with nothing changed, measures it."""
    from harmosearch.search.index import Index

    path = built["random"]
    manifest_file = path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    measured = manifest.pop("region_trust")
    manifest_file.write_text(json.dumps(manifest))
    config = _config(TEST_MODEL)
    index = Index(path, config)
    assert index.trust is None
    plain = replace(config, search=replace(config.search, trust_low=0.0, trust_high=0.0))
    a = index.search("red circle", k=12)
    b = Index(path, plain).search("red circle", k=12)  # trust ignored: regions fully weighed
    assert [r.path for r in a.results] == [r.path for r in b.results]
    assert [r.score for r in a.results] == pytest.approx([r.score for r in b.results])
    shown = invoke(["info", str(path)])
    assert shown.code == 0 and "not measured" in _flat(shown.stdout) and "harmosearch index" in _flat(shown.stdout)
    report = build_index(scenes / "images", path, config)
    assert report.committed and report.encoded == 0
    assert read_manifest(path)["region_trust"]["trust"] == pytest.approx(measured["trust"])


def test_info_shows_the_trust_and_what_it_does_to_ranking(built):
    shown = invoke(["info", str(built["random"])])
    assert shown.code == 0
    trust = stored_trust(read_manifest(built["random"]))
    assert f"{trust.trust:.2f} ± {trust.spread:.2f}, regions not weighed: ranks as --global-only" in _flat(shown.stdout)
    shown = invoke(["info", str(built["tiny"]), "--json"])
    assert json.loads(shown.stdout)["region_trust"]["trust"] == stored_trust(read_manifest(built["tiny"])).trust


def test_an_untrusted_index_ranks_as_global_only(built):
    from harmosearch.search.index import Index

    config = _config(TEST_MODEL)
    index = Index(built["random"], config)
    assert index.trust is not None and index.trust.trust <= config.search.trust_low
    for text in ("red circle", "a blue square left of a green star"):
        fused = index.search(text, k=12)
        flat = index.search(text, k=12, global_only=True)
        assert [r.path for r in fused.results] == [r.path for r in flat.results]
        assert [r.score for r in fused.results] == pytest.approx([r.score for r in flat.results], abs=1e-6)


def _scored(settings: SearchConfig):
    """Three images of two regions each, scored for a two-lexeme query by the fake encoder."""
    rng = np.random.default_rng(3)
    red, circle = concept("red"), concept("circle")
    vectors = unit(rng.standard_normal((6, red.size)).astype(np.float32) + np.stack([red, circle] * 3))
    boxes = np.tile(np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32), (3, 1))
    table = RegionTable(vectors, boxes, np.array([0, 2, 4, 6]), np.ones(6, np.float32))
    global_vectors = unit(rng.standard_normal((3, red.size)).astype(np.float32))
    query = encode_query(FakeEncoder(), "red and circle", relations=False)
    return score_candidates(table, table, global_vectors, np.arange(3), query, settings)


def test_fused_scores_are_global_only_at_weight_0_and_as_today_at_weight_1():
    settings = replace(SearchConfig(), relation_weight=0.0)
    scored = _scored(settings)
    today = fused_scores(scored, settings)
    assert fused_scores(scored, trusted_settings(settings, 1.0)) == pytest.approx(today)
    assert trusted_settings(settings, 1.0) == settings
    np.testing.assert_allclose(fused_scores(scored, trusted_settings(settings, 0.0)), scored.global_scores, atol=1e-6)
    half = trusted_settings(settings, 0.5)
    assert half.alpha == pytest.approx(1 - (1 - settings.alpha) / 2)
    assert half.phrase_alpha == pytest.approx(1 - (1 - settings.phrase_alpha) / 2)
    assert half.crop_weight == pytest.approx(settings.crop_weight / 2)


def test_the_weight_ramps_from_trust_low_to_trust_high():
    assert region_weight(None, 0.1, 0.2) == 1.0
    assert region_weight(0.05, 0.1, 0.2) == 0.0
    assert region_weight(0.15, 0.1, 0.2) == pytest.approx(0.5)
    assert region_weight(0.3, 0.1, 0.2) == 1.0
    assert region_weight(0.0, 0.0, 0.0) == 1.0  # trust_high 0: regions always fully weighed
    s = replace(SearchConfig(), trust_low=0.0, trust_high=0.0)
    assert weighed(s, RegionTrust(0.0, 0.5, 10, 2, 0.1)) == s
    with pytest.raises(ConfigError):
        SearchConfig(trust_low=0.3, trust_high=0.2)


def test_own_box_mrr_against_a_slow_reference():
    rng = np.random.default_rng(0)
    regions, alone = rng.standard_normal((10, 8)), rng.standard_normal((10, 8))
    alone[:5] = regions[:5] + 0.1 * rng.standard_normal((5, 8))  # picture 0's regions know their boxes
    picture_of = np.array([0] * 5 + [1] * 5)
    mrr, chance = own_box_mrr(regions, alone, picture_of)

    def centred(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        x = x - x.mean(axis=0)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    r, a = centred(regions), centred(alone)
    reciprocal = []
    for i in range(10):
        mine = [j for j in range(10) if picture_of[j] == picture_of[i]]
        rank = sum(1 for j in mine if r[i] @ a[j] >= r[i] @ a[i])
        reciprocal.append(1 / rank)
    assert mrr == pytest.approx(np.mean(reciprocal))
    assert chance == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 5)
    assert np.mean(reciprocal[:5]) == 1.0  # picture 0: every region finds its own
    assert normalised(1.0, chance) == 1.0 and normalised(chance, chance) == 0.0 and normalised(0.1, chance) == 0.0
    assert chance_mrr(1) == 1.0


def test_trust_sees_only_what_the_phrases_can_ask():
    """Regions that match their boxes only in what no phrase names (dimensions 4-7 here, as the
    grain of a photograph) find their own at chance in phrase space; regions that match in what
    the phrases name find their own first, whatever else they carry."""
    rng = np.random.default_rng(1)
    phrases = np.eye(8)[:4]  # the phrases name dimensions 0-3 only
    picture_of = np.zeros(4, dtype=int)
    texture = np.eye(8)[4:] * 2.0  # one unnameable trait per box
    alone = texture + np.full(8, 0.3)
    mrr, chance = own_box_mrr(texture, alone, picture_of)
    assert normalised(mrr, chance) == 1.0  # compared as vectors, every region finds its own
    mrr, chance = phrase_space_mrr(texture, alone, picture_of, phrases)
    assert normalised(mrr, chance) == 0.0  # seen through the phrases they are all alike
    named = np.eye(8)[:4] + rng.standard_normal((4, 8)) * [0, 0, 0, 0, 1, 1, 1, 1]
    mrr, chance = phrase_space_mrr(named, np.eye(8)[:4], picture_of, phrases)
    assert normalised(mrr, chance) == 1.0


def test_a_trust_of_an_earlier_version_ranks_until_the_next_update_measures_it_again(built, scenes):
    """An index whose manifest holds a trust measured the version-1 way keeps ranking with it; its
    next update, with nothing to encode, measures it again (only the sampled boxes are encoded)."""
    from harmosearch.search.index import Index

    path = built["tiny"]
    manifest_file = path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    current = manifest["region_trust"]
    first_way = {key: value for key, value in current.items() if key != "spread"}  # version 1 had none
    manifest["region_trust"] = {**first_way, "trust": 0.15, "version": 1}
    manifest_file.write_text(json.dumps(manifest))
    config = _config("harmo-tiny")
    assert Index(path, config).trust.trust == 0.15
    shown = _flat(invoke(["info", str(path)]).stdout)
    assert "0.15, regions weighed 0.50" in shown and "the next `harmosearch index` measures it again" in shown
    report = build_index(scenes / "images", path, config)
    assert report.committed and report.encoded == 0
    again = stored_trust(read_manifest(path))
    assert again.version == TRUST_VERSION == 2 and again.trust == pytest.approx(current["trust"])


def test_sampled_boxes_fit_the_share_and_do_not_overlap_much():
    boxes = np.array([[0, 0, 100, 100], [0, 0, 50, 50], [5, 5, 55, 55], [50, 50, 100, 100], [1, 1, 3, 3]], float)
    chosen = sample_boxes(boxes, 100, 100, seed=0)
    assert 0 not in chosen and 4 not in chosen  # the whole picture and a speck
    assert not {1, 2} <= set(chosen.tolist())  # these two overlap at IoU 0.68
    assert list(chosen) == list(sample_boxes(boxes, 100, 100, seed=0))  # the same sample each time


def test_the_sample_order_spreads_every_prefix_evenly():
    order = sample_order(1000)
    assert sorted(order.tolist()) == sample_images(1000).tolist()  # the same 128 images
    for size in (2, 16, 32, 64):  # each prefix of a power of two is an evenly spaced sample
        gaps = np.diff(np.sort(order[:size]))
        assert gaps.max() - gaps.min() <= 2 and gaps.min() >= 1000 // size - 2
    assert list(sample_order(5)) == [0, 4, 2, 1, 3] and list(sample_order(1)) == [0]


def test_the_spread_of_trust_against_a_slow_reference():
    """trust_estimate's spread is the standard error of the mean gain over chance, with the
    pictures (not the regions) as the independent units, over 1 - chance."""
    rng = np.random.default_rng(3)
    picture_of = np.repeat(np.arange(7), [2, 3, 4, 5, 6, 6, 3])
    regions = rng.standard_normal((len(picture_of), 6))
    alone = regions + rng.standard_normal(regions.shape)  # regions that half know their boxes
    trust, mrr, spread = trust_estimate(regions, alone, picture_of)
    reciprocal, chance = reciprocal_ranks(regions, alone, picture_of)
    assert mrr == pytest.approx(own_box_mrr(regions, alone, picture_of)[0])
    assert trust == pytest.approx(normalised(mrr, chance.mean()))
    gain = reciprocal - chance
    sums = [sum(gain[i] - gain.mean() for i in range(len(gain)) if picture_of[i] == p) for p in range(7)]
    slow = (7 / 6 * sum(s * s for s in sums)) ** 0.5 / len(gain) / (1 - chance.mean())
    assert spread == pytest.approx(slow)
    assert trust_estimate(regions[:3], alone[:3], np.zeros(3, int))[2] == float("inf")  # one picture
    assert settled(0.4, 0.05, (0.1, 0.2)) and settled(0.02, 0.02, (0.1, 0.2))
    assert not settled(0.3, 0.05, (0.1, 0.2)) and not settled(0.15, 0.0, (0.1, 0.2))


def _sequential_library(monkeypatch, know_their_boxes: bool):
    """measure_trust's inputs for 200 pictures of 6 boxes each, with its encoding replaced: a box
    alone is encoded as its region's vector plus noise (regions that know their boxes) or as
    noise alone. Returns (arguments, the boxes encoded so far)."""
    import harmosearch.regions.trust as T

    rng = np.random.default_rng(5)
    grid = np.array([[x, y, x + 30, y + 30] for x in (0, 35, 70) for y in (0, 50)], dtype=np.float32)
    boxes = np.tile(grid, (200, 1))
    vectors = rng.standard_normal((len(boxes), 16)).astype(np.float32)
    encoded: list[int] = []

    def alone(read, box):  # the row of the box: pictures are their own row numbers here
        return read[0] * 6 + int(np.flatnonzero((grid == box).all(axis=1))[0])

    def whole(encoder, rows):
        encoded.extend(rows)
        noise = rng.standard_normal((len(rows), 16))
        return (vectors[rows] if know_their_boxes else 0) + noise

    monkeypatch.setattr(T, "shown_alone", alone)
    monkeypatch.setattr(T, "whole_vectors", whole)
    start = np.arange(0, len(boxes) + 1, 6)
    return (None, lambda i: (i, 100, 100), 200, vectors, boxes, start, np.eye(16)), encoded


def test_trust_stops_sampling_once_the_weight_it_gives_is_sure(monkeypatch):
    arguments, encoded = _sequential_library(monkeypatch, know_their_boxes=True)
    full = measure_trust(*arguments)
    assert full.images == TRUST_IMAGES and len(encoded) == 6 * TRUST_IMAGES and 0.5 < full.trust < 1
    encoded.clear()
    reports = []
    early = measure_trust(*arguments, ramp=(0.1, 0.2), progress=lambda *report: reports.append(report))
    assert early.images == TRUST_FIRST and len(encoded) == 6 * TRUST_FIRST
    assert reports == [("region trust", 0, TRUST_IMAGES), ("region trust", TRUST_FIRST, TRUST_FIRST)]
    assert early.trust - TRUST_Z * early.spread >= 0.2 and early.to_dict()["spread"] > 0
    encoded.clear()  # a ramp around the trust: never settled, the whole sample is measured
    reports.clear()
    near = measure_trust(*arguments, ramp=(full.trust - 0.01, full.trust + 0.01), progress=lambda *r: reports.append(r))
    assert near.images == TRUST_IMAGES and len(encoded) == 6 * TRUST_IMAGES
    assert [done for _, done, _ in reports] == [0, *range(TRUST_FIRST, TRUST_IMAGES + 1, 16), TRUST_IMAGES]


def test_a_single_sampled_picture_stores_no_spread(monkeypatch):
    """One picture leaves the spread unknown (infinite to settled, which then never stops):
    the manifest keeps none rather than a value JSON cannot hold."""
    arguments, _ = _sequential_library(monkeypatch, know_their_boxes=True)
    found = measure_trust(*arguments[:2], 1, *arguments[3:], ramp=(0.1, 0.2))
    assert found.images == 1 and found.spread is None and "spread" not in found.to_dict()
    json.dumps(found.to_dict(), allow_nan=False)


def test_regions_that_know_nothing_stop_below_the_ramp(monkeypatch):
    arguments, _ = _sequential_library(monkeypatch, know_their_boxes=False)
    found = measure_trust(*arguments, ramp=(0.1, 0.2))
    assert found.images < TRUST_IMAGES and found.trust + TRUST_Z * found.spread <= 0.1
    assert region_weight(found, 0.1, 0.2) == 0.0
