import csv
import json

import numpy as np
import pytest
from PIL import Image

from harmosearch.bench import run_bench
from harmosearch.bench.datasets import BenchSet, load_bench_set, load_coco_instances, load_flickr30k, load_mscoco
from harmosearch.bench.tasks import Run, search
from harmosearch.bench.vectors import ImageVectors
from harmosearch.config import Config, SearchConfig, load_config
from harmosearch.errors import DataError
from harmosearch.search.score import RegionTable

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
        load_bench_set("flickr30k", tmp_path, tmp_path)
    with pytest.raises(DataError, match=r"coco_test_karpathy\.json"):
        load_bench_set("mscoco", tmp_path, tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        load_bench_set("imagenet", None, tmp_path)


class _Queries:
    """Stands in for the encoder: each phrase has fixed global and lexeme vectors."""

    def __init__(self, vectors):
        self.vectors = vectors
        self.vocabulary = ()  # no phrases of its own

    def encode_queries(self, texts):
        from types import SimpleNamespace

        import torch

        return [
            SimpleNamespace(
                global_vector=torch.tensor(self.vectors[t][0]), lexeme_vectors=torch.tensor(self.vectors[t][1])
            )
            for t in texts
        ]


def slow_phrase_search(vectors, bench, images, alpha, phrase_alpha, margin, k):
    """phrase_search written out: score every image by hand (a phrase of one lexeme weighs the
    global score by phrase_alpha, others by alpha), sort, inspect the top k."""
    from harmosearch.bench.metrics import box_iou

    phrases = sorted(set(bench.phrases))
    precision, hits, boxed = [], [], []
    for phrase in phrases:
        g, lexemes = vectors[phrase]
        holders = {i for (i, _, _), p in zip(bench.boxes, bench.phrases, strict=True) if p == phrase}
        scored = []
        table = images.regions
        weight = phrase_alpha if len(lexemes) == 1 else alpha
        for image in range(len(bench.images)):
            rows = range(table.start[image], table.start[image + 1])
            best = [max((float(table.vectors[r] @ lex) for r in rows), default=-1.0) for lex in lexemes]
            scored.append(
                (-(weight * float(images.global_vectors[image] @ g) + (1 - weight) * sum(best) / len(best)), image)
            )
        top = [image for _, image in sorted(scored)[:k]]
        relevant = [i for i in top if i in holders]
        precision.append(len(relevant) / k)
        hits.append(bool(relevant))
        if relevant:
            rows = list(range(table.start[relevant[0]], table.start[relevant[0] + 1]))
            scores = [float(table.vectors[r] @ lexemes[0]) for r in rows]
            sides = table.boxes[:, 2:] - table.boxes[:, :2]
            near = [r for r, s in zip(rows, scores, strict=True) if s >= max(scores) - margin]
            shown = max(near, key=lambda r: sides[r][0] * sides[r][1])
            truth = [
                b for (i, b, _), p in zip(bench.boxes, bench.phrases, strict=True) if i == relevant[0] and p == phrase
            ]
            boxed.append(max(box_iou(np.array([b]), table.boxes[shown][None])[0, 0] for b in truth) >= 0.5)
    return {"P@3": np.mean(precision), "hit@3": np.mean(hits), "box@0.5": np.mean(boxed), "phrases": len(phrases)}


def test_phrase_search_equals_a_written_out_ranking():
    rng = np.random.default_rng(3)
    n_images, dim = 9, 6
    counts = rng.integers(0, 5, size=n_images)
    starts = np.concatenate([[0], np.cumsum(counts)])
    corners = rng.uniform(0, 60, size=(starts[-1], 2))
    region_boxes = np.concatenate([corners, corners + rng.uniform(5, 40, size=(starts[-1], 2))], 1).astype(np.float32)

    def unit(*shape):
        x = rng.standard_normal(shape)
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    images = ImageVectors(unit(n_images, dim), RegionTable(unit(starts[-1], dim), region_boxes, starts), None, 0.0)
    bench = BenchSet("t", None, [f"{i}.png" for i in range(n_images)])
    phrases = ["red circle", "blue star", "green ring"]
    for i in range(n_images):
        for phrase in rng.choice(phrases, size=2, replace=False):
            if starts[i + 1] > starts[i] and rng.random() < 0.8:  # sometimes a real region's box
                box = tuple(float(v) for v in region_boxes[rng.integers(starts[i], starts[i + 1])])
            else:
                box = (10.0, 10.0, 40.0, 50.0)
            bench.boxes.append((i, box, phrases.index(phrase)))
            bench.phrases.append(str(phrase))
    vectors = {p: (unit(dim), unit(1 + (j == 2), dim)) for j, p in enumerate(phrases)}  # one phrase has 2 lexemes
    for alpha, phrase_alpha, margin in ((0.5, 0.1, 0.0), (0.2, 0.2, 0.3), (1.0, 0.6, 0.05)):
        # No rivals: the stand-in encoder knows only these phrases, and the reference has no contrast.
        settings = SearchConfig(alpha=alpha, phrase_alpha=phrase_alpha, box_margin=margin, refine=False, contrast=0.0)
        config = Config(search=settings)  # the indexed boxes
        got = search(Run(_Queries(vectors), config, bench, images), k=3)
        expected = slow_phrase_search(vectors, bench, images, alpha, phrase_alpha, margin, k=3)
        assert got == pytest.approx(expected)
    assert 0 < expected["P@3"] < 1  # the case is not trivial


def test_bench_end_to_end_on_synthetic_scenes_with_cache(scenes, tmp_path, monkeypatch):
    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    config = load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "search.refine": True})
    tasks = ("retrieval", "boxcls", "grounding", "search")
    from harmosearch.bench import vectors

    measured = []  # the tasks of one set share its trust and calibration, measured once
    trust = vectors.bench_trust
    monkeypatch.setattr(vectors, "bench_trust", lambda *args, **kw: measured.append(1) or trust(*args, **kw))
    result = run_bench(config, str(scenes), tasks, save_scores=tmp_path / "s.npy")
    assert len(measured) == 1
    retrieval = result["tasks"]["retrieval"]
    assert set(retrieval["modes"]) == {"global", "fused", "relations", "refined"}  # refined: with search.refine
    assert retrieval["images"] == 12 and retrieval["captions"] == 60
    for values in retrieval["modes"].values():
        recalls = [v for key, v in values.items() if "_R@" in key]
        assert all(0.0 <= v <= 1.0 for v in recalls) and values["t2i_R@10"] >= values["t2i_R@1"]
    assert set(retrieval["modes"]["refined"]) == {"t2i_R@1", "t2i_R@5", "t2i_R@10", "refine_seconds_per_image"}
    assert 0 <= result["tasks"]["boxcls"]["top1"] <= result["tasks"]["boxcls"]["top5"] <= 1
    grounding = result["tasks"]["grounding"]
    assert 0 <= grounding["indexed_accuracy"] <= grounding["proposal_ceiling"] <= 1
    assert 0 <= grounding["accuracy"] <= 1 and grounding["refine_seconds_per_image"] > 0
    phrases = result["tasks"]["search"]
    assert 0 <= phrases["P@5"] <= phrases["hit@5"] <= 1 and phrases["phrases"] >= 10
    assert result["model"]["spec"] == TEST_MODEL and result["config"]["search"]["alpha"] == 0.5
    matrix = np.load(tmp_path / "s.global.npy")
    mapping = json.loads((tmp_path / "s.json").read_text())
    assert matrix.shape == (60, 12) and len(mapping["caption_image"]) == 60
    from harmosearch.bench.metrics import recall_text_to_image

    assert recall_text_to_image(matrix, mapping["caption_image"])[1] == retrieval["modes"]["global"]["t2i_R@1"]
    cached = list((tmp_path / "cache" / "bench").glob("images-*.npz"))
    assert len(cached) == 1
    again = run_bench(config, str(scenes), ("boxcls",))
    assert len(measured) == 2
    assert again["tasks"]["boxcls"] == {**again["tasks"]["boxcls"], "top1": result["tasks"]["boxcls"]["top1"]}

    def measures(task):  # but the seconds trust took
        return json.dumps([{**task["region_trust"], "seconds": None}, task["ranking_unit"]])

    assert {measures(task) for task in result["tasks"].values()} == {measures(again["tasks"]["boxcls"])}
    assert again["tasks"]["boxcls"]["image_encoding_seconds"] == result["tasks"]["boxcls"]["image_encoding_seconds"]


