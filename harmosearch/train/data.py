"""Training samples: an image, one caption, and the caption's lexemes linked to boxes.

Three sources, one sample shape:
- harmosearch scene folders (`annotations.json` from `harmosearch synth`, or any folder in that
  COCO-style format with `phrase` per annotation and `captions`);
- COCO (instances + captions JSON): lexemes linked to boxes through category names and synonyms;
- Flickr30k Entities (Sentences/*.txt with [/EN#id/type phrase] markup, Annotations/*.xml).
Links are (words of a phrase, box); a caption's parsed lexeme takes the link that shares its
head word and the most words with it (ties: the largest box, or none with match = "skip").
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmosearch.errors import DataError
from harmosearch.model.lexemes import ParsedText

# COCO category -> words a caption may use for it (the category's own words are always in).
COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "man",
        "men",
        "woman",
        "women",
        "people",
        "boy",
        "boys",
        "girl",
        "girls",
        "child",
        "children",
        "kid",
        "kids",
        "player",
        "guy",
        "lady",
        "person",
        "persons",
        "skier",
        "surfer",
        "skateboarder",
    ),
    "bicycle": ("bike", "bikes", "bicycles"),
    "car": ("cars",),
    "motorcycle": ("motorbike", "motorcycles"),
    "airplane": ("plane", "airplanes", "planes", "jet", "aircraft"),
    "bus": ("buses",),
    "train": ("trains",),
    "truck": ("trucks",),
    "boat": ("boats", "ship"),
    "dog": ("dogs", "puppy"),
    "cat": ("cats", "kitten"),
    "horse": ("horses",),
    "sheep": ("lamb",),
    "cow": ("cows", "cattle"),
    "tv": ("television", "tvs"),
    "couch": ("sofa",),
    "cell phone": ("phone", "cellphone"),
    "dining table": ("table",),
    "potted plant": ("plant", "plants"),
    "sports ball": ("ball",),
    "laptop": ("computer", "laptops"),
    "donut": ("donuts", "doughnut"),
}


@dataclass(frozen=True)
class Link:
    words: frozenset[str]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    text: str = ""  # the phrase as annotated (lexeme source "annotations")


@dataclass(frozen=True)
class Sample:
    image: Path
    captions: tuple[str, ...]
    links: tuple[Link, ...]  # for Flickr30k Entities, links of every caption together
    size: tuple[int, int]  # width, height


def xywh_to_xyxy(bbox: list[float]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in bbox)
    return (x, y, x + w, y + h)


def link_lexemes(parsed: ParsedText, links: tuple[Link, ...], match: str = "largest") -> list[tuple[int, Link]]:
    """(lexeme index, link) for every lexeme of `parsed` that a link describes."""
    pairs = []
    for i, lexeme in enumerate(parsed.lexemes):
        words = parsed.words[lexeme.words[0] : lexeme.words[1]]
        head, wordset = words[-1], set(words)
        scored = [(len(wordset & link.words), link) for link in links if head in link.words]
        if not scored:
            continue
        best = max(score for score, _ in scored)
        tied = [link for score, link in scored if score == best]
        if len(tied) > 1 and match == "skip":
            continue
        pairs.append((i, max(tied, key=lambda lk: (lk.box[2] - lk.box[0]) * (lk.box[3] - lk.box[1]))))
    return pairs


def load_scene_folder(root: Path) -> list[Sample]:
    """A folder with annotations.json in harmosearch's COCO-style format (images under images/)."""
    path = Path(root) / "annotations.json"
    if not path.is_file():
        raise DataError(f"{root} has no annotations.json (make one with: harmosearch synth {root})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    captions = defaultdict(list)
    for c in data.get("captions", []):
        captions[c["image_id"]].append(c["caption"])
    links = defaultdict(list)
    for a in data.get("annotations", []):
        phrase = a.get("phrase")
        if phrase and not a.get("hidden"):  # hidden: a photo-world object that barely shows
            words = frozenset(phrase.lower().split())
            links[a["image_id"]].append(Link(words, xywh_to_xyxy(a["bbox"]), phrase.lower()))
    images_dir = Path(root) / "images"
    samples = []
    for im in data["images"]:
        if not captions[im["id"]]:
            continue
        file = images_dir / im["file_name"]
        if not file.is_file():
            file = Path(root) / im["file_name"]
        samples.append(Sample(file, tuple(captions[im["id"]]), tuple(links[im["id"]]), (im["width"], im["height"])))
    if not samples:
        raise DataError(f"{path} holds no images with captions")
    return samples


def load_coco(images_dir: Path, instances: Path, captions: Path) -> list[Sample]:
    """COCO instances + captions files; lexemes link to instances through category words."""
    try:
        inst = json.loads(Path(instances).read_text(encoding="utf-8"))
        caps = json.loads(Path(captions).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read COCO annotations: {exc}") from None
    names = {c["id"]: c["name"] for c in inst["categories"]}
    by_image_caps = defaultdict(list)
    for c in caps["annotations"]:
        by_image_caps[c["image_id"]].append(c["caption"].strip())
    by_image_links = defaultdict(list)
    for a in inst["annotations"]:
        if a.get("iscrowd"):
            continue
        name = names[a["category_id"]]
        words = frozenset(name.split()) | frozenset(COCO_SYNONYMS.get(name, ())) | {name.split()[-1] + "s"}
        by_image_links[a["image_id"]].append(Link(words, xywh_to_xyxy(a["bbox"]), name))
    samples = []
    for im in inst["images"]:
        if by_image_caps[im["id"]]:
            samples.append(
                Sample(
                    Path(images_dir) / im["file_name"],
                    tuple(by_image_caps[im["id"]]),
                    tuple(by_image_links[im["id"]]),
                    (im["width"], im["height"]),
                )
            )
    if not samples:
        raise DataError(f"no COCO images with captions in {instances} and {captions}")
    return samples


ENTITY = re.compile(r"\[/EN#(\d+)/[^ ]+ ([^\]]+)\]")


def load_flickr30k_entities(root: Path, image_ids: list[str] | None = None) -> list[Sample]:
    """Flickr30k Entities: ROOT/Sentences/ID.txt, ROOT/Annotations/ID.xml, images in ROOT/images
    (or ROOT/flickr30k-images)."""
    root = Path(root)
    sentences_dir, boxes_dir = root / "Sentences", root / "Annotations"
    if not sentences_dir.is_dir() or not boxes_dir.is_dir():
        raise DataError(f"{root} needs Sentences/ and Annotations/ (Flickr30k Entities layout)")
    images_dir = next((d for d in (root / "images", root / "flickr30k-images") if d.is_dir()), root / "images")
    ids = image_ids or sorted(p.stem for p in sentences_dir.glob("*.txt"))
    samples = []
    for image_id in ids:
        xml_file = boxes_dir / f"{image_id}.xml"
        if not xml_file.is_file():
            continue
        tree = ET.parse(xml_file).getroot()
        width = int(tree.findtext("size/width", "0"))
        height = int(tree.findtext("size/height", "0"))
        boxes = defaultdict(list)
        for obj in tree.iter("object"):
            box = obj.find("bndbox")
            if box is None:
                continue
            xyxy = tuple(float(box.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax"))
            for name in obj.iter("name"):
                boxes[name.text].append(xyxy)
        captions, links = [], []
        for line in (sentences_dir / f"{image_id}.txt").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            for entity, phrase in ENTITY.findall(line):
                for xyxy in boxes.get(entity, [])[:1]:
                    links.append(Link(frozenset(phrase.lower().split()), xyxy, phrase.lower()))  # type: ignore[arg-type]
            captions.append(ENTITY.sub(lambda m: m.group(2), line).strip())
        samples.append(Sample(images_dir / f"{image_id}.jpg", tuple(captions), tuple(links), (width, height)))
    if not samples:
        raise DataError(f"no Flickr30k Entities samples found under {root}")
    return samples


def load_dataset(path: Path) -> list[Sample]:
    """Pick the loader by what the folder holds."""
    path = Path(path)
    if (path / "annotations.json").is_file():
        return load_scene_folder(path)
    if (path / "Sentences").is_dir():
        return load_flickr30k_entities(path)
    annotations = path / "annotations"
    for split in ("train2017", "val2017", "train2014", "val2014"):
        inst, caps = annotations / f"instances_{split}.json", annotations / f"captions_{split}.json"
        if inst.is_file() and caps.is_file():
            return load_coco(path / split, inst, caps)
    raise DataError(
        f"{path} is not a training set harmosearch knows: expected annotations.json (harmosearch synth), "
        "Sentences/ + Annotations/ (Flickr30k Entities) or annotations/instances_*.json + captions_*.json (COCO)"
    )


class PixelCache:
    """Every sample's resized uint8 pixels [S, S, 3], kept in shared memory: the DataLoader
    workers of the first epoch decode and fill it, later epochs read it back. The values are the
    ones decoding gives, so a run with the cache equals one without it."""

    def __init__(self, n: int, size: int) -> None:
        import torch

        self.pixels = torch.zeros((n, size, size, 3), dtype=torch.uint8).share_memory_()
        self.sizes = torch.zeros((n, 2), dtype=torch.int32).share_memory_()  # the original width, height
        self.filled = torch.zeros(n, dtype=torch.bool).share_memory_()

    @staticmethod
    def nbytes(n: int, size: int) -> int:
        return n * size * size * 3

    def get(self, index: int) -> tuple[Any, tuple[int, int]] | None:
        if not bool(self.filled[index]):
            return None
        width, height = (int(v) for v in self.sizes[index])
        return self.pixels[index].clone(), (width, height)

    def put(self, index: int, pixels: Any, size: tuple[int, int]) -> None:
        if tuple(pixels.shape) == tuple(self.pixels.shape[1:]):
            self.pixels[index] = pixels
            self.sizes[index, 0], self.sizes[index, 1] = size
            self.filled[index] = True


class TrainingSet:
    """Yields model-ready tensors: pixels, caption tokens, and up to `max_links` lexeme-box pairs
    per sample, padded. The caption is drawn per (epoch, index) from a seed.

    With `split` (see encoder.split_transform) the pixels are the uint8 [S, S, 3] output of the
    transform's geometry half, to be finished per batch by encoder.pixels_from_uint8, and may come
    from a shared `cache`; without it they are the full transform's float [3, S, S].

    lexeme_source "caption": the caption's parsed lexemes that a link describes; their vectors
    come from the caption's own tokens (span in `spans`). "annotations": every annotated phrase,
    embedded inside `prompt` ("a photo of a red circle"). lexeme_mode "prompt" embeds each lexeme
    as its own prompt (EOT feature); both of the latter ship per-slot `lexeme_tokens`.
    `distractors` names the off-object boxes drawn around each linked box for TIGHT (none: the
    item has no `distractor_boxes`)."""

    def __init__(
        self,
        samples: list[Sample],
        transform: Any,
        tokenizer: Any,
        context_length: int,
        grid: tuple[int, int],
        image_size: int,
        resize: str,
        seed: int,
        parser: str = "rules",
        match: str = "largest",
        max_links: int = 6,
        lexeme_source: str = "caption",
        lexeme_mode: str = "token",
        prompt: str = "a photo of a {}",
        loose_factor: float = 2.0,
        distractors: tuple[str, ...] = (),
        split: Any = None,
        cache: PixelCache | None = None,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.grid = grid
        self.image_size = image_size
        self.resize = resize
        self.seed = seed
        self.parser = parser
        self.match = match
        self.max_links = max_links
        self.lexeme_source = lexeme_source
        self.lexeme_mode = lexeme_mode
        self.prompt = prompt
        self.loose_factor = loose_factor
        self.distractors = tuple(distractors)
        self.split = split
        self.cache = cache
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def _pairs(self, caption: str, links: tuple[Link, ...]) -> list[tuple[str, tuple[int, int], Link]]:
        """(lexeme text, token span in the caption or -1s, link) for each supervised lexeme."""
        from harmosearch.model.lexemes import parse

        if self.lexeme_source == "annotations":
            return [(link.text or " ".join(sorted(link.words)), (-1, -1), link) for link in links[: self.max_links]]
        parsed = parse(caption, self.tokenizer, self.context_length, self.parser)
        return [
            (parsed.lexemes[i].text, parsed.lexemes[i].tokens, link)
            for i, link in link_lexemes(parsed, links, self.match)[: self.max_links]
        ]

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np
        import torch
        from PIL import Image

        from harmosearch.model.lexemes import parse, span_of
        from harmosearch.regions.proposals import to_grid

        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        caption = sample.captions[int(rng.integers(len(sample.captions)))]
        cached = self.cache.get(index) if self.cache is not None else None
        if cached is not None:
            pixels, (width, height) = cached
        else:
            with Image.open(sample.image) as image:
                width, height = image.size
                if self.split is None:
                    pixels = self.transform(image.convert("RGB"))
                else:
                    pixels = torch.from_numpy(np.asarray(self.split[0](image.convert("RGB")), dtype=np.uint8).copy())
                    if self.cache is not None:
                        self.cache.put(index, pixels, (width, height))
        pairs = self._pairs(caption, sample.links)
        own_prompts = self.lexeme_source == "annotations" or self.lexeme_mode == "prompt"
        k = self.max_links
        spans = torch.zeros((k, 2), dtype=torch.long)
        boxes = torch.zeros((k, 4), dtype=torch.float32)
        off_boxes = torch.zeros((k, len(self.distractors), 4), dtype=torch.float32)
        crop_boxes = torch.zeros((k, 4), dtype=torch.float32)
        valid = torch.zeros(k, dtype=torch.bool)
        lexeme_ids = torch.full((k,), -1, dtype=torch.long)
        lexeme_tokens = torch.zeros((k, self.context_length), dtype=torch.long)
        scale = torch.tensor([self.image_size / self.grid[1], self.image_size / self.grid[0]] * 2)
        for slot, (text, span, link) in enumerate(pairs):
            if own_prompts:
                prompt = self.prompt.format(text)
                lexeme_tokens[slot] = self.tokenizer([prompt])[0]
                target = parse(text, self.tokenizer, self.context_length, "rules").words
                span = span_of(parse(prompt, self.tokenizer, self.context_length, "rules"), target)
            spans[slot] = torch.tensor(span)
            pixel_box = torch.tensor([link.box], dtype=torch.float32)
            boxes[slot] = to_grid(pixel_box, width, height, self.grid, self.image_size, self.resize)[0]
            crop_boxes[slot] = boxes[slot] * scale
            if self.distractors:
                off_boxes[slot] = distractor_boxes(boxes[slot], self.distractors, self.loose_factor, self.grid, rng)
            valid[slot] = True
            lexeme_ids[slot] = _text_id(text)
        item = {
            "pixels": pixels,
            "tokens": self.tokenizer([caption])[0],
            "spans": spans,  # token spans: in the caption, or in lexeme_tokens when those are given
            "boxes": boxes,  # grid units
            "crop_boxes": crop_boxes,  # pixels of the model input
            "valid": valid,
            "lexeme_ids": lexeme_ids,  # equal ids = textually identical lexemes
        }
        if own_prompts:
            item["lexeme_tokens"] = lexeme_tokens
        if self.distractors:
            item["distractor_boxes"] = off_boxes  # grid units, [slots, kinds, 4]
        return item


def loose_box(box: Any, factor: float, grid: tuple[int, int]) -> Any:
    """The box (x0, y0, x1, y1) grown `factor` times in width and height about its centre, then
    shifted (not shrunk) to lie inside the grid where it fits."""
    import torch

    grid_h, grid_w = grid
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = min((x1 - x0) * factor, grid_w), min((y1 - y0) * factor, grid_h)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - w / 2, 0.0), grid_w - w)
    top = min(max(cy - h / 2, 0.0), grid_h - h)
    return torch.tensor([left, top, left + w, top + h])


def part_box(box: Any, rng: Any) -> Any:
    """A random box inside `box`, each side 35-65% of the box's."""
    import torch

    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = (x1 - x0) * rng.uniform(0.35, 0.65), (y1 - y0) * rng.uniform(0.35, 0.65)
    left, top = x0 + rng.uniform(0, x1 - x0 - w), y0 + rng.uniform(0, y1 - y0 - h)
    return torch.tensor([left, top, left + w, top + h])


def shifted_box(box: Any, rng: Any, grid: tuple[int, int]) -> Any:
    """`box` moved by 50-90% of its size along a random direction, then kept inside the grid
    (where the grid edge stops it, it moves the other way)."""
    import torch

    grid_h, grid_w = grid
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    angle = rng.uniform(0, 2 * math.pi)
    dx, dy = math.cos(angle), math.sin(angle)
    reach = rng.uniform(0.5, 0.9) / max(abs(dx), abs(dy))  # on the square, so one side moves 50-90%
    moved = []
    for low, side, step, limit in ((x0, w, dx * w * reach, grid_w), (y0, h, dy * h * reach, grid_h)):
        start = low + step
        if start < 0 or start + side > limit:
            start = low - step
        moved.append(min(max(start, 0.0), max(limit - side, 0.0)))
    return torch.tensor([moved[0], moved[1], moved[0] + w, moved[1] + h])


def distractor_boxes(box: Any, kinds: tuple[str, ...], loose_factor: float, grid: tuple[int, int], rng: Any) -> Any:
    """The off-object boxes of `kinds` (loose, part, shift) for one box, [len(kinds), 4]."""
    import torch

    made = {
        "loose": lambda: loose_box(box, loose_factor, grid),
        "part": lambda: part_box(box, rng),
        "shift": lambda: shifted_box(box, rng, grid),
    }
    return torch.stack([made[kind]() for kind in kinds])


def _text_id(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode("utf-8"))
