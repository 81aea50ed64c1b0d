"""The benchmark tasks. Each takes a `Run` (the encoder, the settings, the dataset and its image
vectors) and returns a dict of figures; `TASKS` names them for `harmosearch bench --task`."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.bench.counting import counting, negation
from harmosearch.bench.datasets import BenchSet
from harmosearch.bench.metrics import box_iou, recall_image_to_text, recall_text_to_image, topk_accuracy
from harmosearch.bench.vectors import (
    ImageVectors,
    Progress,
    bench_calibration,
    bench_vocabulary,
    encode_texts,
    fused_table,
    phrase_vectors,
    query_scores,
    text_contrast,
)
from harmosearch.config import Config
from harmosearch.errors import DataError
from harmosearch.search.box_search import as_seeds
from harmosearch.search.calibration import Calibration
from harmosearch.search.contrast import Contrast, Vocabulary
from harmosearch.search.score import best_regions

# Rankings: the plain CLIP one, lexemes x regions without relations, and relation-aware (what
# `harmosearch query` does by default); "all" scores the three side by side.
RANKINGS = ("global", "fused", "relations")
MODES = (*RANKINGS, "all")


@dataclass
class Run:
    encoder: Any
    config: Config
    bench: BenchSet
    images: ImageVectors
    mode: str = "all"  # retrieval rankings: global, fused, relations or all
    save_scores: Path | None = None
    progress: Progress | None = None
    known_calibration: Calibration | None = None  # the images' calibration, when already made

    @cached_property
    def vocabulary(self) -> Vocabulary | None:
        """search.vocabulary, embedded once per run (None when search.contrast is 0)."""
        return bench_vocabulary(self.encoder, self.config.search)

    @cached_property
    def calibration(self) -> Calibration:
        """The images' own calibration, as an index of them holds it (search.calibration)."""
        return self.known_calibration or bench_calibration(self.encoder, self.images)


def retrieval(run: Run) -> dict[str, Any]:
    """Recall@1/5/10 text->image and image->text, for the global, fused and relation-aware
    rankings (or one of them)."""
    bench = run.bench
    if not bench.captions:
        raise DataError(f"{bench.name} has no captions; retrieval needs them")
    texts = encode_texts(run.encoder, bench.captions, run.images.global_vectors.shape[1], run.progress)
    rankings = RANKINGS if run.mode == "all" else (run.mode,)
    calibration = run.calibration if texts.queries else None  # for captions that count ("three shapes")
    scores = {
        mode: query_scores(texts, run.images, run.config.search, mode, None, run.vocabulary, calibration)
        for mode in rankings
    }
    modes = {}
    for name, matrix in scores.items():
        t2i = recall_text_to_image(matrix, bench.caption_image)
        i2t = recall_image_to_text(matrix, bench.caption_image)
        modes[name] = {**{f"t2i_R@{k}": v for k, v in t2i.items()}, **{f"i2t_R@{k}": v for k, v in i2t.items()}}
    if run.config.search.refine and run.config.search.rerank and "fused" in rankings:
        modes["refined"] = _refined_recall(run, texts, scores["fused"])
    if run.save_scores is not None:
        _save_scores(run.save_scores, scores, bench)
    return {
        "modes": modes,
        "images": len(bench.images),
        "captions": len(bench.captions),
        "captions_counting_or_negating": len(texts.queries),
    }


def _refined_recall(run: Run, texts: Any, fused: np.ndarray) -> dict[str, float]:
    """text->image recall@1/5/10 of the fused ranking with its best max(10, rerank) images
    refined and reordered, as `query -k 10 --refine --no-relations` ranks them (with rerank
    under 10 a smaller k reorders fewer); image->text has no such step."""
    s = run.config.search
    g = texts.global_vectors @ run.images.global_vectors.T
    every = np.arange(run.images.regions.n_images)
    _, rows = best_regions(run.images.regions, every, texts.lexemes, s.box_margin)
    heads, _, seconds = _heads(run, g, fused, rows, texts, max(10, s.rerank))
    truth = np.asarray(run.bench.caption_image)
    recall = {f"t2i_R@{k}": float(np.mean([truth[t] in heads[t, :k] for t in range(len(truth))])) for k in (1, 5, 10)}
    return {**recall, "refine_seconds_per_image": seconds or 0.0}


