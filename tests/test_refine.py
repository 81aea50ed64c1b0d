"""The query-time box search (search/box_search.py), crop scoring (search/crops.py) and the rerank
stage against slow, obvious references."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_align

from harmosearch.model.encoder import vision_forward
from harmosearch.regions.proposals import from_grid, to_grid
from harmosearch.search.box_search import (
    RATIO,
    BoxSearch,
    Sides,
    best_boxes,
    candidate_boxes,
    lattice_pool,
    pool_candidates,
    search_boxes,
)
from harmosearch.search.calibration import in_cosines
from harmosearch.search.crops import crop_scores, crop_square
from harmosearch.search.query import encode_query

from .conftest import TEST_MODEL


def boxes_by_loops(height, width, low, high):
    """Every square box of sides low * RATIO**i <= min(high, height, width), at every quarter
    side that keeps it inside the map, side by side, row by row."""
    out = []
    side = low
    while side <= min(high, height, width) + 1e-9:
        y = 0.0
        while y + side <= height + 1e-6:
            x = 0.0
            while x + side <= width + 1e-6:
                out.append([x, y, x + side, y + side])
                x += side / 4
            y += side / 4
        side *= RATIO
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


@pytest.mark.parametrize(
    ("height", "width", "low", "high"), [(14, 14, 3.0, 14.0), (7, 9, 2.0, 5.5), (28, 28, 2.0, 6.0)]
)
def test_candidates_are_every_quarter_step_square(height, width, low, high):
    got = candidate_boxes((height, width), Sides(low, high))
    assert torch.allclose(got, boxes_by_loops(height, width, low, high), atol=1e-4)


@pytest.mark.parametrize(("height", "width"), [(14, 14), (5, 8)])
def test_lattice_pooling_is_roi_align_of_each_box(height, width):
    dense = torch.randn(2, 6, height, width, generator=torch.Generator().manual_seed(0))
    sides = Sides(1.0, float(min(height, width)))
    boxes = candidate_boxes((height, width), sides)
    reference = roi_align(dense, [boxes, boxes], output_size=1, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    reference = F.normalize(reference.flatten(1), dim=-1).view(2, len(boxes), 6)
    assert torch.allclose(pool_candidates(dense, sides), reference, atol=1e-5)
    side = sides.values(min(height, width))[2]
    one = lattice_pool(dense, side)
    first = roi_align(dense, [torch.tensor([[side / 4, 0.0, side / 4 + side, side]])] * 2, 1, 1.0, 2, True)
    assert torch.allclose(one[:, :, 0, 1], first.flatten(1), atol=1e-5)


def best_by_loop(vectors, boxes, lexeme, seed, margin):
    """One lexeme: score every box, keep those whose centre is inside the seed (all when none
    is, or without a seed), then the largest within margin of the best, the first on ties."""
    scores = [float(v @ lexeme) for v in vectors]
    allowed = list(range(len(boxes)))
    if not math.isnan(seed[0]):
        inside = [
            i
            for i, (x0, y0, x1, y1) in enumerate(boxes.tolist())
            if seed[0] <= (x0 + x1) / 2 <= seed[2] and seed[1] <= (y0 + y1) / 2 <= seed[3]
        ]
        allowed = inside or allowed
    best = max(scores[i] for i in allowed)
    pick, area = None, -1.0
    for i in allowed:
        x0, y0, x1, y1 = boxes[i].tolist()
        if scores[i] >= best - margin and (x1 - x0) * (y1 - y0) > area + 1e-6:
            pick, area = i, (x1 - x0) * (y1 - y0)
    return boxes[pick], scores[pick]


def test_best_boxes_equals_a_loop_over_boxes():
    rng = torch.Generator().manual_seed(1)
    boxes = [candidate_boxes((6, 6), Sides(1.0, 6.0)) / 6, candidate_boxes((12, 12), Sides(2.0, 3.0)) / 12]
    vectors = [F.normalize(torch.randn(len(b), 8, generator=rng), dim=-1) for b in boxes]
    lexemes = F.normalize(torch.randn(5, 8, generator=rng), dim=-1)
    nan = float("nan")
    seeds = torch.tensor(
        [[nan] * 4, [0.0, 0.0, 0.5, 0.5], [0.6, 0.1, 0.9, 0.4], [0.99, 0.99, 1.0, 1.0], [0.2, 0.2, 0.8, 0.8]]
    )
    for margin in (0.0, 0.05, 0.3):
        got_boxes, got_scores = best_boxes(vectors, boxes, lexemes, seeds, margin)
        every_box, every_vector = torch.cat(boxes), torch.cat(vectors)
        for j in range(5):
            box, score = best_by_loop(every_vector, every_box, lexemes[j], seeds[j].tolist(), margin)
            assert torch.equal(got_boxes[j], box) and got_scores[j] == pytest.approx(score, abs=1e-6)


def test_box_search_splits_sides_between_the_maps():
    search = BoxSearch(input_size=112, patch=8, scale=2.0)
    assert search.fine_size == 224
    coarse, fine = search.sides(14)
    assert (coarse.low, coarse.high) == (3.0, 14.0) and (fine.low, fine.high) == (2.0, 6.0)
    assert BoxSearch(112, 8, 1.55).fine_size == 176  # whole patches
    coarse, fine = BoxSearch(112, 8, 1.0).sides(14)
    assert fine is None and (coarse.low, coarse.high) == (2.0, 14.0)


def test_search_boxes_equals_encoding_and_searching_each_image_alone(test_encoder):
    """The batched path (two passes per batch, lattice pooling, seeds, pixels) against one image at
    a time: its pixels resized by open_clip's transform for each size, one forward each, then every
    candidate box pooled by roi_align and picked by the loop above."""
    from harmosearch.model.clip_adapter import eval_transform

    encoder = test_encoder
    rng = np.random.default_rng(0)
    images = []
    for width, height in ((40, 40), (64, 48), (30, 50)):
        pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        images.append((Image.fromarray(pixels), width, height))
    image_of = np.array([0, 0, 1, 2, 2])
    lexemes = F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(2)), dim=-1).numpy()
    seeds = np.array([[np.nan] * 4, [0, 0, 20, 20], [30, 10, 60, 40], [np.nan] * 4, [5, 25, 25, 50]], np.float32)
    boxes, scores = search_boxes(encoder, images, image_of, lexemes, seeds, scale=2.0, margin=0.02)
    resize = encoder.config.resize
    for r, image_index in enumerate(image_of):
        image, width, height = images[image_index]
        all_boxes, all_vectors = [], []
        for size, low, high in ((32, 3.0, 4.0), (64, 2.0, 6.0)):
            pixels = eval_transform(encoder.model, resize, size)(image)[None]
            with torch.no_grad():
                _, dense = vision_forward(encoder.model, pixels, encoder.config.dense_mode)
            grid = dense.shape[-1]
            grid_boxes = boxes_by_loops(grid, grid, low, high)
            pooled = roi_align(dense, [grid_boxes], 1, 1.0, 2, True).flatten(1)
            all_vectors.append(F.normalize(pooled, dim=-1))
            all_boxes.append(from_grid(grid_boxes, width, height, (grid, grid), size, resize))
        seed = seeds[r].tolist()
        box, score = best_by_loop(
            torch.cat(all_vectors), torch.cat(all_boxes), torch.from_numpy(lexemes[r]), seed, 0.02
        )
        assert np.allclose(boxes[r], box.numpy(), atol=1e-3) and scores[r] == pytest.approx(score, abs=1e-5)


def test_seeds_are_given_in_pixels(test_encoder):
    """A seed in pixels maps to the model input as regions do (to_grid), so a seed covering the
    right half of a wide image keeps the box's centre there."""
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, size=(40, 80, 3), dtype=np.uint8))
    lexeme = F.normalize(torch.randn(1, 32, generator=torch.Generator().manual_seed(4)), dim=-1).numpy()
    seed = np.array([[40, 0, 80, 40]], np.float32)
    boxes, _ = search_boxes(test_encoder, [(image, 80, 40)], np.array([0]), lexeme, seed, scale=2.0, margin=0.0)
    assert 40 <= (boxes[0, 0] + boxes[0, 2]) / 2 <= 80
    assert torch.allclose(
        to_grid(torch.tensor([[40.0, 0, 80, 40]]), 80, 40, (1, 1), 32, "squash"), torch.tensor([[0.5, 0, 1, 1]])
    )


