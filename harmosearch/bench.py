"""`harmosearch bench`: retrieval recall@K, box classification, phrase grounding and phrase search.

Datasets are read from local files in the formats LAION's CLIP_benchmark uses (Flickr30k and
MSCOCO Karpathy test splits), from COCO val2017 instances (boxcls, grounding), from harmosearch
synthetic scenes, or from any folder with a harmosearch `annotations.json`. Image embeddings
are cached per (model, settings, dataset), so a second task or mode does not encode again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.config import Config, SynthConfig
from harmosearch.errors import DataError
from harmosearch.fusion import fuse
from harmosearch.metrics import box_iou, recall_image_to_text, recall_text_to_image, topk_accuracy
from harmosearch.search import choose_box

PROMPTS = ("a photo of a {}.", "a {}.", "a picture of a {}.", "an image of a {}.", "a photo of the {}.")
SYNTHETIC_SEED = 424242  # never used for training data
Progress = Callable[[str, int, int], None]


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

    def digest(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for p in self.images:
            h.update(str(p).encode())
        h.update(json.dumps([self.captions, self.boxes], default=list).encode())
        return h.hexdigest()[:16]


def default_cache() -> Path:
    return Path(os.environ.get("HARMOSEARCH_CACHE", Path.home() / ".cache" / "harmosearch"))


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
            f"Flickr30k test split not found: expected {ann} (CSV 'image,caption', the Karpathy 1K test split "
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
            f"MSCOCO test split not found: expected {ann} (the Karpathy 5K test split as CLIP_benchmark "
            "ships it, entries {'image': 'val2014/...jpg', 'caption': [...]}) and the images under the same "
            "folder; get them from cocodataset.org and CLIP_benchmark, then pass --data-dir"
        )
    bench = BenchSet("mscoco", root, [])
    for i, entry in enumerate(json.loads(ann.read_text(encoding="utf-8"))):
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
        raise DataError(f"COCO val2017 instances not found: expected {ann} and images in {root / 'val2017'}")
    data = json.loads(ann.read_text(encoding="utf-8"))
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
        if a.get("iscrowd"):
            continue
        x, y, w, h = a["bbox"]
        bench.boxes.append((image_index[a["image_id"]], (x, y, x + w, y + h), class_index[a["category_id"]]))
        bench.phrases.append(a.get("phrase") or bench.classes[class_index[a["category_id"]]])
    for c in data.get("captions", []):
        bench.captions.append(c["caption"])
        bench.caption_image.append(image_index[c["image_id"]])
    return bench


def load_scene_folder(root: Path) -> BenchSet:
    ann = root / "annotations.json"
    if not ann.is_file():
        raise DataError(f"{root} has no annotations.json (harmosearch's COCO-style format; see harmosearch synth)")
    data = json.loads(ann.read_text(encoding="utf-8"))
    return _from_coco_style(data, root / "images", root.name, root)


def load_bench_set(dataset: str, data_dir: Path | None, n: int = 500, task: str = "retrieval") -> BenchSet:
    if dataset == "synthetic":
        root = data_dir or default_cache() / "bench" / f"synthetic-{SYNTHETIC_SEED}-{n}"
        if not (root / "annotations.json").is_file():
            from harmosearch.synth import generate

            generate(root, SynthConfig(n=n, seed=SYNTHETIC_SEED), workers=2)
        bench = load_scene_folder(root)
        bench.name = f"synthetic (seed {SYNTHETIC_SEED}, {len(bench.images)} scenes)"
        return bench
    if dataset in ("flickr30k", "mscoco"):
        root = data_dir or default_cache() / "datasets" / dataset
        if dataset == "mscoco" and task != "retrieval":
            return load_coco_instances(root)
        return load_flickr30k(root) if dataset == "flickr30k" else load_mscoco(root)
    path = Path(dataset)
    if path.is_dir():
        return load_scene_folder(path)
    raise DataError(f"unknown dataset {dataset!r}: use flickr30k, mscoco, synthetic or a folder with annotations.json")


@dataclass
class ImageCache:
    global_vectors: np.ndarray  # [I, D]
    region_vectors: np.ndarray  # [R, D] proposals, grouped by image
    region_boxes: np.ndarray  # [R, 4] pixels
    region_start: np.ndarray  # [I + 1]
    gt_vectors: np.ndarray  # [B, D] for bench.boxes
    seconds: float


def encode_images(
    encoder: Any, config: Config, bench: BenchSet, progress: Progress | None = None, cache_dir: Path | None = None
) -> ImageCache:
    """Global, proposal-region and ground-truth-box vectors of every image; cached on disk."""
    import torch

    from harmosearch.indexing import open_image
    from harmosearch.regions import image_regions, pool, to_grid

    key = hashlib.sha256(
        json.dumps([encoder.identity.to_dict(), config.to_json()["regions"], bench.digest()]).encode()
    ).hexdigest()[:20]
    cache_file = (cache_dir or default_cache() / "bench") / f"images-{key}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as z:
            return ImageCache(*(z[k] for k in ("g", "rv", "rb", "rs", "gt")), seconds=float(z["seconds"]))
    started = time.perf_counter()
    boxes_by_image: dict[int, list[int]] = defaultdict(list)
    for j, (image_id, _, _) in enumerate(bench.boxes):
        boxes_by_image[image_id].append(j)
    dim = encoder.identity.embed_dim
    globals_, rv, rb, counts = [], [], [], []
    gt = np.zeros((len(bench.boxes), dim), np.float32)
    batch = config.encoder.batch_size
    for start in range(0, len(bench.images), batch):
        ids = list(range(start, min(start + batch, len(bench.images))))
        try:
            images = [open_image(bench.images[i]) for i in ids]
        except DataError as exc:
            raise DataError(f"{bench.images[ids[0]].parent}: {exc}") from None
        pixels = torch.stack([encoder.image_tensor(im) for im in images])
        g, dense = encoder.encode_pixels(pixels)
        sizes = [im.size for im in images]
        regions = image_regions(
            dense, g, sizes, encoder.grid, encoder.image_size, encoder.config.resize, config.regions
        )
        for i, vec, reg, (w, h), d in zip(ids, g, regions, sizes, dense, strict=True):
            globals_.append(vec.numpy())
            rv.append(reg.vectors.numpy())
            rb.append(reg.boxes.numpy())
            counts.append(len(reg.vectors))
            if boxes_by_image.get(i):
                rows = boxes_by_image[i]
                pixel_boxes = torch.tensor([bench.boxes[j][1] for j in rows], dtype=torch.float32)
                grid_boxes = to_grid(pixel_boxes, w, h, encoder.grid, encoder.image_size, encoder.config.resize)
                gt[rows] = pool(d[None], [grid_boxes])[0].numpy()
        if progress:
            progress("encoding images", ids[-1] + 1, len(bench.images))
    result = ImageCache(
        np.stack(globals_).astype(np.float32),
        np.concatenate(rv).astype(np.float32),
        np.concatenate(rb).astype(np.float32),
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        gt,
        time.perf_counter() - started,
    )
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        g=result.global_vectors,
        rv=result.region_vectors,
        rb=result.region_boxes,
        rs=result.region_start,
        gt=result.gt_vectors,
        seconds=result.seconds,
    )
    tmp.replace(cache_file)
    return result


def best_region_scores(lexemes: np.ndarray, cache: ImageCache, chunk: int = 512) -> np.ndarray:
    """[L, D] lexeme vectors -> [L, I]: each image's best region score for each lexeme."""
    n_images = len(cache.region_start) - 1
    out = np.full((len(lexemes), n_images), -1.0, np.float32)
    starts = cache.region_start[:-1]
    nonempty = cache.region_start[1:] > starts
    for lo in range(0, len(lexemes), chunk):
        sims = lexemes[lo : lo + chunk] @ cache.region_vectors.T
        if sims.shape[1]:
            out[lo : lo + chunk][:, nonempty] = np.maximum.reduceat(sims, starts[nonempty], axis=1)
    return out


