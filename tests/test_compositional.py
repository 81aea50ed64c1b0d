import json

import numpy as np
import pytest
from PIL import Image

from harmosearch.bench.compositional import (
    ARO_MIN_ATTRIBUTE_ITEMS,
    AROItem,
    aro_image,
    aro_metrics,
    evaluate_pairs,
    load_aro,
    load_pairs,
    pair_metrics,
    pair_texts,
    twin_scores,
)
from harmosearch.errors import DataError
from harmosearch.synth import generate_pairs

# scores[p, caption, image]; the outcome of every comparison is worked out beside it.
TWINS = np.array(
    [
        [[0.9, 0.1], [0.2, 0.8]],  # both captions win; each image prefers its caption: all four scores
        [[0.5, 0.6], [0.4, 0.7]],  # C0 loses (0.5 < 0.6), C1 wins; I0: 0.5 > 0.4, I1: 0.7 > 0.6 -> text only
        [[0.5, 0.5], [0.3, 0.9]],  # C0 ties and loses, C1 wins; I0: 0.5 > 0.3, I1: 0.9 > 0.5 -> text only
        [[0.2, 0.1], [0.3, 0.4]],  # both captions win; I0: 0.2 < 0.3 -> image only
    ]
)


def test_twin_scores_on_hand_made_scores():
    assert twin_scores(TWINS) == {
        "pairs": 4.0,
        "caption_wins": 6 / 8,
        "image_score": 2 / 4,
        "text_score": 3 / 4,
        "group_score": 1 / 4,
    }
    assert twin_scores(np.zeros((0, 2, 2)))["caption_wins"] == 0.0


def full_matrix():
    """[8 captions, 8 images] whose within-pair blocks are TWINS; other pairs' images score
    low except where a row below says so."""
    matrix = np.full((8, 8), -1.0)
    for p in range(4):
        matrix[2 * p : 2 * p + 2, 2 * p : 2 * p + 2] = TWINS[p]
    matrix[1, 6] = 0.95  # caption 1's true image (0.8) is beaten by an image of another pair
    return matrix


def test_pair_metrics_reads_the_twin_blocks_and_ranks_all_images():
    result = pair_metrics(full_matrix())
    assert {k: result[k] for k in twin_scores(TWINS)} == twin_scores(TWINS)
    # Captions 0, 3, 5, 6 and 7 score their own image highest. Caption 1's image (0.8) is beaten
    # by image 6 (0.95), caption 2's by its twin (0.6 > 0.5); caption 4 ties with its twin (0.5)
    # and a tie loses. Within five, every caption finds its image.
    assert result["r1"] == 5 / 8
    assert result["r5"] == 1.0
    with pytest.raises(DataError, match="pair order"):
        pair_metrics(np.zeros((3, 3)))


def test_pair_metrics_recall_against_a_direct_count():
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 4, (10, 10)).astype(float)  # many ties
    for k in (1, 5):
        hits = [sum(matrix[i, j] >= matrix[i, i] for j in range(10) if j != i) < k for i in range(10)]
        assert pair_metrics(matrix, ks=(k,))[f"r{k}"] == pytest.approx(np.mean(hits))


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    generate_pairs(out, 2, seed=1, size=64)
    return out


def test_load_pairs_reads_the_synth_pairs(pair_folder):
    pairs = load_pairs(pair_folder)
    data = json.loads((pair_folder / "annotations.json").read_text())
    assert [p.kind for p in pairs] == ["relation", "relation", "attribute", "attribute"]
    for pair, raw in zip(pairs, data["pairs"], strict=True):
        assert list(pair.captions) == raw["captions"] and list(pair.image_ids) == raw["images"]
        assert all(image.is_file() for image in pair.images)
        assert pair.relation == raw["relation"]
    captions, images = pair_texts(pairs)
    assert captions[2:4] == list(pairs[1].captions) and images[2:4] == list(pairs[1].images)


def test_evaluate_pairs_scores_once_and_groups_by_kind(pair_folder):
    pairs = load_pairs(pair_folder)
    calls = []

    def score(captions, images):
        calls.append((captions, images))
        return full_matrix()

    results = evaluate_pairs(pairs, score)
    assert calls == [pair_texts(pairs)]
    assert results["all"] == pair_metrics(full_matrix())
    # Relation pairs are pairs 0-1 of the matrix, attribute pairs 2-3; each ranks its own images.
    assert results["relation"] == pair_metrics(full_matrix()[:4, :4])
    assert results["attribute"] == pair_metrics(full_matrix()[4:, 4:])
    assert results["relation"]["caption_wins"] == 3 / 4 and results["relation"]["r1"] == 3 / 4
    with pytest.raises(DataError, match="shape"):
        evaluate_pairs(pairs, lambda c, i: np.zeros((2, 2)))


def test_load_pairs_explains_what_is_missing(tmp_path, scenes):
    with pytest.raises(DataError, match=r"no annotations\.json"):
        load_pairs(tmp_path)
    with pytest.raises(DataError, match="lists no pairs"):
        load_pairs(scenes)  # ordinary scenes have no pairs


# ---------- ARO ----------

