"""A set of scenes written to a folder: images drawn in worker processes, then annotations.json
(COCO style plus `phrase`, `captions` and `relations`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.config import SynthConfig
from harmosearch.folders import make_folder
from harmosearch.synth.drawing import render
from harmosearch.synth.photo_drawing import render_photo
from harmosearch.synth.photo_scenes import HIDDEN_BELOW, PhotoScene, draws_photo, sample_photo_scene
from harmosearch.synth.scenes import CATEGORY_IDS, Scene, SceneObject, categories, sample_scene
from harmosearch.synth.text import captions, relation


def _scene_record(args: tuple[int, int, SynthConfig, str]) -> list[dict[str, Any]]:
    seed, index, config, images_dir = args
    caption_rng = np.random.default_rng([seed, index, 1])
    if draws_photo(config.world, [seed, index]):
        record, shown = draw_photo_record(sample_photo_scene(seed, index, config), images_dir)
        record["captions"] = captions(shown, caption_rng) if shown.objects else []
        return [record]
    scene = sample_scene(seed, index, config)
    record = draw_record(scene, images_dir)
    record["captions"] = captions(scene, caption_rng)
    return [record]


def draw_record(scene: Scene, images_dir: str) -> dict[str, Any]:
    """Render and save a scene; its image entry, annotations and relations (captions: the caller)."""
    image, masks = render(scene)
    file_name = f"{scene.index:06d}.png"
    image.save(os.path.join(images_dir, file_name), optimize=False)
    anns = [_annotation(k, obj, mask) for k, (obj, mask) in enumerate(zip(scene.objects, masks, strict=True))]
    return {
        "image": _image_entry(scene, file_name),
        "annotations": anns,
        "captions": [],
        "relations": _relations(list(enumerate(scene.objects))),
    }


def draw_photo_record(scene: PhotoScene, images_dir: str) -> tuple[dict[str, Any], PhotoScene]:
    """Render a photo-world scene and save it as JPEG; its record (captions: the caller) and the
    scene as its captions describe it. Boxes and areas are of the visible part; an object showing
    under HIDDEN_BELOW of itself is marked hidden (the bench and training skip it, relations and
    captions leave it out), and one that does not show at all is not annotated."""
    image, masks, shares = render_photo(scene)
    file_name = f"{scene.index:06d}.jpg"
    image.save(os.path.join(images_dir, file_name), format="JPEG", quality=scene.finish.quality)
    drawn = [(obj, mask, share) for obj, mask, share in zip(scene.objects, masks, shares, strict=True) if mask.any()]
    anns = []
    for k, (obj, mask, share) in enumerate(drawn):
        anns.append({**_annotation(k, obj, mask), "visible": round(share, 3), "hidden": share < HIDDEN_BELOW})
    shown = [(k, obj) for k, (obj, _, share) in enumerate(drawn) if share >= HIDDEN_BELOW]
    record = {
        "image": {**_image_entry(scene, file_name), "world": "photo"},
        "annotations": anns,
        "captions": [],
        "relations": _relations(shown),
    }
    return record, replace(scene, objects=tuple(obj for _, obj in shown))


def _annotation(k: int, obj: SceneObject, mask: np.ndarray) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return {
        "local": k,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": int(mask.sum()),
        "category_id": CATEGORY_IDS[obj.phrase],
        "phrase": obj.phrase,
        "colour": obj.colour,
        "shape": obj.shape,
        "size": obj.size,
        "iscrowd": 0,
    }


def _relations(objects: list[tuple[int, SceneObject]]) -> list[dict[str, Any]]:
    """Every pair of (local id, object), each once, in the order of the list."""
    return [
        {"subject": i, "relation": relation(a, b), "object": j}
        for n, (i, a) in enumerate(objects)
        for j, b in objects[n + 1 :]
    ]


def _image_entry(scene: Scene | PhotoScene, file_name: str) -> dict[str, Any]:
    return {
        "id": scene.index,
        "file_name": file_name,
        "width": scene.size,
        "height": scene.size,
        "background": scene.background,
    }


def generate(
    out: Path,
    config: SynthConfig,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write OUT/images/*.png (photo-world scenes: *.jpg) and OUT/annotations.json; returns the annotations."""
    images_dir = images_folder(out)
    jobs = [(config.seed, i, config, str(images_dir)) for i in range(config.n)]
    records = draw_all(_scene_record, jobs, workers, progress)
    info: dict[str, Any] = {
        "generator": "harmosearch synth",
        "version": 1,
        "seed": config.seed,
        "n": config.n,
        "size": config.size,
    }
    if config.objects != "mixed":  # named only when not the default, so default sets stay byte-identical
        info["objects"] = config.objects
    if config.world != "flat":
        info["world"] = config.world
        info["photos"] = config.photos
    data = collect_annotations(info, records)
    write_annotations(Path(out), data)
    return data


def images_folder(out: Path) -> Path:
    """OUT/images, made if missing."""
    return make_folder(Path(out) / "images", "the scenes folder")


def draw_all(
    draw: Callable[[Any], list[dict[str, Any]]],
    jobs: list[Any],
    workers: int,
    progress: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    """The records of draw(job) for every job, in job order; progress gets the images each job wrote."""
    if workers > 1 and len(jobs) >= 64:
        with ProcessPoolExecutor(workers) as pool:
            return _gather(pool.map(draw, jobs, chunksize=32), progress)
    return _gather(map(draw, jobs), progress)


def _gather(results: Iterable[list[dict[str, Any]]], progress: Callable[[int], None] | None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for drawn in results:
        records.extend(drawn)
        if progress:
            progress(len(drawn))
    return records


def collect_annotations(info: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The records of every image as one annotations.json: ids numbered across the whole set."""
    data: dict[str, Any] = {
        "info": info,
        "images": [],
        "annotations": [],
        "categories": categories(),
        "captions": [],
        "relations": [],
    }
    for record in records:
        image_id = record["image"]["id"]
        data["images"].append(record["image"])
        first_id = len(data["annotations"])
        for ann in record["annotations"]:
            local = ann.pop("local")
            data["annotations"].append({"id": first_id + local, "image_id": image_id, **ann})
        for caption in record["captions"]:
            data["captions"].append({"id": len(data["captions"]), "image_id": image_id, "caption": caption})
        for rel in record["relations"]:
            data["relations"].append(
                {
                    "image_id": image_id,
                    "subject": first_id + rel["subject"],
                    "relation": rel["relation"],
                    "object": first_id + rel["object"],
                }
            )
    return data


def write_annotations(out: Path, data: dict[str, Any]) -> None:
    """OUT/annotations.json, written beside and renamed, so a reader never sees half of it."""
    tmp = out / "annotations.json.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / "annotations.json")