def test_bench_vectors_are_the_indexed_vectors(scenes, tmp_path, monkeypatch, test_encoder):
    """The bench encodes images through the indexing pipeline: the same regions and vectors as
    `harmosearch index` stores (up to the index's float16 storage)."""
    from harmosearch.bench.datasets import load_scene_folder
    from harmosearch.bench.vectors import encode_images
    from harmosearch.indexing import build_index
    from harmosearch.store import IndexReader

    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    config = load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0})
    bench = load_scene_folder(scenes)
    images = encode_images(test_encoder, config, bench)
    build_index(scenes / "images", tmp_path / "index", config, encoder=test_encoder)
    reader = IndexReader(tmp_path / "index")
    by_name = {str(p): i for i, p in enumerate(reader.images["path"])}
    for b, path in enumerate(bench.images):
        i = by_name[path.name]
        np.testing.assert_allclose(images.global_vectors[b], reader.global_vectors[i], atol=2e-3)
        rows, mine = reader.regions_of(i), images.regions.rows_of(b)
        boxes = np.stack([reader.regions[c][rows] for c in ("x0", "y0", "x1", "y1")], 1)
        np.testing.assert_allclose(images.regions.boxes[mine], boxes, atol=1e-4)
        np.testing.assert_allclose(images.regions.vectors[mine], reader.region_vectors[rows], atol=2e-3)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from harmosearch.synth import generate_pairs

    out = tmp_path_factory.mktemp("pairs")
    generate_pairs(out, 3, seed=5)
    return out


