"""The bundled model really grounds colours and shapes on scenes it has never seen."""

import functools
import json
import math

import numpy as np
import pytest

from harmosearch.bench.metrics import box_iou
from harmosearch.config import BUNDLED_MODELS, SHAPES_MODEL, SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.model.loading import bundled_models
from harmosearch.search import Index
from harmosearch.synth import generate
from tests.test_docs import docs_module

# The regression guards are the default bundled model's (SHAPES_MODEL); harmo-tiny, which it was
# trained from, stays loadable by name (test_every_bundled_model_loads_by_name).
MODEL = {"encoder.model": SHAPES_MODEL, "encoder.device": "cpu"}


@functools.cache
def spec_record() -> dict:
    """The record the spec floors below are read from: the default model's test-split figures at
    today's defaults and the default detail, as the README's headline row picks them
    (docs/gen_records.bench: `harmosearch bench --dataset synthetic --split test --n 500
    --detail normal --no-refine` on the flat world, 500 scenes, 250 twin pairs of each kind; made
    in int8 through ONNX Runtime, where these tests run fp32 through torch: harmo-tiny's int8 was
    within a point of fp32 on every figure, bench_cpu_paths.jsonl). Retrieval's filter is the
    strictest (its captions count, so its record must be at today's defaults for the counting
    keys too): the whole record is at today's defaults. A new record is taken up by itself; new
    defaults or a new default model without one fail here."""
    found = docs_module("gen_records").bench("bench.jsonl", "retrieval", n=500)
    assert found is not None, f"no test record of {SHAPES_MODEL} at today's defaults in bench.jsonl"
    return found.data


def binomial_margin(p: float, n: int) -> float:
    """Three binomial standard deviations of a rate p measured over n items here, with p kept
    at least one item from 0 and 1 (a record's 100% would otherwise leave no margin at all)."""
    p = min(max(p, 1 / n), 1 - 1 / n)
    return 3 * math.sqrt(p * (1 - p) / n)


def spec_floor(p: float, n: int) -> float:
    """The record's rate p less three binomial standard deviations for n items here."""
    return p - binomial_margin(p, n)


def test_the_spec_record_is_the_bundled_models():
    """The record the spec floors are read from was made with the installed default bundled model
    and holds every task they are read from."""
    from harmosearch.model.encoder import load_encoder

    record = spec_record()
    assert record["model"]["spec"] == SHAPES_MODEL and record["split"] == "test"
    assert {"search", "retrieval", "boxcls", "grounding", "compositional"} <= set(record["tasks"])
    assert record["model"]["weights"] == load_encoder(load_config(overrides=MODEL)).identity.weights


def test_the_bundled_models_are_installed():
    """They are committed (harmosearch/model/bundled/): without them, this file and the tests of
    the demo and the photo library fail rather than skip. The default, harmo-mix, is harmo-tiny
    trained further on both worlds (issue #29): the same architecture, at most 20 MB, its recipe
    recorded, and it starts the demo, bench and train."""
    from harmosearch.config import BUNDLED_MODELS, SHAPES_MODEL, shapes_model_unless_named
    from harmosearch.model.loading import BUNDLED_DIR

    assert set(BUNDLED_MODELS) <= set(bundled_models()) and SHAPES_MODEL == "harmo-mix"
    folder = BUNDLED_DIR / SHAPES_MODEL
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 20 * 2**20
    meta = json.loads((folder / "harmosearch.json").read_text())
    assert meta["base_model"] == "harmo-tiny" and "--world mixed" in meta["reproduce"]
    assert json.loads((folder / "open_clip_config.json").read_text()) == json.loads(
        (BUNDLED_DIR / "harmo-tiny" / "open_clip_config.json").read_text()
    )
    assert shapes_model_unless_named(load_config(environ={})).encoder.model == SHAPES_MODEL  # bench, demo, train