RELATION_ENTRIES = [
    {
        "image_path": "2315375.jpg",
        "bbox_x": 10,
        "bbox_y": 20,
        "bbox_w": 30,
        "bbox_h": 15,
        "relation_name": "on",
        "true_caption": "the cup is on the table",
        "false_caption": "the table is on the cup",
    },
    {
        "image_path": "2315375.jpg",
        "bbox_x": 0,
        "bbox_y": 0,
        "bbox_w": 64,
        "bbox_h": 48,
        "relation_name": "next to",
        "true_caption": "the dog is next to the cat",
        "false_caption": "the cat is next to the dog",
    },
    {
        "image_path": "2400001.jpg",
        "bbox_x": 5.5,
        "bbox_y": 4,
        "bbox_w": 20,
        "bbox_h": 20,
        "relation_name": "to the left of",
        "true_caption": "the lamp is to the left of the bed",
        "false_caption": "the bed is to the left of the lamp",
    },
]
ATTRIBUTION_ENTRIES = [
    {
        "image_path": "2400001.jpg",
        "bbox_x": 0,
        "bbox_y": 0,
        "bbox_w": 32,
        "bbox_h": 32,
        "attributes": ["white", "black"],
        "true_caption": "the white plate and the black table",
        "false_caption": "the black plate and the white table",
    },
]


def write_aro(root, kind, entries):
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, colour in (("2315375.jpg", (200, 30, 30)), ("2400001.jpg", (30, 30, 200))):
        image = Image.new("RGB", (64, 48), (128, 128, 128))
        image.paste(colour, (10, 20, 40, 35))  # the first entry's box
        image.save(root / "images" / name, quality=95)
    (root / f"visual_genome_{kind}.json").write_text(json.dumps(entries))


def test_load_aro_reads_the_published_format(tmp_path):
    write_aro(tmp_path, "relation", RELATION_ENTRIES)
    write_aro(tmp_path, "attribution", ATTRIBUTION_ENTRIES)
    relation = load_aro("relation", tmp_path)
    assert [i.label for i in relation] == ["on", "next to", "to the left of"]
    assert relation[0] == AROItem(
        kind="relation",
        image=tmp_path / "images" / "2315375.jpg",
        box=(10.0, 20.0, 40.0, 35.0),
        true_caption="the cup is on the table",
        false_caption="the table is on the cup",
        label="on",
    )
    assert relation[2].box == (5.5, 4.0, 25.5, 24.0)
    (attribution,) = load_aro("attribution", tmp_path)
    assert attribution.label == "white_black" and attribution.kind == "attribution"
    crop = aro_image(relation[0])
    assert crop.size == (30, 15) and crop.mode == "RGB"
    # The box is exactly the red patch (JPEG blurs its edges, so compare the typical pixel).
    assert np.abs(np.median(np.asarray(crop), axis=(0, 1)) - (200, 30, 30)).max() < 15


def test_missing_aro_data_is_one_line_naming_the_expected_paths(tmp_path):
    with pytest.raises(DataError) as error:
        load_aro("relation", tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "visual_genome_relation.json") in message and str(tmp_path / "images") in message
    (tmp_path / "visual_genome_attribution.json").write_text("[]")
    with pytest.raises(DataError, match="images"):
        load_aro("attribution", tmp_path)  # annotations without the images folder
    with pytest.raises(DataError, match="unknown ARO dataset"):
        load_aro("order", tmp_path)


def test_malformed_aro_files_are_reported(tmp_path):
    write_aro(tmp_path, "relation", [{k: v for k, v in RELATION_ENTRIES[0].items() if k != "bbox_h"}])
    with pytest.raises(DataError, match="entry 0 lacks bbox_h"):
        load_aro("relation", tmp_path)
    write_aro(tmp_path, "relation", [RELATION_ENTRIES[0] | {"image_path": "gone.jpg"}])
    with pytest.raises(DataError, match=r"1 ARO images are missing .* gone\.jpg"):
        load_aro("relation", tmp_path)
    write_aro(tmp_path, "relation", [RELATION_ENTRIES[0] | {"bbox_x": "left"}])
    with pytest.raises(DataError, match="non-numeric bbox"):
        load_aro("relation", tmp_path)
    (tmp_path / "visual_genome_relation.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        load_aro("relation", tmp_path)


def item(kind, label):
    return AROItem(kind, None, (0, 0, 1, 1), "true", "false", label)


def test_aro_relation_accuracy_and_macro_accuracy():
    items = [item("relation", label) for label in ["on", "on", "on", "on", "under", "next to", "next to"]]
    true = np.array([0.9, 0.9, 0.9, 0.1, 0.5, 0.1, 0.1])
    false = np.array([0.1, 0.1, 0.1, 0.9, 0.5, 0.9, 0.9])  # "under" ties: wrong
    result = aro_metrics(items, true, false)
    assert result["items"] == 7 and result["accuracy"] == pytest.approx(3 / 7)
    # "next to" is symmetric and left out: mean of on (3/4) and under (0/1).
    assert result["macro_accuracy"] == pytest.approx((3 / 4 + 0) / 2)


def test_aro_attribution_macro_accuracy_needs_enough_items_per_pair():
    common = [item("attribution", "white_black")] * ARO_MIN_ATTRIBUTE_ITEMS
    rare = [item("attribution", "red_blue")] * 3
    true = np.array([1.0] * 20 + [0.0] * 5 + [0.0] * 3)
    result = aro_metrics(common + rare, true, np.full(len(true), 0.5))
    assert result["accuracy"] == pytest.approx(20 / 28)
    assert result["macro_accuracy"] == pytest.approx(20 / 25)  # red_blue has too few items to count
    assert np.isnan(aro_metrics(rare, np.ones(3), np.zeros(3))["macro_accuracy"])
    assert aro_metrics([], np.zeros(0), np.zeros(0))["accuracy"] == 0.0
    with pytest.raises(DataError, match="one true and one false score"):
        aro_metrics(rare, np.ones(2), np.zeros(3))