def crop_by_hand(image, box, width, height, margin=0.2):
    """The square around `box` (pixels of the width x height original), `margin` wider than its
    longer side, cut out of `image` (decoded at another size) onto a black canvas."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + margin)
    sx, sy = image.width / width, image.height / height
    left, top = round(((x0 + x1) / 2 - side / 2) * sx), round(((y0 + y1) / 2 - side / 2) * sy)
    right = max(round(((x0 + x1) / 2 - side / 2) * sx + side * sx), left + 1)
    bottom = max(round(((y0 + y1) / 2 - side / 2) * sy + side * sy), top + 1)
    size = (right - left, bottom - top)
    canvas = Image.new("RGB", size)
    canvas.paste(image, (-left, -top))
    return canvas


def test_crop_square_by_hand():
    # a 20 x 10 box: a square of 24 around its centre (20, 25); at half scale, half of it
    assert crop_square((10, 20, 30, 30), 1.0, 1.0, 0.2) == (8, 13, 32, 37)
    assert crop_square((10, 20, 30, 30), 0.5, 0.5, 0.2) == (4, 6, 16, 18)
    assert crop_square((0, 0, 10, 10), 1.0, 1.0, 1.0) == (-5, -5, 15, 15)  # past the edges
    assert crop_square((5, 5, 5, 5), 1.0, 1.0, 0.2) == (5, 5, 6, 6)  # an empty box still cuts a pixel


def test_crop_scores_equal_cutting_and_encoding_each_box_alone(test_encoder, monkeypatch):
    """Crops in batches (of 2 here), from pictures decoded smaller than the original, some
    reaching past the edges, against each box cut out by hand onto black and encoded alone."""
    monkeypatch.setattr(test_encoder, "config", replace(test_encoder.config, batch_size=2))
    rng = np.random.default_rng(5)
    pictures = []
    for (width, height), (full_w, full_h) in (((60, 40), (120, 80)), ((50, 50), (50, 50))):
        pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        pictures.append((Image.fromarray(pixels), full_w, full_h))
    image_of = np.array([0, 1, 0, 1, 1])
    boxes = np.array(
        [[10, 10, 50, 30], [0, 0, 20, 45], [100, 60, 120, 80], [20, 20, 26, 24], [5, 30, 45, 50]], np.float32
    )
    texts = F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(6)), dim=-1).numpy()
    got = crop_scores(test_encoder, pictures, image_of, boxes, texts)
    for r, i in enumerate(image_of):
        image, width, height = pictures[i]
        crop = crop_by_hand(image, boxes[r].tolist(), width, height)
        vector = test_encoder.encode_images([crop])[0][0].numpy()
        assert got[r] == pytest.approx(float(vector @ texts[r]), abs=1e-5)


@pytest.fixture(scope="module")
def scene_index(scenes, tmp_path_factory, test_encoder):
    from harmosearch.config import load_config
    from harmosearch.indexing import build_index

    path = tmp_path_factory.mktemp("refine") / "index"
    # Regions fully weighed whatever the random model's measured trust (tests/test_trust.py): the
    # references below rank by the plain formulas.
    untrusted = {"search.trust_low": 0.0, "search.trust_high": 0.0}
    config = load_config(
        overrides={"encoder.model": "harmo-test-vit:random", "encoder.device": "cpu", "index.workers": 0, **untrusted}
    )
    build_index(scenes / "images", path, config, encoder=test_encoder)
    return path, config


def test_without_rerank_search_shows_the_refined_boxes_and_keeps_the_ranking(scene_index, test_encoder):
    """With refine on and rerank 0, each result's boxes are search_boxes of its picture near the
    indexed boxes (the ones shown with refine off); ranks and scores do not move."""
    from harmosearch.search import Index

    path, config = scene_index
    index = Index(path, config, encoder=test_encoder)
    settings = replace(config.search, rerank=0)
    plain = index.search("a red circle and a blue star", k=4, refine=False, settings=settings)
    refined = index.search("a red circle and a blue star", k=4, refine=True, settings=settings)
    assert [(r.path, r.score) for r in refined.results] == [(r.path, r.score) for r in plain.results]
    lexemes = encode_query(index.encoder, "a red circle and a blue star").lexeme_vectors
    lexemes = np.asarray(lexemes, dtype=np.float32)
    assert len(plain.results) == 4 and len(lexemes) == 2 and not refined.warnings
    # the box margin in the index's cosines, as the query takes it (search.calibration.in_cosines)
    scale, margin = config.search.refine_scale, in_cosines(config.search, index.calibration).box_margin
    for before, after in zip(plain.results, refined.results, strict=True):
        picture = index.picture(before.image_id)
        seeds = np.array([m.box for m in before.lexemes], np.float32)
        boxes, _ = search_boxes(test_encoder, [picture], np.zeros(2, np.int64), lexemes, seeds, scale, margin)
        assert np.allclose([m.box for m in after.lexemes], boxes, atol=1e-3)
        assert [m.score for m in after.lexemes] == [m.score for m in before.lexemes]


def indexed_plain_scores(index, result, lexemes, related, contrast=None):
    """A result's indexed lexeme scores without the window penalty, written out: a lexeme in a
    relation scores the region of the box it shows, any other its image's best region; with a
    contrast, each region's score gains its term (a written-out softmax over the rivals)."""
    from .test_contrast import slow_term

    rows = range(int(index.regions.start[result.image_id]), int(index.regions.start[result.image_id + 1]))
    scores = []
    for j, (lexeme, match) in enumerate(zip(lexemes, result.lexemes, strict=True)):
        sims = {}
        for r in rows:
            region = np.asarray(index.regions.vectors[r], np.float32)
            sims[r] = float(region @ lexeme)
            if contrast is not None:
                rivals = contrast.vectors[contrast.keep[j]]
                sims[r] += slow_term(region, lexeme, rivals, contrast.temperature, contrast.weight)
        if related:
            (row,) = [r for r in rows if np.allclose(index.regions.boxes[r], match.box)][:1]
            scores.append(sims[row])
        else:
            scores.append(max(sims.values()))
    return np.array(scores, np.float32)


