"""Compositional evaluation: twin image pairs and the ARO benchmark, from scores the caller computes.

Twin pairs (`synth.generate_pairs`) follow Winoground (Thrush et al., CVPR 2022). A pair has
images I0, I1 and captions C0, C1, Ci true for Ii; s(C, I) is any score (global, fused,
relation-aware). Ties count as failures, as in Winoground and ARO.

    caption_wins  share of the 2P captions with s(Ci, Ii) > s(Ci, I1-i): the query ranks its true
                  image above the twin, which is what a search engine must get right
    image_score   Winoground's image score: share of pairs where both captions win
    text_score    Winoground's text score: share of pairs where each image prefers its own
                  caption, s(C0, I0) > s(C1, I0) and s(C1, I1) > s(C0, I1)
    group_score   share of pairs with both
    r1, r5        recall@K of every caption among all 2P images: the share of captions with
                  fewer than K other images scoring at least as high as their own

ARO (Yuksekgonul et al., ICLR 2023): VG-Relation and VG-Attribution items are a Visual Genome
image cropped to a box with a true and a false caption (the false one swaps the relation's
arguments or the two attributes). `accuracy` is the share of items with s(true) > s(false);
`macro_accuracy` follows the published evaluation: VG-Relation averages the accuracy of each
relation, leaving out those whose swap keeps the meaning (ARO_SYMMETRIC_RELATIONS), and
VG-Attribution averages each attribute pair seen at least ARO_MIN_ATTRIBUTE_ITEMS times.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import DataError

ARO_KINDS = ("relation", "attribution")
ARO_FIELDS = ("image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption")
ARO_LABEL_FIELD = {"relation": "relation_name", "attribution": "attributes"}
# Relations the ARO evaluation leaves out of VG-Relation's macro accuracy, because exchanging
# their arguments leaves a caption that is still true or not clearly false (the list published
# with the benchmark's evaluation notebook).
ARO_SYMMETRIC_RELATIONS = frozenset(
    {
        "adjusting", "attached to", "between", "bigger than", "biting", "boarding", "brushing", "chewing",
        "cleaning", "climbing", "close to", "coming from", "coming out of", "contain", "crossing", "dragging",
        "draped over", "drinking", "drinking from", "driving", "driving down", "driving on", "eating from",
        "eating in", "enclosing", "exiting", "facing", "filled with", "floating in", "floating on", "flying",
        "flying above", "flying in", "flying over", "flying through", "full of", "going down", "going into",
        "going through", "grazing in", "growing in", "growing on", "guiding", "hanging from", "hanging in",
        "hanging off", "hanging over", "higher than", "holding onto", "hugging", "in between", "jumping off",
        "jumping on", "jumping over", "kept in", "larger than", "leading", "leaning over", "leaving", "licking",
        "longer than", "looking in", "looking into", "looking out", "looking over", "looking through",
        "lying next to", "lying on top of", "making", "mixed with", "mounted on", "moving", "on the back of",
        "on the edge of", "on the front of", "on the other side of", "opening", "painted on", "parked at",
        "parked beside", "parked by", "parked in", "parked in front of", "parked near", "parked next to",
        "perched on", "petting", "piled on", "playing", "playing in", "playing on", "playing with", "pouring",
        "reaching for", "reading", "reflected on", "riding on", "running in", "running on", "running through",
        "seen through", "sitting behind", "sitting beside", "sitting by", "sitting in front of", "sitting near",
        "sitting next to", "sitting under", "skiing down", "skiing on", "sleeping in", "sleeping on",
        "smiling at", "sniffing", "splashing", "sprinkled on", "stacked on", "standing against",
        "standing around", "standing behind", "standing beside", "standing in front of", "standing near",
        "standing next to", "staring at", "stuck in", "surrounding", "swimming in", "swinging", "talking to",
        "topped with", "touching", "traveling down", "traveling on", "tying", "typing on", "underneath",
        "wading in", "waiting for", "walking across", "walking by", "walking down", "walking next to",
        "walking through", "working in", "working on", "worn on", "wrapped around", "wrapped in", "by", "of",
        "near", "next to", "with", "beside", "on the side of", "around",
    }
)  # fmt: skip
ARO_MIN_ATTRIBUTE_ITEMS = 25


@dataclass(frozen=True)
class Pair:
    """Two images that differ in one compositional detail, and the caption true for each."""

    kind: str  # "relation" or "attribute"
    images: tuple[Path, Path]
    image_ids: tuple[int, int]
    captions: tuple[str, str]  # captions[i] is true for images[i] and false for the other
    relation: str | None  # relation pairs: the relation named in the captions


@dataclass(frozen=True)
class AROItem:
    """One ARO test case: the crop of `image` to `box` with its true and false caption."""

    kind: str  # "relation" or "attribution"
    image: Path
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels: the crop
    true_caption: str
    false_caption: str
    label: str  # the relation, or the two attributes joined by "_" (ARO's grouping)


def load_pairs(folder: Path) -> list[Pair]:
    """The twin pairs of a folder written by synth.generate_pairs."""
    path = Path(folder) / "annotations.json"
    if not path.is_file():
        raise DataError(f"{folder} has no annotations.json; draw pairs with: harmosearch synth {folder} --pairs")
    data = _read_json(path)
    if not isinstance(data, dict) or not data.get("pairs"):
        raise DataError(f"{path} lists no pairs; draw pairs with: harmosearch synth {folder} --pairs")
    try:
        files = {image["id"]: Path(folder) / "images" / image["file_name"] for image in data["images"]}
        return [
            Pair(
                kind=str(pair["kind"]),
                images=(files[pair["images"][0]], files[pair["images"][1]]),
                image_ids=(int(pair["images"][0]), int(pair["images"][1])),
                captions=(str(pair["captions"][0]), str(pair["captions"][1])),
                relation=pair.get("relation"),
            )
            for pair in data["pairs"]
        ]
    except (KeyError, IndexError, TypeError) as exc:
        raise DataError(f"{path} has a malformed pair or image entry ({exc!r})") from None


def load_aro(kind: str, data_dir: Path) -> list[AROItem]:
    """ARO's VG-Relation (kind "relation") or VG-Attribution ("attribution") items, laid out as
    the benchmark publishes them: DATA_DIR/visual_genome_{kind}.json and DATA_DIR/images/."""
    if kind not in ARO_KINDS:
        raise DataError(f"unknown ARO dataset {kind!r}; choose from {', '.join(ARO_KINDS)}")
    data_dir = Path(data_dir)
    path, images = data_dir / f"visual_genome_{kind}.json", data_dir / "images"
    if not path.is_file() or not images.is_dir():
        raise DataError(
            f"ARO {kind} data not found: expected {path} and the Visual Genome images under {images}/ "
            "(both from the ARO release, github.com/mertyg/vision-language-models-are-bows)"
        )
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path} must hold a JSON list of test cases")
    items = [_aro_item(kind, entry, i, path, images) for i, entry in enumerate(entries)]
    missing = [item.image for item in items if not item.image.is_file()]
    if missing:
        raise DataError(f"{len(missing)} ARO images are missing under {images}/, e.g. {missing[0].name}")
    return items


def _aro_item(kind: str, entry: Any, index: int, path: Path, images: Path) -> AROItem:
    label_field = ARO_LABEL_FIELD[kind]
    absent = [f for f in (*ARO_FIELDS, label_field) if not isinstance(entry, dict) or f not in entry]
    if absent:
        raise DataError(f"{path}: entry {index} lacks {', '.join(absent)}")
    try:
        x, y, w, h = (float(entry[f]) for f in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
    except (TypeError, ValueError):
        raise DataError(f"{path}: entry {index} has a non-numeric bbox") from None
    label = entry[label_field]
    return AROItem(
        kind=kind,
        image=images / str(entry["image_path"]),
        box=(x, y, x + w, y + h),
        true_caption=str(entry["true_caption"]),
        false_caption=str(entry["false_caption"]),
        label="_".join(map(str, label)) if isinstance(label, list) else str(label),
    )


def aro_image(item: AROItem) -> Any:
    """The item's image cropped to its box, as ARO scores it (a PIL RGB image)."""
    from PIL import Image

    try:
        with Image.open(item.image) as image:
            return image.convert("RGB").crop(item.box)
    except OSError as exc:
        raise DataError(f"cannot read ARO image {item.image}: {exc}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def twin_scores(scores: np.ndarray) -> dict[str, float]:
    """scores [P, 2, 2], scores[p, c, i] = s(caption c of pair p, image i of pair p) -> the
    Winoground-style shares of the module docstring."""
    s = np.asarray(scores, np.float64).reshape(-1, 2, 2)
    if len(s) == 0:
        return {"pairs": 0.0, "caption_wins": 0.0, "image_score": 0.0, "text_score": 0.0, "group_score": 0.0}
    own = s[:, [0, 1], [0, 1]]  # s(C0, I0), s(C1, I1)
    caption_wins = own > s[:, [0, 1], [1, 0]]  # against s(C0, I1), s(C1, I0)
    image_prefers_own = own > s[:, [1, 0], [0, 1]]  # against s(C1, I0), s(C0, I1)
    image_score, text_score = caption_wins.all(axis=1), image_prefers_own.all(axis=1)
    return {
        "pairs": float(len(s)),
        "caption_wins": float(caption_wins.mean()),
        "image_score": float(image_score.mean()),
        "text_score": float(text_score.mean()),
        "group_score": float((image_score & text_score).mean()),
    }


def pair_metrics(scores: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """scores [2P captions, 2P images] in pair order (caption and image 2p + i are twin i of pair
    p) -> twin_scores plus recall@K of every caption among all 2P images ("r1", "r5")."""
    s = np.asarray(scores, np.float64)
    n = s.shape[0]
    if s.shape != (n, n) or n % 2:
        raise DataError(f"pair scores must be [2P, 2P] in pair order, got shape {s.shape}")
    pairs = np.arange(n // 2)
    blocks = s.reshape(n // 2, 2, n // 2, 2)[pairs, :, pairs, :]  # [P, 2 captions, 2 images]
    # Images scoring at least as high as the true one rank above it: ties lose, as for twins.
    above = (s >= np.diag(s)[:, None]).sum(axis=1) - 1
    return twin_scores(blocks) | {f"r{k}": float(np.mean(above < k)) if n else 0.0 for k in ks}


def pair_texts(pairs: Sequence[Pair]) -> tuple[list[str], list[Path]]:
    """Captions and images of `pairs` in pair order (caption i is true for image i)."""
    return [c for p in pairs for c in p.captions], [image for p in pairs for image in p.images]


def evaluate_pairs(
    pairs: Sequence[Pair], score: Callable[[list[str], list[Path]], np.ndarray], ks: Sequence[int] = (1, 5)
) -> dict[str, dict[str, float]]:
    """pair_metrics for every kind of pair and for all of them ("all"): score(captions, images)
    is called once with pair_texts(pairs) and returns [captions, images]. Retrieval ranks each
    caption among the images of its own group."""
    captions, images = pair_texts(pairs)
    matrix = np.asarray(score(captions, images), np.float64)
    if matrix.shape != (len(captions), len(images)):
        raise DataError(f"the scorer returned shape {matrix.shape}, expected {(len(captions), len(images))}")
    groups: dict[str, list[int]] = {}
    for p, pair in enumerate(pairs):
        groups.setdefault(pair.kind, []).append(p)
    groups["all"] = list(range(len(pairs)))
    results = {}
    for name, members in groups.items():
        rows = [2 * p + i for p in members for i in (0, 1)]
        results[name] = pair_metrics(matrix[np.ix_(rows, rows)], ks)
    return results


def aro_metrics(items: Sequence[AROItem], true_scores: np.ndarray, false_scores: np.ndarray) -> dict[str, float]:
    """Accuracy and ARO's macro accuracy (module docstring) for per-item scores of the true and
    the false caption against the item's cropped image."""
    true_scores = np.asarray(true_scores, np.float64)
    false_scores = np.asarray(false_scores, np.float64)
    if true_scores.shape != (len(items),) or false_scores.shape != (len(items),):
        raise DataError(f"need one true and one false score per item ({len(items)}), got {true_scores.shape}")
    if not items:
        return {"items": 0.0, "accuracy": 0.0, "macro_accuracy": 0.0}
    correct = true_scores > false_scores
    labels = np.array([item.label for item in items])
    per_label = []
    for label in np.unique(labels):
        members = labels == label
        kind = items[int(np.flatnonzero(members)[0])].kind
        if kind == "relation" and label in ARO_SYMMETRIC_RELATIONS:
            continue
        if kind == "attribution" and members.sum() < ARO_MIN_ATTRIBUTE_ITEMS:
            continue
        per_label.append(correct[members].mean())
    return {
        "items": float(len(items)),
        "accuracy": float(correct.mean()),
        "macro_accuracy": float(np.mean(per_label)) if per_label else float("nan"),
    }