def test_the_stock_clip_stand_in_is_installed_and_trained_with_the_global_loss_only():
    """harmo-tiny-gc (issue #30's stand-in for a stock CLIP): harmo-tiny's architecture, at most
    12 MB, its training config naming the global loss alone (loadable by name: below)."""
    from harmosearch.model.loading import BUNDLED_DIR

    assert "harmo-tiny-gc" in bundled_models()
    folder = BUNDLED_DIR / "harmo-tiny-gc"
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 12 * 2**20
    meta = json.loads((folder / "harmosearch.json").read_text())
    assert meta["config"]["train"]["losses"] in ("gc", ["gc"])
    assert json.loads((folder / "open_clip_config.json").read_text()) == json.loads(
        (BUNDLED_DIR / "harmo-tiny" / "open_clip_config.json").read_text()
    )


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_every_bundled_model_loads_by_name(name):
    """Each bundled model loads by its name alone (harmo-tiny too: the default was trained from
    it, and other tests and benchmarks name it) and encodes a query in 128 dimensions."""
    from harmosearch.model.encoder import load_encoder

    encoder = load_encoder(load_config(overrides={"encoder.model": name, "encoder.device": "cpu"}))
    assert encoder.identity.spec == name
    (query,) = encoder.encode_queries(["red circle"])
    assert query.global_vector.shape[-1] == 128


@pytest.fixture(scope="module")
def fresh_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundled")
    generate(root / "scenes", SynthConfig(n=80, seed=31337), workers=2)  # a seed never used in training
    config = load_config(overrides={**MODEL, "index.workers": 0})
    build_index(root / "scenes" / "images", root / "index", config)
    data = json.loads((root / "scenes" / "annotations.json").read_text())
    return Index(root / "index", config), data, root


def test_single_object_queries_find_the_object_and_box_it(fresh_index, tmp_path, monkeypatch):
    """For every colour-shape phrase present in the scenes: how many of the top 5 hold that
    object, do any, and does the box shown on the first such image overlap it at IoU >= 0.5?"""
    index, data, root = fresh_index
    files = {im["id"]: im["file_name"] for im in data["images"]}
    boxes: dict[str, dict[str, list[float]]] = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["phrase"], {})[files[a["image_id"]]] = [x, y, x + w, y + h]
    assert len(boxes) >= 40
    found, grounded, precision = [], [], []
    for phrase, relevant in sorted(boxes.items()):
        hits = [r for r in index.search(phrase, k=5).results if r.path in relevant]
        found.append(bool(hits))
        precision.append(len(hits) / 5)
        if hits:
            iou = box_iou(np.array([hits[0].lexemes[0].box]), np.array([relevant[hits[0].path]]))[0, 0]
            grounded.append(iou >= 0.5)
    hit_rate, box_rate, p5 = float(np.mean(found)), float(np.mean(grounded)), float(np.mean(precision))
    print(
        f"P@5 {p5:.4f}; top-5 holds the object for {hit_rate:.4f} of {len(found)} phrases; "
        f"its box at IoU >= 0.5 for {box_rate:.4f} of {len(grounded)}"
    )
    # Regression guards, a phrase or a few results under what harmo-mix measured here (48
    # phrases, seed 31337, fp32): hit 47/48 = 0.979, box 47/47, P@5 167/240 = 0.696.
    assert hit_rate >= 0.95
    assert box_rate >= 0.95
    assert p5 >= 0.68
    # Spec floors: the spec record's figures over 48 phrases in 500 scenes (hit@5 100.0, box
    # 100.0) less three binomial standard deviations for the phrases here (0.938, 0.937); its
    # P@5 (93.3) does not carry over (each phrase is in ~4 of these 80 scenes, 26 of those
    # 500): about two of five results hold the object.
    spec = spec_record()["tasks"]["search"]
    assert hit_rate >= spec_floor(spec["hit@5"], len(found))
    assert box_rate >= spec_floor(spec["box@0.5"], len(grounded))
    assert p5 >= 0.4
    # `harmosearch bench --task search` ranks the same way from its own cache of the vectors.
    from harmosearch.bench import run_bench

    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path))
    bench = run_bench(index.config, str(root / "scenes"), ("search",))["tasks"]["search"]
    assert bench["phrases"] == len(found)
    assert bench["P@5"] == pytest.approx(p5, abs=0.01)  # fp16 index vectors may swap a near tie
    assert bench["hit@5"] == pytest.approx(hit_rate, abs=1 / len(found) + 1e-9)
    assert bench["box@0.5"] == pytest.approx(box_rate, abs=0.05)