def reranked(index, encoder, plain, lexemes, s, unreadable=(), contrast=None, texts=(), search=True):
    """The plain ranking's results, each refined alone (or, if unreadable, kept as indexed, with
    the lexeme scores the window penalty leaves out, as refined ones are) and scored, with
    s.crop_weight, by its plain score + crop_weight * the mean over lexemes of the cosine between
    the hand-cut crop around its refined box, encoded alone, and the lexeme's text encoded alone
    (nothing for an unread picture); without `search` the indexed boxes are kept (and cropped)
    with their indexed scores; with crop_weight 0 by refine_alpha * global +
    (1 - refine_alpha) * (lexeme scores + relation part) / m, as fusion.py writes it out. Best
    first, ties by image id: (score, path, boxes, lexeme scores)."""
    out = []
    for result in plain:
        boxes = np.array([m.box for m in result.lexemes], np.float32)
        scores = indexed_plain_scores(index, result, lexemes, bool(result.relations), contrast)
        looks = []
        if result.image_id not in unreadable:
            where = np.zeros(len(lexemes), np.int64)
            picture = index.picture(result.image_id)
            if search:
                boxes, scores = search_boxes(
                    encoder, [picture], where, lexemes, boxes, s.refine_scale, s.box_margin, contrast
                )
            image, width, height = picture
            for box, text in zip(boxes, texts, strict=True):
                crop = encoder.encode_images([crop_by_hand(image, box.tolist(), width, height)])[0][0]
                looks.append(float(crop @ encoder.encode_texts([text])[0]))
        if s.crop_weight:
            score = result.score + s.crop_weight * (np.mean(looks) if looks else 0.0)
        else:
            relation_part = sum(s.relation_weight * (r.score - 0.5) for r in result.relations)
            score = s.refine_alpha * result.global_score + (1 - s.refine_alpha) * (scores.sum() + relation_part) / len(
                lexemes
            )
        out.append((-round(float(score), 5), result.image_id, result.path, boxes, scores))
    out.sort(key=lambda e: (e[0], e[1]))
    return [(-neg, path, boxes, scores) for neg, _, path, boxes, scores in out]


