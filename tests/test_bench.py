import csv
import json

import numpy as np
import pytest
from PIL import Image

from harmosearch.bench import (
    ImageCache,
    best_region_scores,
    load_bench_set,
    load_coco_instances,
    load_flickr30k,
    load_mscoco,
    run_bench,
)
from harmosearch.config import load_config
from harmosearch.errors import DataError

from .conftest import TEST_MODEL


def write_image(path, colour=(200, 0, 0), size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_flickr30k_karpathy_csv(tmp_path):
    with (tmp_path / "flickr30k_test_karpathy.txt").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for name in ("1000.jpg", "1001.jpg"):
            for k in range(5):
                w.writerow([name, f"caption {k}, with a comma"])
    for name in ("1000.jpg", "1001.jpg"):
        write_image(tmp_path / "flickr30k-images" / name)
    bench = load_flickr30k(tmp_path)
    assert [p.name for p in bench.images] == ["1000.jpg", "1001.jpg"]
    assert len(bench.captions) == 10 and bench.caption_image == [0] * 5 + [1] * 5
    assert bench.captions[0] == "caption 0, with a comma"


def test_mscoco_karpathy_json(tmp_path):
    entries = [
        {"image": "val2014/a.jpg", "caption": ["one", "two", "three", "four", "five", "six", "seven"]},
        {"image": "val2014/b.jpg", "caption": ["x", "y", "z", "w", "v"]},
    ]
    (tmp_path / "coco_test_karpathy.json").write_text(json.dumps(entries))
    bench = load_mscoco(tmp_path)
    assert bench.caption_image == [0] * 7 + [1] * 5
    assert bench.images[1] == tmp_path / "val2014" / "b.jpg"


def test_coco_instances(tmp_path):
    data = {
        "images": [{"id": 7, "file_name": "x.jpg", "width": 40, "height": 30}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [1, 2, 10, 20], "category_id": 18, "iscrowd": 0},
            {"id": 2, "image_id": 7, "bbox": [0, 0, 5, 5], "category_id": 1, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    bench = load_coco_instances(tmp_path)
    assert bench.classes == ["person", "dog"]
    assert bench.boxes == [(0, (1, 2, 11, 22), 1)]  # crowd boxes are left out
    assert bench.phrases == ["dog"]


def test_missing_data_names_the_files(tmp_path):
    with pytest.raises(DataError, match=r"flickr30k_test_karpathy\.txt"):
        load_bench_set("flickr30k", tmp_path)
    with pytest.raises(DataError, match=r"coco_test_karpathy\.json"):
        load_bench_set("mscoco", tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        load_bench_set("imagenet", None)


def test_best_region_scores_equals_loops():
    rng = np.random.default_rng(0)
    region_vectors = rng.standard_normal((9, 4)).astype(np.float32)
    starts = np.array([0, 3, 3, 9])  # image 1 has no regions
    cache = ImageCache(np.zeros((3, 4), np.float32), region_vectors, np.zeros((9, 4)), starts, np.zeros((0, 4)), 0.0)
    lexemes = rng.standard_normal((2, 4)).astype(np.float32)
    got = best_region_scores(lexemes, cache)
    for li, lex in enumerate(lexemes):
        for i in range(3):
            rows = region_vectors[starts[i] : starts[i + 1]]
            expected = max(float(r @ lex) for r in rows) if len(rows) else -1.0
            assert got[li, i] == pytest.approx(expected, abs=1e-5)


def test_bench_end_to_end_on_synthetic_scenes_with_cache(scenes, tmp_path, monkeypatch):
    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    config = load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu"})
    result = run_bench(config, str(scenes), ("retrieval", "boxcls", "grounding"), save_scores=tmp_path / "s.npy")
    retrieval = result["tasks"]["retrieval"]
    assert set(retrieval["modes"]) == {"global", "fused"}
    assert retrieval["images"] == 12 and retrieval["captions"] == 60
    for values in retrieval["modes"].values():
        assert all(0.0 <= v <= 1.0 for v in values.values()) and values["t2i_R@10"] >= values["t2i_R@1"]
    assert 0 <= result["tasks"]["boxcls"]["top1"] <= result["tasks"]["boxcls"]["top5"] <= 1
    assert 0 <= result["tasks"]["grounding"]["accuracy"] <= result["tasks"]["grounding"]["proposal_ceiling"] <= 1
    assert result["model"]["spec"] == TEST_MODEL and result["config"]["search"]["alpha"] == 0.5
    matrix = np.load(tmp_path / "s.global.npy")
    mapping = json.loads((tmp_path / "s.json").read_text())
    assert matrix.shape == (60, 12) and len(mapping["caption_image"]) == 60
    from harmosearch.metrics import recall_text_to_image

    assert recall_text_to_image(matrix, mapping["caption_image"])[1] == retrieval["modes"]["global"]["t2i_R@1"]
    cached = list((tmp_path / "cache" / "bench").glob("images-*.npz"))
    assert len(cached) == 1
    again = run_bench(config, str(scenes), ("boxcls",))
    assert again["tasks"]["boxcls"] == {**again["tasks"]["boxcls"], "top1": result["tasks"]["boxcls"]["top1"]}
    assert again["tasks"]["boxcls"]["image_encoding_seconds"] == result["tasks"]["boxcls"]["image_encoding_seconds"]