def test_bench_runs_end_to_end_on_the_bundled_model(tmp_path, monkeypatch):
    from harmosearch.bench import run_bench

    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path))
    config = load_config(overrides=MODEL)
    result = run_bench(config, "synthetic", ("retrieval", "boxcls", "grounding"), n=40)
    tasks = result["tasks"]
    print(
        f"t2i R@1 {tasks['retrieval']['modes']['global']['t2i_R@1']:.4f}, box cls {tasks['boxcls']['top1']:.4f}, "
        f"grounding {tasks['grounding']['accuracy']:.4f} (of {tasks['grounding']['phrases']})"
    )
    assert tasks["retrieval"]["captions"] == 200 and tasks["boxcls"]["classes"] == 48
    recall, top1, grounded = (
        tasks["retrieval"]["modes"]["global"]["t2i_R@1"],
        tasks["boxcls"]["top1"],
        tasks["grounding"]["accuracy"],
    )
    # Regression guards, a few items under what harmo-mix measured on these 40 unseen scenes
    # (fp32): t2i R@1 170/200 = 0.85 (chance 1/40), box classification 97/102 = 0.951 (chance
    # 1/48), grounding 94/102 = 0.922.
    assert recall >= 0.83
    assert top1 >= 0.93
    assert grounded >= 0.90
    # Spec floors: the spec record's figures (global t2i R@1 52.6 among 500 images, which among
    # 40 can only be easier; box classification 97.5; grounding 95.4) less three binomial
    # standard deviations for this many captions, boxes and phrases (0.420, 0.929, 0.892 for
    # 200, 102 and 102).
    spec = spec_record()["tasks"]
    assert recall >= spec_floor(spec["retrieval"]["modes"]["global"]["t2i_R@1"], tasks["retrieval"]["captions"])
    assert top1 >= spec_floor(spec["boxcls"]["top1"], tasks["boxcls"]["boxes"])
    assert grounded >= spec_floor(spec["grounding"]["accuracy"], tasks["grounding"]["phrases"])


MODES = ("global", "fused", "relations")


def test_relations_and_attributes_decide_twin_pairs(tmp_path, monkeypatch):
    """Twin images that differ only by where two objects stand, or by which shape wears which
    colour: the relation-aware ranking tells them apart, the global ranking cannot."""
    from harmosearch.bench import run_bench
    from harmosearch.synth import generate_pairs

    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    generate_pairs(tmp_path / "pairs", 30, seed=5150, workers=2)  # a seed no choice looked at
    config = load_config(overrides=MODEL)
    figures = run_bench(config, str(tmp_path / "pairs"), ("compositional",))["tasks"]["compositional"]
    wins = {mode: {kind: figures[mode][kind]["caption_wins"] for kind in ("relation", "attribute")} for mode in MODES}
    print(f"caption wins: {wins}")
    # Regression guards, two captions under what harmo-mix measured on these 30 pairs of each
    # kind with the everyday rivals (the default), relation-aware: relation pairs 60/60,
    # attribute pairs 60/60.
    assert wins["relations"]["relation"] >= 0.96
    assert wins["relations"]["attribute"] >= 0.96
    # Spec floors: the spec record's relation-aware figures over 250 pairs of each kind (99.8
    # and 99.2) less three binomial standard deviations for the 60 captions here (0.948, 0.942);
    # and the global ranking at chance on relation pairs (the record's 49.6; measured here
    # 0.500), which it cannot tell apart: at most that plus three (0.690).
    spec = spec_record()["tasks"]["compositional"]
    captions = 2 * 30
    assert wins["relations"]["relation"] >= spec_floor(spec["relations"]["relation"]["caption_wins"], captions)
    assert wins["relations"]["attribute"] >= spec_floor(spec["relations"]["attribute"]["caption_wins"], captions)
    chance = spec["global"]["relation"]["caption_wins"]
    assert wins["global"]["relation"] <= chance + binomial_margin(chance, captions)