CASES = [
    ("a red circle and a blue star", "none", False),
    ("a red circle left of a blue star", "none", False),
    ("a red circle and a blue star", "second", False),
    ("a red circle left of a blue star", "all", False),
    ("a red circle and a blue star", "second", True),
    ("a red circle left of a blue star", "all", True),
]


@pytest.mark.parametrize(
    ("crop_weight", "boxes"),
    [(0.0, "on"), (0.7, "on"), (0.7, "off")],
)
@pytest.mark.parametrize(("text", "unreadable", "rivals"), CASES)
def test_rerank_orders_the_best_results_by_their_refined_scores(
    scene_index, test_encoder, monkeypatch, tmp_path, text, unreadable, rivals, crop_weight, boxes
):
    """With rerank N, the N best results of the plain ranking are each refined alone and
    reordered by one formula (reranked above: with crops, or as before them); the k shown are
    the best of them, with the refined boxes and lexeme scores. A result whose picture cannot be
    read keeps its indexed boxes and lexeme scores in that same formula. With rivals (a
    vocabulary file), every lexeme score carries the contrast's term, the unread ones' included."""
    from harmosearch.errors import DataError
    from harmosearch.search import Index

    path, config = scene_index
    index = Index(path, config, encoder=test_encoder)
    vocabulary = tmp_path / "rivals.txt"
    vocabulary.write_text("red circle\nblue star\nred star\nblue circle\ngreen ring\n")
    s = replace(
        config.search,
        rerank=6,
        refine_alpha=0.3,
        crop_weight=crop_weight,
        refine_boxes=boxes,
        contrast=0.5 if rivals else 0.0,
        vocabulary=str(vocabulary),
    )
    plain = index.search(text, k=6, refine=False, settings=s).results
    query = encode_query(index.encoder, text)
    lexemes = np.asarray(query.lexeme_vectors, dtype=np.float32)
    cosines = in_cosines(s, index.calibration)  # the amounts in the index's cosines, as the query takes them
    contrast = index.vocabularies.contrast(query.lexeme_texts, lexemes, s.vocabulary, cosines.contrast)
    assert (contrast is not None) == rivals and query.lexeme_texts == ["red circle", "blue star"]
    broken = {"none": set(), "second": {plain[1].image_id}, "all": {r.image_id for r in plain}}[unreadable]
    texts, search = query.lexeme_texts, boxes == "on"
    expected = reranked(index, test_encoder, plain, lexemes, cosines, broken, contrast, texts, search)
    readable = index.picture

    def picture(image_id, min_side=None):
        if image_id in broken:
            raise DataError("cannot decode image: broken")
        return readable(image_id, min_side)

    monkeypatch.setattr(index, "picture", picture)
    refined = index.search(text, k=3, refine=True, settings=s)
    assert len(plain) == 6 and len(refined.results) == 3
    assert "left of" not in text or all(len(r.relations) == 1 for r in refined.results)
    for rank, (result, (score, path, boxes, scores)) in enumerate(zip(refined.results, expected, strict=False), 1):
        assert (result.rank, result.path) == (rank, path)
        assert result.score == pytest.approx(score, abs=1e-4)
        assert np.allclose([m.box for m in result.lexemes], boxes, atol=1e-3)
        assert np.allclose([m.score for m in result.lexemes], scores, atol=1e-4)
    assert [w.split(" (")[0] for w in refined.warnings] == (
        [f"{len(broken)} of the best 6 results were not looked at again, their pictures unread"] if broken else []
    )


