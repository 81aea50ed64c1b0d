import json

import pytest
import torch
from safetensors.torch import load_file

from harmosearch.config import SynthConfig, load_config
from harmosearch.model.encoder import load_encoder
from harmosearch.model.lexemes import parse
from harmosearch.synth import generate
from harmosearch.train.data import Link, link_lexemes, load_dataset
from harmosearch.train.loop import train


@pytest.fixture(scope="module")
def train_scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_scenes")
    generate(out, SynthConfig(n=32, seed=21, size=96))
    return out


def tiny_config(**extra):
    overrides = {
        "encoder.model": "harmo-test-vit:random",
        "encoder.device": "cpu",
        "train.batch_size": 8,
        "train.workers": 0,
        "train.lr": 2e-3,
        "train.warmup_steps": 2,
        "train.precision": "fp32",
    }
    return load_config(overrides={**overrides, **extra})


def test_lexemes_link_to_the_box_of_their_object():
    parsed = parse("a small red circle to the left of a blue circle on a striped background")
    links = (Link(frozenset({"red", "circle"}), (0, 0, 10, 10)), Link(frozenset({"blue", "circle"}), (20, 0, 30, 10)))
    pairs = link_lexemes(parsed, links)
    assert [(parsed.lexemes[i].text, link.box) for i, link in pairs] == [
        ("small red circle", (0, 0, 10, 10)),
        ("blue circle", (20, 0, 30, 10)),
    ]


def test_ties_take_the_largest_box_or_are_skipped():
    parsed = parse("a dog on the grass")
    links = (Link(frozenset({"dog"}), (0, 0, 10, 10)), Link(frozenset({"dog"}), (0, 0, 50, 50)))
    assert link_lexemes(parsed, links)[0][1].box == (0, 0, 50, 50)
    assert link_lexemes(parsed, links, match="skip") == []


def test_training_set_yields_linked_spans(train_scenes):
    config = tiny_config()
    encoder = load_encoder(config)
    from harmosearch.train.data import TrainingSet

    ds = TrainingSet(
        load_dataset(train_scenes), encoder.transform, encoder.tokenizer, 32, encoder.grid, 32, "squash", seed=0
    )
    item = ds[0]
    assert item["pixels"].shape == (3, 32, 32)
    assert item["valid"].any()
    for (lo, hi), box, ok in zip(item["spans"], item["boxes"], item["valid"], strict=True):
        if ok:
            assert 1 <= lo < hi and (box[2:] > box[:2]).all() and (box <= 4).all()