def _save_scores(save: Path, scores: dict[str, np.ndarray], bench: BenchSet) -> None:
    mapping = {
        "caption_image": bench.caption_image,
        "captions": bench.captions,
        "images": [str(p) for p in bench.images],
        "rows": "captions",
        "columns": "images",
    }
    try:
        for name, matrix in scores.items():
            np.save(save.with_name(f"{save.stem}.{name}.npy"), matrix.astype(np.float32))
        save.with_suffix(".json").write_text(json.dumps(mapping))
    except OSError as exc:
        raise DataError(f"--save-scores {save}: cannot write the scores ({exc.strerror or exc})") from None


def boxcls(run: Run) -> dict[str, Any]:
    """Ground-truth boxes pooled from the dense map, classified against prompt-ensembled class names."""
    bench = run.bench
    _need_boxes(bench, "boxcls")
    classes = phrase_vectors(run.encoder, bench.classes)
    labels = [c for _, _, c in bench.boxes]
    scores = run.images.gt_vectors @ classes.T
    return {**topk_accuracy(scores, labels, (1, 5)), "boxes": len(labels), "classes": len(bench.classes)}


def grounding(run: Run) -> dict[str, Any]:
    """Is the box shown for each annotated phrase, on its own image, at IoU >= 0.5 with the
    phrase's box; and does any proposal reach it (the proposal ceiling)."""
    bench, regions = run.bench, run.images.regions
    _need_boxes(bench, "grounding")
    phrases = sorted(set(bench.phrases))
    column = {p: j for j, p in enumerate(phrases)}
    images = np.array([i for i, _, _ in bench.boxes], dtype=np.int64)
    vectors = phrase_vectors(run.encoder, phrases)
    _, rows = best_regions(regions, images, vectors, run.config.search.box_margin)
    own = np.array([column[p] for p in bench.phrases], dtype=np.int64)
    indexed = regions.boxes_of(rows[np.arange(len(own)), own])
    refined, seconds = None, 0.0
    if run.config.search.refine and run.config.search.searches_boxes(run.config.regions.detail):
        refined, _, _, seconds = _refined(run, images, vectors[own], as_seeds(indexed))
    truth = np.array([box for _, box, _ in bench.boxes], dtype=np.float32).reshape(-1, 4)
    ceiling = [
        bool((box_iou(truth[n : n + 1], regions.boxes[regions.rows_of(image)]) >= 0.5).any())
        for n, image in enumerate(images)
    ]
    return {
        "accuracy": _share_fitting(truth, refined if refined is not None else indexed),
        "indexed_accuracy": _share_fitting(truth, indexed),
        "proposal_ceiling": float(np.mean(ceiling)),
        "phrases": len(own),
        **({"refine_seconds_per_image": seconds} if refined is not None else {}),
    }


def _share_fitting(truth: np.ndarray, shown: np.ndarray) -> float:
    """The share of rows where the box shown overlaps the true box at IoU >= 0.5."""
    return float(np.mean([box_iou(t[None], b[None])[0, 0] >= 0.5 for t, b in zip(truth, shown, strict=True)]))