def encode_texts(
    encoder: Any, texts: list[str], dim: int, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texts embedded as queries are: (global vectors [T, D], every text's lexeme vectors [L, D],
    the text each lexeme belongs to [L])."""
    g_rows, lex_rows, owners = [], [], []
    batch = 256
    for start in range(0, len(texts), batch):
        for n, enc in enumerate(encoder.encode_queries(texts[start : start + batch])):
            g_rows.append(enc.global_vector.numpy())
            vectors = enc.lexeme_vectors.numpy()
            lex_rows.append(vectors)
            owners += [start + n] * len(vectors)
        if progress:
            progress("encoding captions", min(start + batch, len(texts)), len(texts))
    text_global = np.stack(g_rows).astype(np.float32) if g_rows else np.zeros((0, dim), np.float32)
    lexemes = np.concatenate(lex_rows).astype(np.float32) if owners else np.zeros((0, dim), np.float32)
    return text_global, lexemes, np.asarray(owners, dtype=np.int64)


def fused_scores(
    global_scores: np.ndarray, lexemes: np.ndarray, owners: np.ndarray, cache: ImageCache, alpha: float
) -> np.ndarray:
    """Text x image fused scores, as `harmosearch query` fuses: global_scores [T, I], lexeme
    vectors [L, D] and the text each belongs to [L]."""
    best = best_region_scores(lexemes, cache)
    fused = np.empty_like(global_scores)
    for c in range(len(global_scores)):
        fused[c] = fuse(global_scores[c], best[owners == c].T, alpha)  # best rows: [m, I]
    return fused


def text_scores(
    encoder: Any, captions: list[str], cache: ImageCache, mode: str, alpha: float, progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Caption x image score matrices for the requested modes (global, fused)."""
    text_global, lexemes, owners = encode_texts(encoder, captions, cache.global_vectors.shape[1], progress)
    global_scores = text_global @ cache.global_vectors.T
    out = {}
    if mode in ("global", "both"):
        out["global"] = global_scores
    if mode in ("fused", "both"):
        out["fused"] = fused_scores(global_scores, lexemes, owners, cache, alpha)
    return out


def phrase_vectors(encoder: Any, phrases: list[str], templates: tuple[str, ...] = PROMPTS) -> np.ndarray:
    """A prompt-ensembled vector per phrase, embedded the way queries embed lexemes: in token
    space the phrase's own tokens inside each prompt are pooled; in prompt mode the EOT feature."""
    import torch.nn.functional as F

    from harmosearch.encoder import pool_spans
    from harmosearch.lexemes import span_of

    out = []
    for phrase in phrases:
        texts = [t.format(phrase) for t in templates]
        if encoder.config.lexeme_mode == "prompt":
            vec = encoder.encode_texts(texts).mean(0)
        else:
            tokens = encoder.tokenize(texts)
            _, per_token = encoder.encode_tokens(tokens)
            pooled = []
            for text, tok in zip(texts, per_token, strict=True):
                parsed = encoder.parse(text)
                target = encoder.parse(phrase).words
                span = span_of(parsed, target)
                pooled.append(pool_spans(tok, [span], encoder.config.lexeme_pool)[0])
            vec = sum(pooled) / len(pooled)
        out.append(F.normalize(vec.float(), dim=0).numpy())
    return np.stack(out).astype(np.float32)


def shown_box(cache: ImageCache, image: int, vector: np.ndarray, box_margin: float) -> np.ndarray:
    """The box `harmosearch query` would show on `image` for a lexeme vector (see choose_box)."""
    lo, hi = cache.region_start[image], cache.region_start[image + 1]
    boxes = cache.region_boxes[lo:hi]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[choose_box(cache.region_vectors[lo:hi] @ vector, areas, box_margin)]


def phrase_search(
    encoder: Any, bench: BenchSet, cache: ImageCache, alpha: float, box_margin: float, k: int = 5
) -> dict[str, Any]:
    """Every annotated phrase as a query, ranked the way `harmosearch query PHRASE` ranks (fused
    global and best-region scores, the box picked by choose_box). Per phrase: the share of the
    top k that hold its object (P@k), whether any does (hit@k), and whether the box shown on the
    first that does overlaps the object at IoU >= 0.5 (box@0.5). Means over phrases."""
    owners: dict[str, dict[int, list[tuple[float, float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for (image_id, box, _), phrase in zip(bench.boxes, bench.phrases, strict=True):
        owners[phrase][image_id].append(box)
    phrases = sorted(owners)
    text_global, lexemes, lexeme_owner = encode_texts(encoder, phrases, cache.global_vectors.shape[1])
    fused = fused_scores(text_global @ cache.global_vectors.T, lexemes, lexeme_owner, cache, alpha)
    precision, hits, boxed = [], [], []
    for p, (phrase, row) in enumerate(zip(phrases, fused, strict=True)):
        top = np.lexsort((np.arange(len(row)), -row))[:k]
        relevant = [int(i) for i in top if int(i) in owners[phrase]]
        precision.append(len(relevant) / k)
        hits.append(bool(relevant))
        own = np.flatnonzero(lexeme_owner == p)
        if relevant and len(own):
            image = relevant[0]
            shown = shown_box(cache, image, lexemes[own[0]], box_margin)
            boxed.append(float(box_iou(np.array(owners[phrase][image]), shown[None]).max()) >= 0.5)
    return {
        f"P@{k}": float(np.mean(precision)),
        f"hit@{k}": float(np.mean(hits)),
        "box@0.5": float(np.mean(boxed)) if boxed else 0.0,
        "phrases": len(phrases),
    }


def run_bench(
    config: Config,
    dataset: str,
    tasks: tuple[str, ...],
    data_dir: Path | None = None,
    mode: str = "both",
    n: int = 500,
    encoder: Any = None,
    progress: Progress | None = None,
    save_scores: Path | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    if encoder is None:
        from harmosearch.encoder import load_encoder

        encoder = load_encoder(config)
    result: dict[str, Any] = {
        "dataset": dataset,
        "tasks": {},
        "model": encoder.identity.to_dict(),
        "config": config.to_json(),
        "machine": machine_info(),
    }
    for task in tasks:
        bench = load_bench_set(dataset, data_dir, n, task)
        missing = [p for p in bench.images if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} images of {bench.name} are missing, e.g. {missing[0]}")
        t0 = time.perf_counter()
        cache = encode_images(encoder, config, bench, progress)
        if task == "retrieval":
            if not bench.captions:
                raise DataError(f"{bench.name} has no captions; retrieval needs them")
            scores = text_scores(encoder, bench.captions, cache, mode, config.search.alpha, progress)
            numbers = {}
            for name, matrix in scores.items():
                t2i = recall_text_to_image(matrix, bench.caption_image)
                i2t = recall_image_to_text(matrix, bench.caption_image)
                numbers[name] = {
                    **{f"t2i_R@{k}": v for k, v in t2i.items()},
                    **{f"i2t_R@{k}": v for k, v in i2t.items()},
                }
            if save_scores is not None:
                save = Path(save_scores)
                for name, matrix in scores.items():
                    np.save(save.with_name(f"{save.stem}.{name}.npy"), matrix.astype(np.float32))
                save.with_suffix(".json").write_text(
                    json.dumps(
                        {
                            "caption_image": bench.caption_image,
                            "captions": bench.captions,
                            "images": [str(p) for p in bench.images],
                            "rows": "captions",
                            "columns": "images",
                        }
                    )
                )
            result["tasks"]["retrieval"] = {
                "modes": numbers,
                "images": len(bench.images),
                "captions": len(bench.captions),
            }
        elif task == "boxcls":
            if not bench.boxes:
                raise DataError(f"{bench.name} has no boxes; boxcls needs box annotations")
            classes = phrase_vectors(encoder, bench.classes)
            scores = cache.gt_vectors @ classes.T
            labels = [c for _, _, c in bench.boxes]
            result["tasks"]["boxcls"] = {
                **topk_accuracy(scores, labels, (1, 5)),
                "boxes": len(labels),
                "classes": len(bench.classes),
            }
        elif task == "grounding":
            if not bench.boxes:
                raise DataError(f"{bench.name} has no boxes; grounding needs phrase-box annotations")
            phrases = sorted(set(bench.phrases))
            vectors = dict(zip(phrases, phrase_vectors(encoder, phrases), strict=True))
            hits = []
            for (image_id, box, _), phrase in zip(bench.boxes, bench.phrases, strict=True):
                shown = shown_box(cache, image_id, vectors[phrase], config.search.box_margin)
                hits.append(float(box_iou(np.array([box]), shown[None])[0, 0]) >= 0.5)
            ceiling = [
                bool(
                    (
                        box_iou(np.array([box]), cache.region_boxes[cache.region_start[i] : cache.region_start[i + 1]])
                        >= 0.5
                    ).any()
                )
                for i, box, _ in bench.boxes
            ]
            result["tasks"]["grounding"] = {
                "accuracy": float(np.mean(hits)),
                "proposal_ceiling": float(np.mean(ceiling)),
                "phrases": len(hits),
            }
        elif task == "search":
            if not bench.boxes:
                raise DataError(f"{bench.name} has no boxes; search needs phrase-box annotations")
            result["tasks"]["search"] = phrase_search(
                encoder, bench, cache, config.search.alpha, config.search.box_margin
            )
        else:
            raise DataError(f"unknown task {task!r}: use retrieval, boxcls, grounding or search")
        result["tasks"][task]["dataset"] = bench.name
        result["tasks"][task]["seconds"] = round(time.perf_counter() - t0, 2)
        result["tasks"][task]["image_encoding_seconds"] = round(cache.seconds, 2)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }
