"""Benchmark datasets, read from local files.

Flickr30k and MSCOCO in the Karpathy test splits as LAION's CLIP_benchmark ships them, COCO
val2017 instances (boxcls, grounding), harmosearch synthetic scenes, or any folder with a
harmosearch `annotations.json`.

Synthetic scenes come in two sets that training never sees: `val`, the 500 scenes every
setting of harmosearch was chosen on, and `test`, scenes of another seed that no choice looks
at; the README reports the test set. Besides the default scenes (`objects` "mixed"), sets of
only small or only large objects (synth.OBJECT_SETS) have their own val and test seeds. So do
the photo world's scenes and twin pairs (`world` "photo"), whose val and test sets are cut from
photographs of their own split (synth.PHOTO_SPLITS), never from the training ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmosearch.config import MAX_SCENES, SynthConfig
from harmosearch.errors import DataError
from harmosearch.folders import check_folder, is_dir

# Seeds of the synthetic benchmark sets (training scenes use seed 1000, the demo 2026), and of
# the twin pairs of the compositional task.
SYNTHETIC_SEEDS = {"val": 424242, "test": 8_675_309}
OBJECT_SEEDS = {
    "mixed": SYNTHETIC_SEEDS,
    "small": {"val": 515_151, "test": 31_415_926},
    "large": {"val": 626_262, "test": 27_644_437},
}
PAIR_SEEDS = {"val": 777, "test": 27_182_818}
# The photo world's sets (objects of the default sizes): scenes, and twin pairs.
WORLD_SEEDS = {"photo": {"val": 737_373, "test": 16_180_339}}
WORLD_PAIR_SEEDS = {"photo": {"val": 888, "test": 14_142_135}}
# The counting scenes and negation pairs (synth.counting), per world; no seed above is reused.
COUNTING_SEEDS = {"flat": {"val": 646_464, "test": 17_320_508}, "photo": {"val": 353_535, "test": 22_360_679}}
NEGATION_SEEDS = {"flat": {"val": 848_484, "test": 26_457_513}, "photo": {"val": 959_595, "test": 24_494_897}}
ARO_DATASETS = {"aro-relation": "relation", "aro-attribution": "attribution"}


@dataclass
class BenchSet:
    name: str
    root: Path
    images: list[Path]
    captions: list[str] = field(default_factory=list)
    caption_image: list[int] = field(default_factory=list)
    boxes: list[tuple[int, tuple[float, float, float, float], int]] = field(default_factory=list)  # image, xyxy, class
    classes: list[str] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)  # grounding phrase of each box (default: its class)
    crops: list[tuple[float, float, float, float]] | None = None  # per image: encode only this part
    pairs: list[Any] = field(default_factory=list)  # compositional.Pair, images in pair order
    aro: list[Any] = field(default_factory=list)  # compositional.AROItem, one per image
    counts: list[tuple[int, str, int]] = field(default_factory=list)  # counting scenes: image, thing, copies
    negations: list[dict[str, Any]] = field(default_factory=list)  # {"images": [with, without], "query", ...}

    def digest(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for p in self.images:
            h.update(str(p).encode())
        h.update(json.dumps([self.captions, self.boxes, self.crops], default=list).encode())
        return h.hexdigest()[:16]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _first_dir(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root


def load_flickr30k(root: Path) -> BenchSet:
    """CLIP_benchmark's Flickr30k test: flickr30k_test_karpathy.txt (CSV image,caption) + images."""
    ann = root / "flickr30k_test_karpathy.txt"
    if not ann.is_file():
        raise DataError(
            f"--dataset flickr30k: the Flickr30k test split is not there: expected {ann} (CSV 'image,caption', "
            "the Karpathy 1K test split "
            "as CLIP_benchmark ships it) and the images in flickr30k-images/; get them from the Flickr30k "
            "site and CLIP_benchmark's annotation files, then pass --data-dir"
        )
    images_dir = _first_dir(root, ("flickr30k-images", "Images", "images"))
    index: dict[str, int] = {}
    bench = BenchSet("flickr30k", root, [])
    with ann.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row["image"]
            if name not in index:
                index[name] = len(bench.images)
                bench.images.append(images_dir / name)
            bench.captions.append(row["caption"].strip())
            bench.caption_image.append(index[name])
    return bench


def load_mscoco(root: Path) -> BenchSet:
    """CLIP_benchmark's MSCOCO 5K test: coco_test_karpathy.json ([{image, caption: [..]}]) + images."""
    ann = root / "coco_test_karpathy.json"
    if not ann.is_file():
        raise DataError(
            f"--dataset mscoco: the MSCOCO test split is not there: expected {ann} (the Karpathy 5K test split "
            "as CLIP_benchmark ships it, entries {'image': 'val2014/...jpg', 'caption': [...]}) and the images "
            "under the same folder; get them from cocodataset.org and CLIP_benchmark, then pass --data-dir"
        )
    bench = BenchSet("mscoco", root, [])
    for i, entry in enumerate(_read_json(ann)):
        bench.images.append(root / entry["image"])
        captions = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
        for caption in captions:
            bench.captions.append(caption.strip())
            bench.caption_image.append(i)
    return bench


def load_coco_instances(root: Path) -> BenchSet:
    """COCO val2017 instances (boxcls, grounding): annotations/instances_val2017.json + val2017/."""
    ann = root / "annotations" / "instances_val2017.json"
    if not ann.is_file():
        raise DataError(
            f"--dataset mscoco: COCO val2017 instances (for boxcls and grounding) are not there: expected {ann} "
            f"and images in {root / 'val2017'}"
        )
    data = _read_json(ann)
    return _from_coco_style(data, root / "val2017", "coco-val2017", root)


def _from_coco_style(data: dict[str, Any], images_dir: Path, name: str, root: Path) -> BenchSet:
    cats = sorted(data["categories"], key=lambda c: c["id"])
    class_index = {c["id"]: i for i, c in enumerate(cats)}
    bench = BenchSet(name, root, [], classes=[c["name"] for c in cats])
    image_index = {}
    for im in data["images"]:
        image_index[im["id"]] = len(bench.images)
        bench.images.append(images_dir / im["file_name"])
    for a in data.get("annotations", []):
        if a.get("iscrowd") or a.get("hidden"):  # hidden: a photo-world object that barely shows
            continue
        x, y, w, h = a["bbox"]
        bench.boxes.append((image_index[a["image_id"]], (x, y, x + w, y + h), class_index[a["category_id"]]))
        bench.phrases.append(a.get("phrase") or bench.classes[class_index[a["category_id"]]])
    for c in data.get("captions", []):
        bench.captions.append(c["caption"])
        bench.caption_image.append(image_index[c["image_id"]])
    bench.counts = [(image_index[c["image_id"]], c["phrase"], int(c["count"])) for c in data.get("counts", [])]
    bench.negations = [
        {**pair, "images": [image_index[i] for i in pair["images"]]} for pair in data.get("negations", [])
    ]
    return bench


def load_scene_folder(root: Path) -> BenchSet:
    ann = root / "annotations.json"
    if not ann.is_file():
        raise DataError(f"{root} has no annotations.json (harmosearch's COCO-style format; see harmosearch synth)")
    data = _read_json(ann)
    return _from_coco_style(data, root / "images", root.name, root)


def load_pair_set(root: Path, name: str) -> BenchSet:
    """Twin pairs (synth.generate_pairs) as a bench set whose images are in pair order."""
    from harmosearch.bench.compositional import load_pairs, pair_texts

    pairs = load_pairs(root)
    return BenchSet(name, root, pair_texts(pairs)[1], pairs=pairs)


def load_aro_set(kind: str, root: Path) -> BenchSet:
    """ARO items as a bench set: image i is item i's picture cropped to its box."""
    from harmosearch.bench.compositional import load_aro

    items = load_aro(kind, root)
    return BenchSet(f"aro-{kind}", root, [item.image for item in items], crops=[item.box for item in items], aro=items)


def load_bench_set(
    dataset: str,
    data_dir: Path | None,
    cache: Path,
    n: int = 500,
    task: str = "retrieval",
    split: str = "test",
    objects: str = "mixed",
    world: str = "flat",
) -> BenchSet:
    """The named dataset (flickr30k, mscoco, synthetic, aro-relation, aro-attribution) or a scene
    folder; synthetic scenes (of the `objects` set, in the flat or the photo `world`) and twin
    pairs of `split` (val or test) are drawn into the cache on first use (n scenes, or n / 2
    pairs of each kind)."""
    check_bench_options(dataset, data_dir, n, split, objects, world)
    if dataset in ARO_DATASETS:
        if data_dir is None:
            raise DataError(f"--dataset {dataset} needs --data-dir: the folder with the ARO files and images/")
        return load_aro_set(ARO_DATASETS[dataset], data_dir)
    if dataset == "synthetic":
        return _synthetic(data_dir, cache, n, task, split, objects, world)
    if dataset in ("flickr30k", "mscoco"):
        root = data_dir or cache / "datasets" / dataset
        if dataset == "mscoco" and task != "retrieval":
            return load_coco_instances(root)
        return load_flickr30k(root) if dataset == "flickr30k" else load_mscoco(root)
    path = Path(dataset)
    if is_dir(path):
        return load_pair_set(path, path.name) if task == "compositional" else load_scene_folder(path)
    raise DataError(
        f"unknown dataset {dataset!r}: use flickr30k, mscoco, synthetic, aro-relation, aro-attribution "
        "or a folder with annotations.json"
    )


def check_bench_options(dataset: str, data_dir: Path | None, n: int, split: str, objects: str, world: str) -> None:
    """Each option of a bench set on its own, checked for every dataset (so that an option the
    dataset does not use never passes unnoticed), reading and drawing nothing."""
    if not 2 <= n <= MAX_SCENES:
        raise DataError(f"--n must lie in [2, {MAX_SCENES:,}] scenes, got {n}")
    if data_dir is not None:  # a folder, or one that could be made (scenes are drawn into it)
        check_folder(data_dir, "--data-dir")
    if not dataset.strip():
        raise DataError("--dataset is empty: name a dataset (synthetic, flickr30k, mscoco, ...) or a folder")
    if split not in SYNTHETIC_SEEDS:
        raise DataError(f"unknown split {split!r}: use {' or '.join(SYNTHETIC_SEEDS)}")
    if objects not in OBJECT_SEEDS:
        raise DataError(f"unknown object set {objects!r}: use {', '.join(OBJECT_SEEDS)}")
    if world != "flat" and world not in WORLD_SEEDS:
        raise DataError(f"unknown world {world!r} for a bench set: use flat or {' or '.join(WORLD_SEEDS)}")


def check_synthetic_pairs(task: str, objects: str, world: str) -> None:
    """The options of a synthetic bench set that do not go together (each good on its own)."""
    if world != "flat" and objects != "mixed":
        raise DataError(f"{world}-world bench sets have objects of the default sizes only; drop --objects")
    if task == "compositional" and objects != "mixed":
        raise DataError("twin pairs have objects of the default sizes only; drop --objects for compositional")


def _synthetic(data_dir: Path | None, cache: Path, n: int, task: str, split: str, objects: str, world: str) -> BenchSet:
    check_synthetic_pairs(task, objects, world)
    folder = "" if world == "flat" else f"{world}-"  # flat sets keep the folders they always had
    named = "" if world == "flat" else f" {world} world"
    if task == "compositional":
        seed = PAIR_SEEDS[split] if world == "flat" else WORLD_PAIR_SEEDS[world][split]
        root = data_dir or cache / "bench" / f"pairs-{folder}{seed}-{n // 2}"
        if not (root / "annotations.json").is_file():
            from harmosearch.synth import generate_pairs

            generate_pairs(root, n // 2, seed, workers=2, world=world, photos=split)
        return load_pair_set(root, f"synthetic pairs{named} {split} (seed {seed}, {n // 2} of each kind)")
    if task in ("counting", "negation"):
        return _counting_set(data_dir, cache, n, task, split, objects, world)
    seed = OBJECT_SEEDS[objects][split] if world == "flat" else WORLD_SEEDS[world][split]
    if objects != "mixed":
        folder, named = f"{objects}-", f" {objects} objects"
    root = data_dir or cache / "bench" / f"synthetic-{folder}{seed}-{n}"
    if not (root / "annotations.json").is_file():
        from harmosearch.synth import generate

        generate(root, SynthConfig(n=n, seed=seed, objects=objects, world=world, photos=split), workers=2)
    bench = load_scene_folder(root)
    bench.name = f"synthetic{named} {split} (seed {seed}, {len(bench.images)} scenes)"
    return bench


def _counting_set(
    data_dir: Path | None, cache: Path, n: int, task: str, split: str, objects: str, world: str
) -> BenchSet:
    """Counting scenes (n) or negation pairs (n / 2 pairs), synth.counting's, of `split`, in the
    flat world or on photographs of the split."""
    from harmosearch.synth.counting import generate_counting, generate_negation_pairs

    if objects != "mixed":
        raise DataError(f"{task} scenes have objects of 20-60 px of their own; drop --objects")
    counting = task == "counting"
    seed = (COUNTING_SEEDS if counting else NEGATION_SEEDS)[world][split]
    size = n if counting else n // 2
    folder = "" if world == "flat" else f"{world}-"
    root = data_dir or cache / "bench" / f"{task}-{folder}{seed}-{size}"
    if not (root / "annotations.json").is_file():
        draw = generate_counting if counting else generate_negation_pairs
        draw(root, size, seed, workers=2, world=world, photos=split)
    bench = load_scene_folder(root)
    what = f"{size} scenes" if counting else f"{size} pairs"
    named = "" if world == "flat" else f" {world} world"
    bench.name = f"synthetic {task}{named} {split} (seed {seed}, {what})"
    return bench