def test_compositional_task_on_twin_pairs(pairs, tmp_path, monkeypatch, capsys):
    from harmosearch.cli.bench import _print_bench

    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    config = load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0})
    whole = run_bench(config, str(pairs), ("compositional",))
    result = whole["tasks"]["compositional"]
    assert set(result) >= {"global", "fused", "relations", "dataset", "seconds", "region_trust"}
    for mode in ("global", "fused", "relations"):
        assert set(result[mode]) == {"relation", "attribute", "all"}
        figures = result[mode]["all"]
        assert figures["pairs"] == 6 and all(0 <= figures[k] <= 1 for k in ("caption_wins", "image_score", "r1"))
    _print_bench(whole)  # the table `bench` prints: one row per ranking and kind, the trust aside
    printed = capsys.readouterr().out
    rows = [row for row in printed.splitlines() if "relation " in row or "attribute" in row]
    assert len(rows) == 6 and "trust" not in printed


def test_relation_aware_bench_scores_are_the_query_scores(pairs, tmp_path, monkeypatch, test_encoder):
    """The bench scores a caption against an image exactly as `harmosearch query` ranks that
    image for it (up to the index's float16 vectors), in each of its rankings: relation-aware
    (the query's stages, caption by caption), fused without relations (every caption in one
    batched pass) and global (--global-only)."""
    from harmosearch.bench.datasets import load_pair_set
    from harmosearch.bench.vectors import as_an_index, bench_vocabulary, encode_images, encode_texts, query_scores
    from harmosearch.indexing import build_index
    from harmosearch.search import Index

    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    # the regions fully weighed whatever the index's measured trust (query_scores takes settings as given)
    untrusted = {"search.trust_low": 0.0, "search.trust_high": 0.0}
    overrides = {"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0, **untrusted}
    config = load_config(overrides=overrides)
    bench = load_pair_set(pairs, "pairs")
    images = encode_images(test_encoder, config, bench)
    build_index(pairs / "images", tmp_path / "index", config, encoder=test_encoder)
    index = Index(tmp_path / "index", config, encoder=test_encoder)
    # the amounts in the images' own unit, as the index's calibration gives it to the query
    ranked, images, _, calibration = as_an_index(test_encoder, config, bench, images)
    assert calibration.spread() == pytest.approx(index.calibration.spread(), abs=1e-4)
    captions = [bench.pairs[0].captions[0], "a red circle above a blue star", "a green ring near a white cross"]
    compared = 0
    for mode, options in (("relations", {}), ("fused", {"relations": False}), ("global", {"global_only": True})):
        texts = encode_texts(test_encoder, captions, images.global_vectors.shape[1])
        rivals = bench_vocabulary(test_encoder, config.search)  # the everyday rivals, as the index weighs them
        scores = query_scores(texts, images, ranked.search, mode, None, rivals)
        for t, caption in enumerate(captions):
            found = index.search(caption, k=len(bench.images), **options).results
            by_name = {r.path: r.score for r in found}
            for i, path in enumerate(bench.images):
                if path.name in by_name:
                    assert scores[t, i] == pytest.approx(by_name[path.name], abs=3e-3), (mode, caption, path.name)
                    compared += 1
    assert compared == 3 * len(captions) * len(bench.images)  # every image of every ranking


def write_aro(root, kind="relation"):
    """A tiny ARO set in the published format: VG images, boxes and true/false captions."""
    write_image(root / "images" / "1.jpg", (200, 30, 30), (120, 90))
    write_image(root / "images" / "2.jpg", (30, 30, 200), (100, 100))
    label = {"relation": "relation_name", "attribution": "attributes"}[kind]
    entries = [
        {
            "image_id": str(i),
            "image_path": f"{i}.jpg",
            "bbox_x": 10,
            "bbox_y": 5,
            "bbox_w": 60,
            "bbox_h": 50,
            "true_caption": f"the horse is eating the grass {i}",
            "false_caption": f"the grass is eating the horse {i}",
            label: "eating" if kind == "relation" else ["red", "white"],
        }
        for i in (1, 2, 1)
    ]
    (root / f"visual_genome_{kind}.json").write_text(json.dumps(entries))


def test_aro_relation_format_runs_and_missing_files_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMOSEARCH_CACHE", str(tmp_path / "cache"))
    write_aro(tmp_path / "aro")
    config = load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0})
    result = run_bench(config, "aro-relation", data_dir=tmp_path / "aro")
    figures = result["tasks"]["compositional"]
    assert figures["relations"]["items"] == 3 and 0 <= figures["global"]["accuracy"] <= 1
    with pytest.raises(DataError, match=r"visual_genome_attribution\.json"):
        run_bench(config, "aro-attribution", data_dir=tmp_path / "aro")
    with pytest.raises(DataError, match="needs --data-dir"):
        run_bench(config, "aro-relation")