def test_pixel_cache_is_filled_by_workers_and_then_replaces_decoding(train_scenes, tmp_path):
    import shutil

    from harmosearch.model.encoder import pixels_from_uint8, split_transform
    from harmosearch.train.data import PixelCache, TrainingSet

    encoder = load_encoder(tiny_config())
    scenes = tmp_path / "scenes"
    shutil.copytree(train_scenes, scenes)
    samples = load_dataset(scenes)
    split = split_transform(encoder.transform)
    cache = PixelCache(len(samples), 32)
    args = (samples, encoder.transform, encoder.tokenizer, 32, encoder.grid, 32, "squash")
    cached = TrainingSet(*args, seed=0, split=split, cache=cache)
    plain = TrainingSet(*args, seed=0)
    loader = torch.utils.data.DataLoader(cached, batch_size=8, num_workers=2)
    first = list(loader)
    assert bool(cache.filled.all())  # written by the worker processes, seen here
    # The uint8 half plus the batched finish is the full transform.
    finished = pixels_from_uint8(first[0]["pixels"], *split[1])
    reference = torch.stack([plain[i]["pixels"] for i in range(8)])
    assert torch.allclose(finished, reference, atol=1e-6)
    shutil.rmtree(scenes / "images")  # from now on only the cache can supply pixels
    again = list(torch.utils.data.DataLoader(cached, batch_size=8, num_workers=2))
    for a, b in zip(first, again, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_training_with_the_pixel_cache_equals_decoding_every_epoch(train_scenes, tmp_path):
    extra = {"train.epochs": 3, "train.checkpoint_every": 1000}
    train(tiny_config(**extra, **{"train.workers": 2}), train_scenes, tmp_path / "cached")
    train(tiny_config(**extra, **{"train.pixel_cache_mb": 0}), train_scenes, tmp_path / "decoded")
    cached = load_file(tmp_path / "cached" / "final" / "open_clip_model.safetensors")
    decoded = load_file(tmp_path / "decoded" / "final" / "open_clip_model.safetensors")
    for name, tensor in cached.items():
        assert torch.equal(tensor, decoded[name]), name


def test_loss_decreases_over_a_few_steps(train_scenes, tmp_path):
    config = tiny_config(**{"train.epochs": 6, "train.checkpoint_every": 1000})
    history = []
    train(config, train_scenes, tmp_path / "run", on_step=lambda m: history.append(m["total"]))
    assert len(history) == 24
    assert sum(history[-4:]) / 4 < sum(history[:4]) / 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 25))
    assert {"gc", "lrc", "gr", "total", "lr", "samples_per_s", "precision"} <= set(rows[0])
    assert rows[0]["precision"] == "fp32"  # as tiny_config sets it
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 1000
    # The final folder is a model the encoder loads, carrying the resolved training config.
    encoder = load_encoder(load_config(overrides={"encoder.model": str(tmp_path / "run" / "final")}))
    assert encoder.identity.embed_dim == 32
    meta = json.loads((tmp_path / "run" / "final" / "harmosearch.json").read_text())
    assert meta["config"]["train"]["batch_size"] == 8 and meta["step"] == 24
    # and the names its training scenes annotate, the rivals a search weighs lexemes against
    from harmosearch.train.data import load_scene_folder

    names = {link.text for sample in load_scene_folder(train_scenes) for link in sample.links}
    assert names and meta["vocabulary"] == sorted(names)
    assert encoder.vocabulary == tuple(sorted(names))


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("losses", ["gc,lrc,gr", "gc,gr"])
def test_resume_gives_the_same_weights_as_an_unbroken_run(train_scenes, tmp_path, losses):
    extra = {"train.epochs": 3, "train.checkpoint_every": 5, "train.losses": losses}
    if losses == "gc,gr":
        extra["train.gr_variant"] = "crop"
    train(tiny_config(**extra), train_scenes, tmp_path / "whole")

    def stop_at_7(metrics):
        if metrics["step"] == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_config(**extra), train_scenes, tmp_path / "broken", on_step=stop_at_7)
    result = train(tiny_config(**extra), train_scenes, tmp_path / "broken")
    assert result.resumed_from == 5 and result.steps == 12
    whole = load_file(tmp_path / "whole" / "final" / "open_clip_model.safetensors")
    resumed = load_file(tmp_path / "broken" / "final" / "open_clip_model.safetensors")
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_coco_training_set_links_category_words(tmp_path):
    from PIL import Image

    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2017").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "train2017" / "a.jpg")
    instances = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [0, 0, 10, 10], "category_id": 1, "iscrowd": 0},
            {"id": 2, "image_id": 1, "bbox": [10, 10, 30, 30], "category_id": 18, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    captions = {"annotations": [{"id": 5, "image_id": 1, "caption": "A woman walking two dogs."}]}
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(instances))
    (tmp_path / "annotations" / "captions_train2017.json").write_text(json.dumps(captions))
    [sample] = load_dataset(tmp_path)
    parsed = parse(sample.captions[0])
    pairs = {parsed.lexemes[i].text: link.box for i, link in link_lexemes(parsed, sample.links)}
    assert pairs == {"woman": (0.0, 0.0, 10.0, 10.0), "dogs": (10.0, 10.0, 40.0, 40.0)}


def test_flickr30k_entities_training_set(tmp_path):
    (tmp_path / "Sentences").mkdir()
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Sentences" / "36979.txt").write_text(
        "[/EN#1/people A man] in [/EN#2/clothing a blue shirt] holds [/EN#3/other a red kite] .\n"
    )
    (tmp_path / "Annotations" / "36979.xml").write_text(
        "<annotation><size><width>500</width><height>375</height></size>"
        "<object><name>1</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax><ymax>300</ymax></bndbox></object>"
        "<object><name>2</name><bndbox><xmin>30</xmin><ymin>60</ymin><xmax>100</xmax><ymax>150</ymax></bndbox></object>"
        "<object><name>3</name><bndbox><xmin>300</xmin><ymin>10</ymin><xmax>400</xmax><ymax>90</ymax></bndbox></object>"
        "</annotation>"
    )
    [sample] = load_dataset(tmp_path)
    assert sample.captions == ("A man in a blue shirt holds a red kite .",)
    assert sample.size == (500, 375)
    parsed = parse(sample.captions[0])
    pairs = {parsed.lexemes[i].text: link.box for i, link in link_lexemes(parsed, sample.links)}
    assert pairs == {
        "man": (10.0, 20.0, 110.0, 300.0),
        "blue shirt": (30.0, 60.0, 100.0, 150.0),
        "red kite": (300.0, 10.0, 400.0, 90.0),
    }