def test_refine_boxes_auto_keeps_the_indexed_boxes_at_high_detail():
    from harmosearch.config import SearchConfig

    auto, on, off = SearchConfig(), SearchConfig(refine_boxes="on"), SearchConfig(refine_boxes="off")
    assert [c.searches_boxes("normal") for c in (auto, on, off)] == [True, True, False]
    assert [c.searches_boxes("high") for c in (auto, on, off)] == [False, True, False]
    assert auto.refines_anything("high") and not replace(auto, crop_weight=0.0).refines_anything("high")
    assert not replace(auto, rerank=0).refines_anything("high") and replace(auto, rerank=0).refines_anything("normal")


def test_kept_boxes_without_crops_leave_search_as_it_was(scene_index, test_encoder, monkeypatch):
    """With the indexed boxes kept and nothing to reorder by (crop_weight 0, or rerank 0),
    --refine changes nothing and reads no picture."""
    from harmosearch.search import Index

    path, config = scene_index
    index = Index(path, config, encoder=test_encoder)
    plain = index.search("a red circle and a blue star", k=4, refine=False)

    def unread(image_id, min_side=None):
        raise AssertionError("no picture should be read")

    monkeypatch.setattr(index, "picture", unread)
    for s in (
        replace(config.search, refine_boxes="off", crop_weight=0.0),
        replace(config.search, refine_boxes="off", rerank=0),
    ):
        kept = index.search("a red circle and a blue star", k=4, refine=True, settings=s)
        assert [(r.path, r.score, r.lexemes) for r in kept.results] == [
            (r.path, r.score, r.lexemes) for r in plain.results
        ]
    # A numeric min_score still applies, as without --refine.
    bound = plain.results[1].score
    s = replace(config.search, refine_boxes="off", crop_weight=0.0, min_score=bound)
    cut = index.search("a red circle and a blue star", k=4, refine=True, settings=s).results
    assert [r.path for r in cut] == [r.path for r in plain.results if r.score >= bound] and len(cut) == 2


