"""The counting and negation tasks, on synth.counting's scenes, ranked by the query's own stages.

counting: every (thing, n) of the scenes asked as "n things" ("two red circles") over all the
scenes: exact-count P@5 (the share of the top 5 holding exactly n copies), per n and over 1-4;
and for every scene, whether the instances found for its thing are as many as it holds (count
accuracy per number held, mean absolute count error). negation: each pair's query ("a red circle
without a blue square") scored on its two scenes: a pair is won when the scene without the
negated thing scores higher; and P@5 over all the pairs' scenes, the share of the top 5 that hold
the kept thing and not the negated one. Rankings side by side: "counting" / "negation" (the query as
`harmosearch query` ranks it), "no term" (the same with count_weight and negation_weight 0),
"global" (as `--global-only` ranks it) and, for negation, "whole text" (plain CLIP: the global
vector of the text as written, negation and all). The presence rule comes from the calibration
of the scenes themselves, as an index of them would hold it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np

from harmosearch.config import SearchConfig
from harmosearch.errors import DataError
from harmosearch.search.count import presence_for
from harmosearch.search.fuse import fused_scores
from harmosearch.search.query import Query, encode_query
from harmosearch.search.score import Scored, score_candidates

EXACT_TOP = 5
LOW_COUNTS = (1, 2, 3, 4)  # where exact-count P@5 and count accuracy are asked to reach 0.85


def counting(run: Any) -> dict[str, Any]:
    """Exact-count P@5 and count accuracy (module docstring)."""
    from harmosearch.synth.counting import MAX_COUNT, count_query

    bench, s = run.bench, run.config.search
    if not bench.counts:
        raise DataError(f"{bench.name} has no counting scenes; counting needs synth.counting's")
    held = _held(bench)
    things = sorted({thing for _, thing, _ in bench.counts})
    every = np.arange(len(bench.images))
    precision: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    found: dict[str, np.ndarray] = {}
    for thing in things:
        for n in range(1, MAX_COUNT + 1):
            query = encode_query(run.encoder, count_query(thing, n))
            scored, rankings = _rankings(run, query, every, s)
            for mode, scores in rankings.items():
                top = np.argsort(-scores, kind="stable")[:EXACT_TOP]
                precision[mode][n].append(float(np.mean([held[int(i)].get(thing, 0) == n for i in top])))
            found[thing] = scored.tally.found[:, 0]  # the same for every n: one instance's vector
    truth = np.array([k for _, _, k in bench.counts])
    counted = np.array([found[thing][i] for i, thing, _ in bench.counts])
    modes = {mode: _precision_figures(by_n) for mode, by_n in precision.items()}
    accuracy, by_count = _count_figures(truth, counted)
    modes["counting"] |= accuracy
    return {
        "modes": _asked(modes, run.mode),
        "proposal_ceiling": _ceiling(bench, run.images.regions),
        "by_count": {
            **{
                mode: {"exact_P@5": {n: float(np.mean(v)) for n, v in sorted(by_n.items())}}
                for mode, by_n in precision.items()
            },
            "instances": by_count,
        },
        "queries": len(things) * MAX_COUNT,
        "scenes": len(bench.images),
    }


def negation(run: Any) -> dict[str, Any]:
    """The share of negation pairs won (module docstring), per ranking."""
    bench, s = run.bench, run.config.search
    if not bench.negations:
        raise DataError(f"{bench.name} has no negation pairs; negation needs synth.counting's")
    held = _held(bench)
    every = np.arange(len(bench.images))
    won: dict[str, list[bool]] = defaultdict(list)
    precision: dict[str, list[float]] = defaultdict(list)
    for pair in bench.negations:
        with_it, without = pair["images"]
        query = encode_query(run.encoder, pair["query"])
        _, rankings = _rankings(run, query, every, s)
        rankings["whole text"] = run.images.global_vectors @ _whole_text_vector(run.encoder, pair["query"])
        for mode, scores in rankings.items():
            won[mode].append(bool(scores[without] > scores[with_it]))
            top = np.argsort(-scores, kind="stable")[:EXACT_TOP]
            fits = [held[int(i)].get(pair["kept"], 0) > 0 and not held[int(i)].get(pair["negated"]) for i in top]
            precision[mode].append(float(np.mean(fits)))
    modes = {
        mode: {"pairs_won": float(np.mean(w)), f"P@{EXACT_TOP}": float(np.mean(precision[mode]))}
        for mode, w in won.items()
    }
    return {"modes": _asked(modes, run.mode), "pairs": len(bench.negations)}


def _asked(modes: dict[str, Any], mode: str) -> dict[str, Any]:
    """--mode global keeps the global ranking alone; any other mode shows them all."""
    return {"global": modes["global"]} if mode == "global" else modes


def _rankings(run: Any, query: Query, images: np.ndarray, s: SearchConfig) -> tuple[Scored, dict[str, np.ndarray]]:
    """The query scored on `images`, and its scores [C] there: as a query ranks them, without the
    count and negation terms, and by its global vector alone."""
    name = "counting" if any(c is not None for c in query.counts) else "negation"
    scored = _scored(run, query, images, s)
    without = replace(s, count_weight=0.0, negation_weight=0.0)
    return scored, {
        name: fused_scores(scored, s),
        "no term": fused_scores(scored, without),
        "global": run.images.global_vectors[images] @ query.global_vector,
    }


def _scored(run: Any, query: Query, images: np.ndarray, s: SearchConfig) -> Scored:
    """The query scored on `images` by the query's stages, with the scenes' own calibration."""
    regions = run.images.regions
    contrast = (
        None
        if run.vocabulary is None
        else run.vocabulary.for_lexemes(query.embedded_texts, query.lexeme_vectors, s.contrast)
    )
    rule = presence_for(run.calibration, query, s, [])
    return score_candidates(
        replace(regions, bias=None), regions, run.images.global_vectors, images, query, s, contrast, rule
    )


def _whole_text_vector(encoder: Any, text: str) -> np.ndarray:
    return encoder.encode_queries([text])[0].global_vector.numpy()


SIZE_BANDS = ((0, 30), (30, 45), (45, 1000))  # px, the longer side of an object's box


def _ceiling(bench: Any, regions: Any) -> dict[str, float]:
    """The share of counted objects that some region (not the whole image) fits at IoU >= 0.5,
    overall and per size band: an object without one can only be counted by luck."""
    from harmosearch.bench.metrics import box_iou

    counted = {(image, thing) for image, thing, _ in bench.counts}
    fitted, sides = [], []
    for image, box, label in bench.boxes:
        if (image, bench.classes[label]) not in counted:
            continue
        rows = np.arange(regions.start[image], regions.start[image + 1])
        rows = rows[regions.scales[rows] < 1.0]
        fitted.append(bool(len(rows)) and bool((box_iou(np.array([box]), regions.boxes[rows]) >= 0.5).any()))
        sides.append(max(box[2] - box[0], box[3] - box[1]))
    fitted_, sides_ = np.array(fitted), np.array(sides)
    bands = {f"{lo}-{hi} px" if hi < 1000 else f"{lo}+ px": (sides_ >= lo) & (sides_ < hi) for lo, hi in SIZE_BANDS}
    return {"all": float(fitted_.mean()), **{name: float(fitted_[m].mean()) for name, m in bands.items() if m.any()}}


def _held(bench: Any) -> list[dict[str, int]]:
    """Per image, how many copies of each thing it holds (from its boxes)."""
    held: list[dict[str, int]] = [defaultdict(int) for _ in bench.images]
    for image, _, label in bench.boxes:
        held[image][bench.classes[label]] += 1
    return held


def _precision_figures(by_n: dict[int, list[float]]) -> dict[str, float]:
    low = [v for n in LOW_COUNTS for v in by_n.get(n, [])]
    high = [v for n, values in by_n.items() if n not in LOW_COUNTS for v in values]
    return {f"exact_P@{EXACT_TOP}_1-4": float(np.mean(low)), f"exact_P@{EXACT_TOP}_5-6": float(np.mean(high))}


def _count_figures(truth: np.ndarray, counted: np.ndarray) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """Count accuracy over 1-4 and the mean absolute count error over 5-6 (and over all); per
    number held, the accuracy, the mean error and the mean count found."""
    low, high = truth <= max(LOW_COUNTS), truth > max(LOW_COUNTS)
    figures = {
        "count_accuracy_1-4": float(np.mean(counted[low] == truth[low])),
        "count_mae_5-6": float(np.mean(np.abs(counted[high] - truth[high]))) if high.any() else 0.0,
        "count_mae": float(np.mean(np.abs(counted - truth))),
    }
    by_count = {
        int(n): {
            "accuracy": float(np.mean(counted[truth == n] == n)),
            "mae": float(np.mean(np.abs(counted[truth == n] - n))),
            "mean_found": float(np.mean(counted[truth == n])),
        }
        for n in np.unique(truth)
    }
    return figures, by_count