def test_crops_encode_only_their_part(tmp_path, test_encoder):
    """An ARO crop is encoded as if it were the whole picture."""
    from harmosearch.bench.datasets import BenchSet
    from harmosearch.bench.vectors import encode_images

    config = load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0})
    picture = Image.new("RGB", (120, 60), (0, 0, 255))
    picture.paste((255, 0, 0), (0, 0, 60, 60))
    picture.save(tmp_path / "two.png")
    Image.new("RGB", (60, 60), (255, 0, 0)).save(tmp_path / "red.png")
    cropped = BenchSet("c", tmp_path, [tmp_path / "two.png"], crops=[(0.0, 0.0, 60.0, 60.0)])
    whole = BenchSet("w", tmp_path, [tmp_path / "red.png"])
    config = load_config(
        overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "paths.cache": str(tmp_path / "cache")}
    )
    a, b = encode_images(test_encoder, config, cropped), encode_images(test_encoder, config, whole)
    np.testing.assert_allclose(a.global_vectors, b.global_vectors, atol=1e-5)
    np.testing.assert_allclose(a.regions.boxes, b.regions.boxes, atol=1e-4)


def test_synthetic_object_sets_have_their_own_seeds_and_folders(tmp_path):
    from harmosearch.bench import default_tasks
    from harmosearch.bench.datasets import OBJECT_SEEDS

    seeds = [seed for splits in OBJECT_SEEDS.values() for seed in splits.values()]
    assert len(set(seeds)) == len(seeds)  # no set shares a seed with another, val never with test
    small = load_bench_set("synthetic", None, tmp_path, n=3, task="search", split="val", objects="small")
    assert small.root == tmp_path / "bench" / f"synthetic-small-{OBJECT_SEEDS['small']['val']}-3"
    assert "small objects val" in small.name and len(small.images) == 3
    info = json.loads((small.root / "annotations.json").read_text())["info"]
    assert info["objects"] == "small" and info["seed"] == OBJECT_SEEDS["small"]["val"]
    assert all(max(x1 - x0, y1 - y0) <= 49 for _, (x0, y0, x1, y1), _ in small.boxes)
    with pytest.raises(DataError, match="compositional"):
        load_bench_set("synthetic", None, tmp_path, n=4, task="compositional", objects="large")
    with pytest.raises(DataError, match="object set"):
        load_bench_set("synthetic", None, tmp_path, n=4, objects="tiny")
    assert "compositional" in default_tasks("synthetic") and "compositional" not in default_tasks("synthetic", "small")


def test_records_carry_the_commit_and_whether_the_tree_was_clean(tmp_path):
    """Every appended record names the commit that made it and whether the tree was clean."""
    import subprocess

    from harmosearch.bench import append_record, source_state

    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    (repo / "a.txt").write_text("a")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    head = git("rev-parse", "HEAD").strip()
    assert source_state(repo) == {"commit": head, "clean": True}
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "benchmarks" / "results" / "r.jsonl").write_text("{}\n")  # a record a run appended
    assert source_state(repo) == {"commit": head, "clean": True}
    (repo / "b.txt").write_text("b")  # untracked
    assert source_state(repo) == {"commit": head, "clean": False}
    assert source_state(tmp_path / "nowhere") == {"commit": None, "clean": None}
    record = json.loads(append_record(tmp_path / "r.jsonl", {"figure": 1}, "harmosearch bench").read_text())
    assert record["commit"] == source_state()["commit"] and record["commit"]  # this checkout's
    assert isinstance(record["clean"], bool) and record["figure"] == 1