def test_without_rerank_unreadable_pictures_keep_their_indexed_boxes(scene_index, test_encoder, monkeypatch):
    from harmosearch.errors import DataError
    from harmosearch.search import Index

    path, config = scene_index
    index = Index(path, config, encoder=test_encoder)
    settings = replace(config.search, rerank=0)
    plain = index.search("a red circle", k=3, refine=False, settings=settings)

    def broken(image_id, min_side=None):
        raise DataError("cannot decode image: broken")

    monkeypatch.setattr(index, "picture", broken)
    kept = index.search("a red circle", k=3, refine=True, settings=settings)
    assert [(r.path, r.score, r.lexemes) for r in kept.results] == [(r.path, r.score, r.lexemes) for r in plain.results]
    assert len(kept.warnings) == 1
    assert "3 of the best 3 results" in kept.warnings[0] and plain.results[0].path in kept.warnings[0]


def test_a_numeric_min_score_applies_to_the_reordered_scores(scene_index, test_encoder):
    from harmosearch.search import Index

    path, config = scene_index
    index = Index(path, config, encoder=test_encoder)
    s = replace(config.search, rerank=6, refine_alpha=0.3)
    every = index.search("a blue star", k=6, refine=True, settings=s).results
    bound = every[2].score
    kept = index.search("a blue star", k=6, refine=True, settings=replace(s, min_score=bound)).results
    assert [r.path for r in kept] == [r.path for r in every if r.score >= bound] and len(kept) < 6
    assert all(r.score >= bound for r in kept)


def test_refine_passes_over_a_photo_deleted_since_indexing(photos, tmp_path, test_encoder):
    from harmosearch.config import load_config
    from harmosearch.indexing import build_index
    from harmosearch.search import Index

    config = load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0})
    build_index(photos, tmp_path / "index", config, encoder=test_encoder)
    index = Index(tmp_path / "index", config, encoder=test_encoder)
    top = index.search("a red circle", k=3, refine=False).results[0]
    (photos / top.path).unlink()
    response = index.search("a red circle", k=3, refine=True)
    assert len(response.results) == 3 and top.path in response.warnings[0]
    gone = next(r for r in response.results if r.path == top.path)
    assert [m.box for m in gone.lexemes] == [m.box for m in top.lexemes]


def test_refine_with_min_score_auto_and_no_confident_result_returns_none(scene_index, test_encoder):
    """When min_score "auto" leaves no result, the refined search returns none (the reordering
    fused zero candidates and raised; found by tests/test_cli_fuzz.py)."""
    from harmosearch.search import Index

    path, config = scene_index
    index = Index(path, config, encoder=test_encoder)
    s = replace(config.search, rerank=6, crop_weight=0.0)  # reordered by fusing looked-at scores
    query = "a purple elephant"
    assert index.search(query, k=6, settings=s).results  # candidates there are, none confident:
    assert index.search(query, k=6, min_score="auto", settings=s).results == []
    assert index.search(query, k=6, refine=True, min_score="auto", settings=s).results == []


def test_fusing_no_candidates_gives_no_scores():
    from harmosearch.search.fuse import fuse

    for lexemes in (np.zeros((0, 2), np.float32), np.zeros(0, np.float32)):
        assert fuse(np.zeros(0, np.float32), lexemes, 0.3).shape == (0,)
    assert fuse(np.ones(3), np.full(3, 0.5), 0.5).tolist() == [0.75] * 3  # [C]: one lexeme