def _refined(
    run: Run,
    images: np.ndarray,
    lexemes: np.ndarray,
    seeds: np.ndarray,
    contrast: Contrast | None = None,
    texts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """What `harmosearch query --refine` finds for lexemes[r] on image images[r] near the indexed
    box seeds[r] (search.rerank.look_again): (boxes [R, 4], their scores [R], the crop scores of
    those boxes against texts[r] [R, D] (zeros without texts), wall time per distinct image);
    with a contrast (rows: the requests), the scores rank as a query's reordering ranks. Where
    search.searches_boxes keeps the indexed boxes, they are the boxes (a NaN seed: an empty one)
    and the scores are zeros. Pictures are decoded as a query decodes them; each is encoded once
    for all its requests."""
    from harmosearch.media.formats import open_still
    from harmosearch.search.box_search import decode_side
    from harmosearch.search.rerank import look_again

    s = run.config.search
    searching = s.searches_boxes(run.config.regions.detail)
    started = time.perf_counter()
    distinct, image_of = np.unique(images, return_inverse=True)
    boxes, scores = np.zeros((len(images), 4), np.float32), np.zeros(len(images), np.float32)
    crops = np.zeros(len(images), np.float32)
    chunk = 256  # decoded images held at once
    for first in range(0, len(distinct), chunk):
        pictures = [
            open_still(run.bench.images[int(i)], decode_side(run.encoder, s.refine_scale))
            for i in distinct[first : first + chunk]
        ]
        wanted = np.flatnonzero((image_of >= first) & (image_of < first + chunk))
        boxes[wanted], scores[wanted], crops[wanted] = look_again(
            run.encoder,
            pictures,
            image_of[wanted] - first,
            lexemes[wanted],
            seeds[wanted],
            s,
            searching,
            None if contrast is None else contrast.columns(wanted),
            None if texts is None else texts[wanted],
        )
    return boxes, scores, crops, (time.perf_counter() - started) / max(len(distinct), 1)


def _heads(
    run: Run, g: np.ndarray, fused: np.ndarray, rows: np.ndarray, texts: Any, depth: int
) -> tuple[np.ndarray, list[np.ndarray], float | None]:
    """Per text, the first `depth` images of its fused ranking [T, depth] and the boxes shown
    there for each of its m lexemes ([depth, m, 4] per text): the indexed ones, or with
    search.refine the refined ones, the images reordered as a query's rerank stage reorders them
    when search.rerank is set (fused ranking, relations aside). Also the refinement's seconds
    per image."""
    from harmosearch.search.rerank import reordered_scores

    s, regions = run.config.search, run.images.regions
    depth = min(depth, fused.shape[1])
    heads = np.stack([np.lexsort((np.arange(len(row)), -row))[:depth] for row in fused])
    own = [np.flatnonzero(texts.owners == t) for t in range(len(fused))]
    boxes = [regions.boxes_of(rows[heads[t]][:, own[t]]) for t in range(len(fused))]
    if not s.refine or not len(texts.lexemes) or not s.refines_anything(run.config.regions.detail):
        return heads, boxes, None
    images = np.concatenate([np.repeat(heads[t], len(own[t])) for t in range(len(fused))])
    lexemes = np.concatenate([np.tile(texts.lexemes[own[t]], (depth, 1)) for t in range(len(fused))])
    seeds = as_seeds(np.concatenate([b.reshape(-1, 4) for b in boxes]))
    rows_of = np.concatenate([np.tile(own[t], depth) for t in range(len(fused))])  # request -> lexeme row
    contrast = text_contrast(texts, s, run.vocabulary) if s.rerank else None
    if contrast is not None:
        contrast = contrast.columns(rows_of)
    captions = None
    if s.rerank and s.crop_weight:  # each lexeme's text embedded as a caption, for its crops
        captions = run.encoder.encode_texts(list(texts.lexeme_texts)).numpy()[rows_of]
    refined, scores, crops, seconds = _refined(run, images, lexemes, seeds, contrast, captions)
    at = 0
    for t in range(len(fused)):
        count = depth * len(own[t])
        boxes[t] = refined[at : at + count].reshape(depth, len(own[t]), 4)
        if s.rerank and len(own[t]):
            new = reordered_scores(
                s,
                fused[t, heads[t]],
                g[t, heads[t]],
                scores[at : at + count].reshape(depth, -1),
                crops[at : at + count].reshape(depth, -1).mean(1),
            )
            order = np.lexsort((heads[t], -new))
            heads[t], boxes[t] = heads[t][order], boxes[t][order]
        at += count
    return heads, boxes, seconds


def search(run: Run, k: int = 5) -> dict[str, Any]:
    """Every annotated phrase as a query, ranked the way `harmosearch query PHRASE` ranks (fused
    global and best-region scores, the box chosen the same way; with search.refine, the best
    max(k, rerank) refined and reordered as the query reorders them, see _heads). Per phrase:
    the share of the top k that hold its object (P@k), whether any does (hit@k), and whether
    the box shown on the first that does overlaps the object at IoU >= 0.5 (box@0.5). Means
    over phrases."""
    bench, images, s = run.bench, run.images, run.config.search
    _need_boxes(bench, "search")
    owners: dict[str, dict[int, list[tuple[float, float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for (image_id, box, _), phrase in zip(bench.boxes, bench.phrases, strict=True):
        owners[phrase][image_id].append(box)
    phrases = sorted(owners)
    texts = encode_texts(run.encoder, phrases, images.global_vectors.shape[1])
    g = texts.global_vectors @ images.global_vectors.T
    contrast = text_contrast(texts, s, run.vocabulary)
    fused, rows = fused_table(g, texts.lexemes, texts.owners, images, s, contrast)
    heads, boxes, seconds = _heads(run, g, fused, rows, texts, max(k, s.rerank) if s.refine and s.rerank else k)
    precision, hits, boxed = [], [], []
    for p, phrase in enumerate(phrases):
        relevant = [n for n, i in enumerate(heads[p, :k]) if int(i) in owners[phrase]]
        precision.append(len(relevant) / k)
        hits.append(bool(relevant))
        if relevant and boxes[p].shape[1]:  # the box shown is the phrase's first lexeme's
            truth = np.array(owners[phrase][int(heads[p, relevant[0]])])
            boxed.append(float(box_iou(truth, boxes[p][relevant[0], :1]).max()) >= 0.5)
    return {
        f"P@{k}": float(np.mean(precision)),
        f"hit@{k}": float(np.mean(hits)),
        "box@0.5": float(np.mean(boxed)) if boxed else 0.0,
        "phrases": len(phrases),
        **({"refine_seconds_per_image": seconds} if seconds is not None else {}),
    }


def compositional(run: Run) -> dict[str, Any]:
    """Twin pairs that differ only by a relation or an attribute swap (Winoground-style shares and
    recall among all pair images), or ARO's true-vs-false captions, for the global ranking, the
    fused ranking without relations and the relation-aware ranking side by side."""
    from harmosearch.bench.compositional import aro_metrics, evaluate_pairs

    bench, s = run.bench, run.config.search
    dim = run.images.global_vectors.shape[1]
    if bench.pairs:

        def scorer(mode: str) -> Callable[[list[str], list[Any]], np.ndarray]:
            return lambda captions, _: query_scores(
                encode_texts(run.encoder, captions, dim), run.images, s, mode, None, run.vocabulary
            )

        return {mode: evaluate_pairs(bench.pairs, scorer(mode)) for mode in RANKINGS}
    if bench.aro:
        texts = encode_texts(run.encoder, [c for i in bench.aro for c in (i.true_caption, i.false_caption)], dim)
        own = np.repeat(np.arange(len(bench.aro)), 2)[:, None]  # each caption against its item's crop
        results = {}
        for mode in RANKINGS:
            scores = query_scores(texts, run.images, s, mode, own, run.vocabulary)[:, 0]
            results[mode] = aro_metrics(bench.aro, scores[0::2], scores[1::2])
        return results
    raise DataError(f"{bench.name} has no twin pairs or ARO items; compositional needs them")


def _need_boxes(bench: BenchSet, task: str) -> None:
    if not bench.boxes:
        raise DataError(f"{bench.name} has no boxes; {task} needs phrase-box annotations")


TASKS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "retrieval": retrieval,
    "boxcls": boxcls,
    "grounding": grounding,
    "search": search,
    "compositional": compositional,
    "counting": counting,
    "negation": negation,
}