def test_unknown_training_folder_is_a_clear_error(tmp_path):
    from harmosearch.errors import DataError

    with pytest.raises(DataError, match="not a training set harmosearch knows"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("source", "mode"), [("annotations", "token"), ("caption", "prompt"), ("annotations", "prompt")]
)
def test_lexeme_source_and_mode_options_train(train_scenes, tmp_path, source, mode):
    config = tiny_config(
        **{
            "train.max_steps": 2,
            "train.lexeme_source": source,
            "encoder.lexeme_mode": mode,
            "train.checkpoint_every": 1000,
        }
    )
    encoder = load_encoder(config)
    from harmosearch.train.data import TrainingSet

    ds = TrainingSet(
        load_dataset(train_scenes),
        encoder.transform,
        encoder.tokenizer,
        32,
        encoder.grid,
        32,
        "squash",
        seed=0,
        lexeme_source=source,
        lexeme_mode=mode,
    )
    item = ds[3]
    assert "lexeme_tokens" in item
    n = int(item["valid"].sum())
    if source == "annotations":
        data = json.loads((train_scenes / "annotations.json").read_text())
        assert n == sum(1 for a in data["annotations"] if a["image_id"] == 3)  # every object supervised
    for slot in range(n):
        lo, hi = item["spans"][slot].tolist()
        words = encoder.tokenizer.decode(item["lexeme_tokens"][slot][lo:hi].tolist()).strip()
        assert words and words in encoder.tokenizer.decode(item["lexeme_tokens"][slot].tolist())
    history = []
    train(config, train_scenes, tmp_path / "run", on_step=lambda m: history.append(m["lrc"]))
    assert len(history) == 2 and all(v > 0 for v in history)


def test_loose_boxes_grow_about_the_centre_and_stay_inside_the_grid():
    from harmosearch.train.data import loose_box

    grid = (14, 14)
    assert loose_box(torch.tensor([5.0, 5.0, 7.0, 9.0]), 2.0, grid).tolist() == [4.0, 3.0, 8.0, 11.0]
    # Near the edge the grown box is shifted inside, keeping its size.
    assert loose_box(torch.tensor([0.0, 12.0, 2.0, 14.0]), 2.0, grid).tolist() == [0.0, 10.0, 4.0, 14.0]
    # Larger than the grid: the whole grid.
    assert loose_box(torch.tensor([1.0, 1.0, 12.0, 13.0]), 2.0, grid).tolist() == [0.0, 0.0, 14.0, 14.0]


def test_part_and_shifted_boxes_stay_off_the_object():
    import numpy as np

    from harmosearch.bench.metrics import box_iou
    from harmosearch.train.data import distractor_boxes, part_box, shifted_box

    grid, rng = (14, 14), np.random.default_rng(0)
    for _ in range(200):
        x0, y0 = rng.uniform(0, 10, size=2)
        box = torch.tensor([x0, y0, x0 + rng.uniform(1, 14 - x0), y0 + rng.uniform(1, 14 - y0)])
        w, h = float(box[2] - box[0]), float(box[3] - box[1])
        part = part_box(box, rng)
        assert part[0] >= box[0] - 1e-5 and part[1] >= box[1] - 1e-5
        assert part[2] <= box[2] + 1e-5 and part[3] <= box[3] + 1e-5
        pw, ph = float(part[2] - part[0]), float(part[3] - part[1])
        assert 0.35 * w - 1e-5 <= pw <= 0.65 * w + 1e-5 and 0.35 * h - 1e-5 <= ph <= 0.65 * h + 1e-5
        moved = shifted_box(box, rng, grid)
        assert moved[0] >= 0 and moved[1] >= 0 and moved[2] <= 14 + 1e-5 and moved[3] <= 14 + 1e-5
        assert float(moved[2] - moved[0]) == pytest.approx(w, abs=1e-4)
        assert float(moved[3] - moved[1]) == pytest.approx(h, abs=1e-4)
        if w <= 7 and h <= 7:  # room to move half a side either way: at most a third overlaps
            assert box_iou(moved[None].numpy(), box[None].numpy())[0, 0] <= 1 / 3 + 1e-5
    both = distractor_boxes(box, ("shift", "loose"), 2.0, grid, np.random.default_rng(1))
    assert both.shape == (2, 4) and both[1].tolist() == loose_box_of(box, grid)


def loose_box_of(box, grid):
    from harmosearch.train.data import loose_box

    return loose_box(box, 2.0, grid).tolist()


def test_training_with_the_tightness_term_learns_it(train_scenes, tmp_path):
    """TIGHT is trained, not only computed: over 24 steps its term falls clearly, and every step
    logs it beside the others."""
    config = tiny_config(**{"train.epochs": 6, "train.losses": "gc,lrc,gr,tight", "train.checkpoint_every": 1000})
    history = []
    train(config, train_scenes, tmp_path / "run", on_step=lambda m: history.append(m))
    assert len(history) == 24 and all({"gc", "lrc", "gr", "tight"} <= set(m) for m in history)
    first, last = (sum(m["tight"] for m in part) / 4 for part in (history[:4], history[-4:]))
    assert last < 0.75 * first, (first, last)  # measured: 4.95 -> 3.39
