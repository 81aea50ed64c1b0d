"""Counting and negation (search/count.py, and the query, fuse and results stages around it):
instances against a slow written-out reference, the count term, absence, the JSON, and plain
queries ranking exactly as they did."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmosearch.config import SearchConfig
from harmosearch.model.quantities import Count
from harmosearch.search.count import PresenceRule, Tally, count_distance, find_instances, presence_rule, tally
from harmosearch.search.fuse import fuse, fused_scores, negatives_term
from harmosearch.search.query import encode_query
from harmosearch.search.score import RegionTable

from .fakes import DIM, FakeEncoder, concept, unit
from .test_search import open_fake


def slow_instances(table, image, vector, bar, overlap, centres=False, holds=lambda r: True):
    """The instances of one lexeme in one image, written out: its regions but the whole image's
    that score at least `bar` (and that `holds`), best first (the first row on ties), each kept
    unless it overlaps a kept one by `overlap` of the smaller box (or, with `centres`, one of
    the two boxes holds the other's centre)."""
    rows = [r for r in range(table.start[image], table.start[image + 1]) if table.scales[r] < 1.0]
    scored = sorted((-float(table.vectors[r] @ vector), r) for r in rows)
    kept = []
    for negative, r in scored:
        if -negative < bar:
            break
        if not holds(r):
            continue
        if all(
            overlap_of_smaller(table.boxes[r], table.boxes[k]) < overlap
            and not (
                centres
                and (holds_centre(table.boxes[r], table.boxes[k]) or holds_centre(table.boxes[k], table.boxes[r]))
            )
            for k in kept
        ):
            kept.append(r)
    best = max((float(table.vectors[r] @ vector) for r in rows), default=-1.0)
    return kept, best


def overlap_of_smaller(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / max(smaller, 1e-9)


def holds_centre(a, b):
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return a[0] <= cx <= a[2] and a[1] <= cy <= a[3]


def random_table(rng, n_images, dim=6, most=9):
    counts = rng.integers(0, most, size=n_images)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(start[-1])
    corners = rng.integers(0, 60, size=(total, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.integers(4, 40, size=(total, 2))], 1).astype(np.float32)
    scales = rng.choice([0.0, 0.25, 0.5, 1.0], size=total).astype(np.float32)
    vectors = unit(rng.standard_normal((total, dim)))
    return RegionTable(vectors, boxes, start, scales)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.floats(-0.5, 0.8),
    st.sampled_from([0.2, 0.5, 0.9]),
)
def test_instances_equal_a_written_out_reference(seed, bar, overlap):
    rng = np.random.default_rng(seed)
    table = random_table(rng, n_images=6)
    images = rng.permutation(6)[:4]
    lexemes = unit(rng.standard_normal((3, table.vectors.shape[1])))
    found, rows, best = find_instances(table, images, lexemes, bar, overlap)
    for c, image in enumerate(images):
        for j, vector in enumerate(lexemes):
            kept, top = slow_instances(table, image, vector, bar, overlap)
            assert found[c, j] == len(kept)
            shown = rows[c, j][rows[c, j] >= 0]
            assert list(shown) == kept[: len(shown)] and len(shown) == min(len(kept), rows.shape[2])
            assert best[c, j] == pytest.approx(top, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(-0.3, 0.5), st.sampled_from([0.2, 0.5, 0.9]), st.sampled_from([0.2, 0.5]))
def test_instances_with_rivals_and_centres_equal_the_reference(seed, bar, overlap, share):
    """A region holds a lexeme's thing only when softmax over the lexeme and its rivals, at the
    model's temperature, gives the lexeme at least `share`; halves of one object are one."""
    from harmosearch.search.contrast import Contrast

    rng = np.random.default_rng(seed)
    table = random_table(rng, n_images=5)
    images = np.arange(5)
    lexemes = unit(rng.standard_normal((2, table.vectors.shape[1])))
    rivals = unit(rng.standard_normal((4, table.vectors.shape[1])))
    keep = np.array([[True, True, False, True], [False, True, True, False]])
    contrast = Contrast(rivals, keep, 5.0, 0.1)
    found, rows, _ = find_instances(table, images, lexemes, bar, overlap, contrast, share, centres=True)

    def holds(j):
        def share_of(r):
            x = table.vectors[r]
            mine = np.exp(5.0 * float(x @ lexemes[j]))
            others = sum(np.exp(5.0 * float(x @ rivals[k])) for k in range(4) if keep[j, k])
            return mine / (mine + others) >= share - 1e-6

        return share_of

    for c, image in enumerate(images):
        for j, vector in enumerate(lexemes):
            kept, _ = slow_instances(table, image, vector, bar, overlap, centres=True, holds=holds(j))
            assert found[c, j] == len(kept)
            assert list(rows[c, j][rows[c, j] >= 0]) == kept[: rows.shape[2]]


def test_separate_objects_count_and_windows_of_one_object_do_not():
    vector = unit(np.ones(4))
    boxes = [
        (0, 0, 100, 100),  # the whole image: never an instance
        (10, 10, 30, 30),  # object 1
        (8, 8, 34, 34),  # a window around object 1
        (60, 60, 80, 80),  # object 2
        (62, 5, 70, 12),  # a region that does not hold the thing
    ]
    scales = [1.0, 0.0, 0.25, 0.0, 0.0]
    vectors = unit(np.array([[1, 1, 1, 1], [1, 1, 1, 1.1], [1, 1, 1, 1.2], [1, 1, 1.1, 1], [-1, 1, -1, 1]], float))
    table = RegionTable(vectors, np.array(boxes, np.float32), np.array([0, 5]), np.array(scales, np.float32))
    found, rows, _ = find_instances(table, np.array([0]), vector[None], 0.9, 0.5)
    assert found[0, 0] == 2
    assert set(rows[0, 0][rows[0, 0] >= 0]) in ({1, 3}, {2, 3})


def test_with_segments_only_no_window_is_an_instance():
    """search.count_segments: a window (0 < scale < 1) that straddles two objects, and one that
    covers an object scoring best there, are never instances; segments and user boxes are."""
    vector = unit(np.ones(4))
    boxes = [
        (0, 0, 100, 100),  # the whole image
        (5, 5, 60, 60),  # a window straddling objects 1 and 2, the best score
        (10, 10, 30, 30),  # object 1, a segment
        (40, 40, 58, 58),  # object 2, a user box
        (8, 8, 34, 34),  # a window around object 1
    ]
    scales = [1.0, 0.5, 0.0, -1.0, 0.25]
    vectors = unit(np.array([[1, 1, 1, 1], [1, 1, 1, 1.0], [1, 1, 1, 1.1], [1, 1, 1.1, 1], [1, 1, 1, 1.05]], float))
    table = RegionTable(vectors, np.array(boxes, np.float32), np.array([0, 5]), np.array(scales, np.float32))
    found, rows, _ = find_instances(table, np.array([0]), vector[None], 0.9, 0.5)
    assert found[0, 0] == 1 and rows[0, 0, 0] == 1  # the straddling window hides both objects
    found, rows, _ = find_instances(table, np.array([0]), vector[None], 0.9, 0.5, segments_only=True)
    assert found[0, 0] == 2 and set(rows[0, 0][rows[0, 0] >= 0]) == {2, 3}
    windows_alone = RegionTable(
        table.vectors[[0, 1, 4]], table.boxes[[0, 1, 4]], np.array([0, 3]), np.array([1, 0.5, 0.25])
    )
    found, _, _ = find_instances(windows_alone, np.array([0]), vector[None], 0.9, 0.5, segments_only=True)
    assert found[0, 0] == 1  # an index without segments still counts by its windows


def test_count_distance_prefers_the_number_asked_then_the_nearer_on_a_log_scale():
    found = np.array([[0], [1], [2], [3], [4], [6]])
    two = count_distance(found, np.array([2.0]), np.array([2.0]))[:, 0]
    assert two[2] == 0.0
    assert two[3] < two[1] < two[0]  # two prefers three over one over none
    assert two[4] < two[5]
    assert two[1] == pytest.approx(np.log(2.5 / 1.5))
    at_least_two = count_distance(found, np.array([2.0]), np.array([np.inf]))[:, 0]
    assert list(at_least_two[2:]) == [0.0] * 4 and at_least_two[1] > 0


def test_terms_are_the_count_distance_and_the_presence_of_negated_lexemes_in_spread_units():
    t = Tally(
        found=np.array([[2, 0], [3, 0]]),
        instances=np.full((2, 2, 16), -1),
        presence=np.array([[0.9, 0.25], [0.9, 0.75]], np.float32),
        low=np.array([2.0, 0.0]),
        high=np.array([2.0, np.inf]),
        counted=np.array([True, False]),
        negated=np.array([False, True]),
        spread=0.1,
    )
    counts = t.count_terms(2.0)
    assert counts[0].tolist() == [0.0, 0.0] and counts[1, 1] == 0.0
    assert counts[1, 0] == pytest.approx(0.1 * 2.0 * np.log(3.5 / 2.5))
    assert t.absence_terms(4.0) == pytest.approx([0.1 * 4.0 * 0.25, 0.1 * 4.0 * 0.75])


def test_presence_rises_through_the_null_and_the_rule_reads_the_calibration():
    from harmosearch.search.calibration import Calibration

    null = np.linspace(0.2, 0.6, 101)
    calibration = Calibration(null_max=tuple((float(v), float(v) + 0.1) for v in null), alphas=(0.0, 1.0))
    rule = presence_rule(calibration, SearchConfig(count_quantile=0.75), alpha=0.5)
    assert rule.calibrated and rule.bar == pytest.approx(0.5)
    assert rule.spread == pytest.approx(np.std(null + 0.05))
    presence = rule.presence(np.array([0.0, 0.3, 0.4, 0.5, 1.0]))
    assert presence[2] == pytest.approx(0.5, abs=1e-3)
    assert np.all(np.diff(presence) > 0) and presence[0] < 0.01 and presence[-1] > 0.99
    fallback = presence_rule(None, SearchConfig(), alpha=0.5)
    assert not fallback.calibrated


# Images for counting and negation on the fake encoder: separate boxes of known things, each the
# one region of its object, a window or a segment in turn (test_search.make_data): every box
# fits its object, so windows count too (count_segments off; open_fake's search settings).
EVERY_BOX = SearchConfig(box_margin=0.0, window_penalty=0.0, count_segments=False)
COUNTING_SCENES = [
    [("red circle", (0, 0, 20, 20))],
    [("red circle", (0, 0, 20, 20)), ("red circle", (40, 40, 60, 60))],
    [("red circle", (0, 0, 20, 20)), ("red circle", (40, 40, 60, 60)), ("red circle", (80, 0, 100, 20))],
    [("red circle", (0, 0, 20, 20)), ("blue square", (60, 60, 90, 90))],
    [("green ring", (0, 0, 20, 20))],
]


@pytest.mark.parametrize(("query", "first"), [("one red circle", 0), ("two red circles", 1), ("three red circles", 2)])
def test_a_count_ranks_the_image_with_that_many_first(tmp_path, query, first):
    index = open_fake(tmp_path, scenes=COUNTING_SCENES, search=EVERY_BOX)
    response = index.search(query, k=5)
    assert response.results[0].path == f"img{first:03d}.png"
    counted = {r.path: r.lexemes[0].count for r in response.results}
    assert counted == {"img000.png": 1, "img001.png": 2, "img002.png": 3, "img003.png": 1, "img004.png": 0}
    assert any("no calibration" in w for w in response.warnings)


def test_a_negated_lexeme_scores_its_absence(tmp_path):
    index = open_fake(tmp_path, scenes=COUNTING_SCENES, search=EVERY_BOX)
    response = index.search("a red circle without a blue square", k=5)
    ranked = [r.path for r in response.results]
    assert ranked.index("img003.png") > max(ranked.index(p) for p in ("img000.png", "img001.png", "img002.png"))
    square = {r.path: r.lexemes[1] for r in response.results}
    assert square["img003.png"].negated and square["img003.png"].presence > 0.9
    assert square["img000.png"].presence < 0.1


def test_the_json_gives_counts_instances_and_absences_only_when_asked(tmp_path):
    index = open_fake(tmp_path, scenes=COUNTING_SCENES, search=EVERY_BOX)
    counted = index.search("two red circles", k=5).results[0].to_dict()["lexemes"][0]
    assert counted["count"] == 2 and counted["instances"] == [[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 60.0, 60.0]]
    negated = index.search("a red circle without a blue square", k=5).to_dict()["results"][0]["lexemes"]
    assert "count" not in negated[0] and "negated" not in negated[0]
    assert negated[1]["negated"] is True and 0 <= negated[1]["presence"] <= 1
    plain = index.search("red circle", k=5).to_dict()["results"][0]["lexemes"][0]
    assert set(plain) == {"text", "score", "box"}


def test_a_negated_query_embeds_the_text_without_the_negation():
    encoder = FakeEncoder()
    query = encode_query(encoder, "a red circle without a blue square")
    assert query.negated == (False, True) and query.counts == (None, None)
    assert np.allclose(query.global_vector, encoder.encode_queries(["a red circle"])[0].global_vector.numpy())
    assert list(query.wanted) == [0]
    relation = encode_query(encoder, "no blue square on a red circle")
    assert relation.relations == []  # the relation touches a negated lexeme: dropped
    counted = encode_query(encoder, "two red circles")
    assert counted.counts == (Count(2, 2),) and counted.embedded_texts == ["red circle"]
    assert np.allclose(counted.lexeme_vectors[0], concept("red circle"))


PLAIN_QUERIES = [
    "red circle",
    "a red circle",
    "red circles",
    "red circle near a blue star",
    "blue star to the left of a red circle",
    "green ring and yellow square",
    "a yellow square above a green ring",
]


@pytest.mark.parametrize("text", PLAIN_QUERIES)
def test_plain_queries_rank_exactly_as_the_formula_without_counting(tmp_path, text):
    """A query without a count or a negation: nothing counted, and the ranking the fusion of its
    parts as before (fuse, less the --not phrases), whatever the counting settings."""
    index = open_fake(tmp_path)
    query = encode_query(index.encoder, text)
    assert not query.quantified and query.counts == () and query.negated == ()
    # No rivals (the reference below scores the plain region table): counting is what is tested.
    s = SearchConfig(box_margin=0.0, window_penalty=0.0, contrast=0.0)
    heavy = replace(s, count_weight=9.0, negation_weight=9.0, count_quantile=0.1, count_overlap=0.1)
    heavy = replace(heavy, count_segments=not s.count_segments, count_centres=not s.count_centres)
    plain = index.search(text, k=10, settings=s, negatives=("yellow square",))
    other = index.search(text, k=10, settings=heavy, negatives=("yellow square",))
    assert [(r.path, r.score) for r in plain.results] == [(r.path, r.score) for r in other.results]
    assert [r.to_dict() for r in plain.results] == [r.to_dict() for r in other.results]
    from harmosearch.search.calibration import in_cosines
    from harmosearch.search.score import score_candidates

    s = in_cosines(s, index.calibration)  # its amounts in the index's cosines, as the query takes them
    images = np.arange(index.n_images)
    negative = encode_query(index.encoder, text, negatives=("yellow square",))
    scored = score_candidates(index.regions, index.regions, index.reader.global_vectors, images, negative, s)
    assert scored.tally is None
    alpha = s.alpha_for(scored.n_lexemes)
    before = fuse(scored.global_scores, scored.match.scores, alpha, scored.match.relation_scores, s.relation_weight)
    before = before - negatives_term(scored.negative_global, scored.negative_regions, alpha)
    assert np.array_equal(fused_scores(scored, s), before)
    ranked = {r.path: r.score for r in plain.results}
    assert all(
        ranked[f"img{i:03d}.png"] == pytest.approx(float(before[i]), abs=0)
        for i in images
        if f"img{i:03d}.png" in ranked
    )


def test_tally_of_a_query_without_counted_lexemes_is_zero():
    rng = np.random.default_rng(0)
    table = random_table(rng, 3)
    rule = PresenceRule(0.0, 0.0, 1.0, 0.1, True)
    t = tally(table, np.arange(3), unit(rng.standard_normal((2, 6))), (None, None), (False, False), rule, 0.5)
    assert not t.found.any() and not t.presence.any()
    assert not t.count_terms(1.0).any() and t.absence_terms(1.0).tolist() == [0.0, 0.0, 0.0]


def test_instances_need_no_dense_table():
    """Images without regions count nothing and have no best region."""
    table = RegionTable(np.zeros((0, DIM), np.float32), np.zeros((0, 4), np.float32), np.array([0, 0, 0]))
    found, rows, best = find_instances(table, np.array([0, 1]), unit(np.ones((1, DIM))), 0.0, 0.5)
    assert found.tolist() == [[0], [0]] and (rows == -1).all() and best.tolist() == [[-1.0], [-1.0]]


def test_counting_scenes_hold_the_copies_they_say(tmp_path):
    from collections import Counter

    from harmosearch.bench.datasets import load_scene_folder
    from harmosearch.synth.counting import COUNTED, MAX_COUNT, count_query, counting_scene, generate_counting

    data = generate_counting(tmp_path / "a", 36, seed=5)
    assert generate_counting(tmp_path / "b", 36, seed=5) == data  # a pure function of the seed
    asked = Counter((c["phrase"], c["count"]) for c in data["counts"])
    assert set(asked) == {(thing, n) for thing in COUNTED for n in range(1, MAX_COUNT + 1)}  # each once
    for c in data["counts"]:
        held = [a for a in data["annotations"] if a["image_id"] == c["image_id"] and a["phrase"] == c["phrase"]]
        assert len(held) == c["count"]
        assert all(18 <= max(a["bbox"][2:]) <= 62 for a in held)
    bench = load_scene_folder(tmp_path / "a")
    assert bench.counts[7] == (7, COUNTED[1], 2)
    scene, thing, count = counting_scene(5, 7)
    assert (thing, count) == (COUNTED[1], 2) and len(scene.objects) >= 2
    assert count_query("red circle", 1) == "one red circle" and count_query("white cross", 3) == "three white crosses"


def test_negation_pairs_differ_by_the_negated_thing_alone(tmp_path):
    from harmosearch.bench.datasets import load_scene_folder
    from harmosearch.model.lexemes import parse
    from harmosearch.synth.counting import generate_negation_pairs, negation_pair

    data = generate_negation_pairs(tmp_path, 10, seed=3)
    for pair in data["negations"]:
        with_it, without = ([a for a in data["annotations"] if a["image_id"] == i] for i in pair["images"])
        assert [a["phrase"] for a in with_it if a["phrase"] != pair["negated"]] == [a["phrase"] for a in without]
        assert pair["negated"] in [a["phrase"] for a in with_it] and pair["kept"] in [a["phrase"] for a in without]
        parsed = parse(pair["query"])
        assert [(lex.text, lex.negated) for lex in parsed.lexemes if lex.negated] == [(pair["negated"], True)]
    first, second, *_ = negation_pair(3, 0)
    assert first.objects[:1] + first.objects[2:] == second.objects and first.background == second.background
    assert load_scene_folder(tmp_path).negations[4]["images"] == [8, 9]


def test_photo_world_scenes_are_the_flat_ones_on_a_photograph(tmp_path):
    from harmosearch.synth.counting import generate_counting, generate_negation_pairs

    def objects(data):
        return [(a["image_id"], a["phrase"], a["bbox"]) for a in data["annotations"]]

    flat = generate_counting(tmp_path / "flat", 12, seed=5)
    photo = generate_counting(tmp_path / "photo", 12, seed=5, world="photo", photos="val")
    assert photo["counts"] == flat["counts"] and photo["info"]["world"] == "photo"
    assert all(image["file_name"].endswith(".jpg") and image["world"] == "photo" for image in photo["images"])
    assert {image["background"] for image in photo["images"]} <= {"rocket", "immunohistochemistry", "clock", "cell"}
    # The same objects where they were; each box within a pixel of the flat one (JPEG and grain).
    for (i, phrase, box), (j, flat_phrase, flat_box) in zip(objects(photo), objects(flat), strict=True):
        assert (i, phrase) == (j, flat_phrase) and np.abs(np.subtract(box, flat_box)).max() <= 1
    pairs = generate_negation_pairs(tmp_path / "pairs", 4, seed=3, world="photo", photos="test")
    flat_pairs = generate_negation_pairs(tmp_path / "flat-pairs", 4, seed=3)
    assert pairs["negations"] == flat_pairs["negations"]
    for pair in pairs["negations"]:
        first, second = (pairs["images"][i] for i in pair["images"])
        assert first["background"] == second["background"]  # one cut of one photograph for both


def test_counting_and_negation_sets_have_seeds_of_their_own(tmp_path):
    from harmosearch.bench import datasets
    from harmosearch.errors import DataError

    tables = [datasets.OBJECT_SEEDS, datasets.WORLD_SEEDS, datasets.WORLD_PAIR_SEEDS]
    tables += [datasets.COUNTING_SEEDS, datasets.NEGATION_SEEDS, {"pairs": datasets.PAIR_SEEDS}]
    seeds = [seed for table in tables for splits in table.values() for seed in splits.values()]
    assert len(seeds) == len(set(seeds))
    with pytest.raises(DataError, match="drop --objects"):
        datasets.load_bench_set("synthetic", None, tmp_path, n=6, task="counting", objects="small")


def counted_body():
    """The JSON of a search with a counted and a negated lexeme, as a server or to_dict gives it."""
    lexemes = [
        {
            "text": "red circles",
            "score": 0.61,
            "box": [1, 2, 30, 40],
            "count": 2,
            "instances": [[1, 2, 30, 40], [50, 50, 70, 70]],
        },
        {"text": "blue square", "score": 0.2, "box": [0, 0, 90, 90], "negated": True, "presence": 0.125},
    ]
    result = {"rank": 1, "path": "a.png", "score": 0.5, "global_score": 0.4, "lexemes": lexemes, "relations": []}
    return {
        "query": "two red circles without a blue square",
        "lexemes": ["red circles", "blue square"],
        "results": [result],
        "index": "idx",
    }


def test_the_results_table_shows_the_count_and_the_presence(monkeypatch):
    import io

    from rich.console import Console

    from harmosearch.cli import query

    buffer = io.StringIO()
    monkeypatch.setattr(query, "out", Console(file=buffer, width=200, markup=False))
    query.print_results(counted_body())
    table = buffer.getvalue()
    assert "0.610 (1,2,30,40) x2" in table
    assert "no blue square: presence" in table and "0.12" in table


def test_annotated_pictures_draw_every_instance_and_name_each_absence():
    from PIL import Image

    from harmosearch.annotate import draw_result
    from harmosearch.search.results import LexemeMatch, Result

    counted = LexemeMatch("red circles", 0.6, (10, 10, 40, 40), count=2, instances=((10, 10, 40, 40), (60, 60, 90, 90)))
    negated = LexemeMatch("blue square", 0.2, (0, 0, 100, 100), negated=True, presence=0.1)
    result = Result(1, 0, "a.png", None, 0.5, 0.4, (counted, negated), 100, 100)
    picture = Image.new("RGB", (100, 100), (128, 128, 128))
    drawn = draw_result(result, picture)
    assert drawn.height > drawn.width  # a strip below names the absence
    pixels = np.asarray(drawn)
    scale = drawn.width / 100
    top, middle = round(60 * scale), round(75 * scale)
    assert (pixels[top - 2 : top + 3, middle] != 128).any()  # the second instance's box
    assert (pixels[round(50 * scale), round(99 * scale) - 3 :] == 128).all()  # no box for the absence
