"""Does the per-index calibration say "no confident match" when, and only when, nothing matches?

    python benchmarks/calibration.py [--n 600] [--val-seed 5101] [--test-seed 5202] [--alpha 0.5]

For each seed: N synthetic scenes are drawn and indexed with the bundled model (harmo-tiny).
Then for every colour C, the scenes holding no C object and none of seven colour-shape pairs
(one in each other colour, the shape turning with the colour) form an index of their own (rows
of the full index picked out, so every sub-index is encoded once), which is calibrated
(harmosearch.search.calibration.calibrate) and asked three kinds of queries, each its best fused
score over that sub-index compared with the calibration:
- absent colour: "C <shape>" for the six shapes; "no confident match" is right;
- absent object, colour present: the seven pairs left out, in colours other scenes have;
  "no confident match" is right, and hard for a model that knows colours better than shapes;
- present: every colour-shape pair some scene holds; "weak" is wrong, and plainly so when the
  best-scoring scene does hold the object (reported apart: the toy model often ranks another
  scene first, and then "weak" is the truth about the result).
The confident quantile is chosen on the validation seed (the best balanced accuracy between
absent and present queries, both kinds of absent counted once each) and reported on the test
seed, with the default CONFIDENT_QUANTILE beside it. Appended to
benchmarks/results/calibration.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.config import SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.model.encoder import load_encoder
from harmosearch.search.calibration import CONFIDENT_QUANTILE, assess, best_fused, calibrate, score_parts
from harmosearch.store import IndexReader
from harmosearch.synth import COLOURS, SHAPES, generate

QUANTILES = np.round(np.arange(0.5, 0.991, 0.01), 2)
KINDS = ("absent colour", "absent object", "present")


def world(seed: int, n: int, work: Path, config, encoder) -> dict:
    """The scenes' vectors (as indexed) and which colour-shape pairs each scene holds."""
    generate(work / f"scenes{seed}", SynthConfig(n=n, seed=seed), workers=2)
    build_index(work / f"scenes{seed}" / "images", work / f"index{seed}", config, encoder=encoder)
    data = json.loads((work / f"scenes{seed}" / "annotations.json").read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    holds: dict[str, set[str]] = {name: set() for name in files.values()}
    for a in data["annotations"]:
        holds[files[a["image_id"]]].add(a["phrase"])
    reader = IndexReader(work / f"index{seed}", load_indexes=False)
    return {
        "global": np.asarray(reader.global_vectors, dtype=np.float32),
        "regions": np.asarray(reader.region_vectors, dtype=np.float32),
        "start": reader.region_start,
        "holds": [holds[str(p)] for p in reader.images["path"]],
    }


def sub_index(w: dict, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    spans = [np.arange(w["start"][i], w["start"][i + 1]) for i in rows]
    counts = [len(s) for s in spans]
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return w["global"][rows], w["regions"][np.concatenate(spans)], start


def queries_scored(w: dict, encode, alpha: float) -> list[dict]:
    """For every excluded colour and query: its kind, its best score, the sub-index's
    calibration and whether the best-scoring image holds the object."""
    out = []
    names = list(COLOURS)
    for k, colour in enumerate(names):
        left_out = {f"{c} {SHAPES[(k + j) % len(SHAPES)]}" for j, c in enumerate(names) if c != colour}
        rows = np.array(
            [i for i, h in enumerate(w["holds"]) if not any(p.startswith(colour + " ") or p in left_out for p in h)]
        )
        g, r, start = sub_index(w, rows)
        calibration = calibrate(g, r, start, encode)
        present = set().union(*(w["holds"][i] for i in rows))
        colours_here = {p.split()[0] for p in present}
        queries = []
        for c in names:
            for s in SHAPES:
                phrase = f"{c} {s}"
                if c == colour:
                    queries.append((phrase, "absent colour"))
                elif phrase in present:
                    queries.append((phrase, "present"))
                elif c in colours_here:
                    queries.append((phrase, "absent object"))
        encoded = encode([q for q, _ in queries])
        texts = np.stack([e[0] for e in encoded])
        best = best_fused(g, r, start, texts, [e[1] for e in encoded], [alpha])[:, 0]
        top = top_images(g, r, start, texts, [e[1] for e in encoded], alpha)
        out += [
            {
                "query": q,
                "kind": k,
                "score": float(v),
                "calibration": calibration,
                "top_right": q in w["holds"][rows[t]],
            }
            for (q, k), v, t in zip(queries, best, top, strict=True)
        ]
    return out


def confident(row: dict, quantile: float, alpha: float) -> bool:
    calibration = replace(row["calibration"], confident_quantile=quantile)
    return bool(assess(calibration, [row["score"]], alpha).confident[0])


def top_images(g, r, start, texts, lexemes, alpha: float) -> np.ndarray:
    """The row (in the sub-index) of each query's best-scoring image."""
    return score_parts(g, r, start, texts, lexemes).fused(alpha).argmax(axis=0)


def rates(rows: list[dict], quantile: float, alpha: float) -> dict[str, float]:
    def weak_share(kind: str, right_only: bool = False) -> float:
        chosen = [r for r in rows if r["kind"] == kind and (r["top_right"] or not right_only)]
        return float(np.mean([not confident(r, quantile, alpha) for r in chosen]))

    absent_colour, absent_object, present = (
        weak_share("absent colour"),
        weak_share("absent object"),
        weak_share("present"),
    )
    return {
        "no_match_said_absent_colour": absent_colour,
        "no_match_said_absent_object": absent_object,
        "present_called_weak": present,
        "present_top_right_called_weak": weak_share("present", right_only=True),
        "balanced_accuracy": ((absent_colour + absent_object) / 2 + (1 - present)) / 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--val-seed", type=int, default=5101)
    parser.add_argument("--test-seed", type=int, default=5202)
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config(overrides={"encoder.model": "harmo-tiny", "encoder.device": "cpu"})
    encoder = load_encoder(config)

    def encode(texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(e.global_vector.numpy(), e.lexeme_vectors.numpy()) for e in encoder.encode_queries(texts)]

    with tempfile.TemporaryDirectory() as tmp:
        val = queries_scored(world(args.val_seed, args.n, Path(tmp), config, encoder), encode, args.alpha)
        test = queries_scored(world(args.test_seed, args.n, Path(tmp), config, encoder), encode, args.alpha)
    chosen = float(
        max(
            QUANTILES,
            key=lambda q: (rates(val, q, args.alpha)["balanced_accuracy"], -abs(q - CONFIDENT_QUANTILE)),
        )
    )
    counts = {k: sum(r["kind"] == k for r in test) for k in KINDS}
    counts["present, top result right"] = sum(r["kind"] == "present" and r["top_right"] for r in test)
    payload = {
        "model": "harmo-tiny",
        "n_scenes": args.n,
        "alpha": args.alpha,
        "validation_seed": args.val_seed,
        "test_seed": args.test_seed,
        "quantile_chosen_on_validation": chosen,
        "test_queries": counts,
        "test_at_chosen_quantile": rates(test, chosen, args.alpha),
        "test_at_default_quantile": {"quantile": CONFIDENT_QUANTILE, **rates(test, CONFIDENT_QUANTILE, args.alpha)},
        "validation_at_chosen_quantile": rates(val, chosen, args.alpha),
        "seconds": round(time.perf_counter() - started, 1),
    }
    append_result("calibration", payload)
    print(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
