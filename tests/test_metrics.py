import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmosearch.bench.metrics import box_iou, recall_image_to_text, recall_text_to_image, topk_accuracy


def test_text_to_image_hand_worked():
    # 3 captions x 3 images; caption c belongs to image truth[c].
    scores = np.array(
        [
            [0.9, 0.1, 0.2],  # caption 0 -> image 0 ranked 1st
            [0.5, 0.4, 0.3],  # caption 1 -> image 1 ranked 2nd
            [0.8, 0.7, 0.1],  # caption 2 -> image 2 ranked 3rd
        ]
    )
    truth = [0, 1, 2]
    assert recall_text_to_image(scores, truth, (1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}


def test_ties_do_not_favour_the_true_match():
    # Caption 0 ties image 0 (false) and image 1 (true): the lower index ranks first.
    scores = np.array([[0.5, 0.5, 0.1]])
    assert recall_text_to_image(scores, [1], (1, 2)) == {1: 0.0, 2: 1.0}
    # The same tie with the true image first counts as a hit at 1.
    assert recall_text_to_image(scores, [0], (1,)) == {1: 1.0}


def test_image_to_text_with_five_and_seven_captions():
    # Image 0 has 5 captions (rows 0-4), image 1 has 7 (rows 5-11).
    truth = [0] * 5 + [1] * 7
    scores = np.zeros((12, 2))
    scores[:, 0] = np.linspace(0.1, 0.2, 12)  # image 0's best caption is row 11 (image 1's)...
    scores[4, 0] = 0.25  # ...until its own caption 4 tops every other
    scores[:, 1] = 0.0
    scores[0, 1] = 0.9  # image 1's best caption is image 0's caption 0
    scores[6, 1] = 0.8  # its own caption 6 comes second
    r = recall_image_to_text(scores, truth, (1, 2))
    assert r == {1: 0.5, 2: 1.0}


def reference_t2i(scores, truth, k):
    hits = 0
    for c, row in enumerate(scores):
        ranked = sorted(range(len(row)), key=lambda i: (-row[i], i))
        hits += truth[c] in ranked[:k]
    return hits / len(scores)


def reference_i2t(scores, truth, k):
    hits = 0
    for i in range(scores.shape[1]):
        column = scores[:, i]
        ranked = sorted(range(len(column)), key=lambda c: (-column[c], c))
        hits += any(truth[c] == i for c in ranked[:k])
    return hits / scores.shape[1]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 4), st.integers(0, 10_000), st.booleans())
def test_recall_equals_a_direct_reimplementation(images, per_image, seed, coarse):
    rng = np.random.default_rng(seed)
    truth = [i for i in range(images) for _ in range(per_image + int(rng.integers(0, 3)))]
    scores = rng.random((len(truth), images))
    if coarse:
        scores = np.round(scores, 1)  # many ties
    for k in (1, 2, 5):
        assert recall_text_to_image(scores, truth, (k,))[k] == pytest.approx(reference_t2i(scores, truth, k))
        assert recall_image_to_text(scores, truth, (k,))[k] == pytest.approx(reference_i2t(scores, truth, k))


def test_topk_accuracy_per_instance_and_per_class():
    scores = np.array(
        [
            [0.9, 0.1, 0.0],  # label 0, top1 hit
            [0.2, 0.7, 0.1],  # label 0, miss at 1, hit at 2
            [0.1, 0.8, 0.1],  # label 1, hit
            [0.1, 0.2, 0.7],  # label 1, second: miss at 1, hit at 2
        ]
    )
    labels = [0, 0, 1, 1]
    r = topk_accuracy(scores, labels, (1, 2))
    assert r["top1"] == 0.5 and r["top2"] == 1.0
    assert r["top1_per_class"] == pytest.approx((0.5 + 0.5) / 2)
    unbalanced = topk_accuracy(np.array([[1.0, 0], [1.0, 0], [1.0, 0], [1.0, 0]]), [0, 0, 0, 1], (1,))
    assert unbalanced["top1"] == 0.75 and unbalanced["top1_per_class"] == 0.5


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])
