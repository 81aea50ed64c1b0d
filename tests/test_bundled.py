"""The bundled model really grounds colours and shapes on scenes it has never seen."""

import json

import numpy as np
import pytest

from harmosearch.config import SynthConfig, load_config
from harmosearch.encoder import bundled_models
from harmosearch.indexing import build_index
from harmosearch.metrics import box_iou
from harmosearch.search import Index
from harmosearch.synth import generate

pytestmark = pytest.mark.skipif("harmo-tiny" not in bundled_models(), reason="bundled model not built")


@pytest.fixture(scope="module")
def fresh_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundled")
    generate(root / "scenes", SynthConfig(n=80, seed=31337), workers=2)  # a seed never used in training
    config = load_config(overrides={"encoder.model": "harmo-tiny", "encoder.device": "cpu", "index.workers": 0})
    build_index(root / "scenes" / "images", root / "index", config)
    data = json.loads((root / "scenes" / "annotations.json").read_text())
    return Index(root / "index", config), data


def test_single_object_queries_find_the_object_and_box_it(fresh_index):
    index, data = fresh_index
    files = {im["id"]: im["file_name"] for im in data["images"]}
    boxes: dict[str, dict[str, list[float]]] = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["phrase"], {})[files[a["image_id"]]] = [x, y, x + w, y + h]
    phrases = sorted(p for p, found in boxes.items() if len(found) >= 3)[:16]
    assert len(phrases) >= 8
    found, grounded = [], []
    for phrase in phrases:
        results = index.search(phrase, k=5).results
        relevant = boxes[phrase]
        expected = min(5, len(relevant))
        hits = [r for r in results[:expected] if r.path in relevant]
        found.append(len(hits) / expected)
        for r in hits:
            iou = box_iou(np.array([r.lexemes[0].box]), np.array([relevant[r.path]]))[0, 0]
            grounded.append(iou >= 0.5)
    precision, box_rate = float(np.mean(found)), float(np.mean(grounded))
    print(f"precision@min(5, relevant) {precision:.3f}, boxes at IoU>=0.5 {box_rate:.3f}")
    assert precision >= 0.6  # "contains that object in most cases"
    assert box_rate >= 0.5  # "the returned box overlaps it (IoU >= 0.5)"
