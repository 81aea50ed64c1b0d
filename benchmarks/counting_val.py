"""Choosing the counting and negation settings on the validation scenes.

    python benchmarks/counting_val.py [--split val] [--n 300] [--detail normal] [--world flat]
                                      [--quantiles 0.3,0.5,0.6,0.7,0.8] [--overlaps 0.2,0.3,0.5]
                                      [--count-weights 0.5,1,2,4,8] [--negation-weights 0,1,3,5,10,20,30]
                                      [--rival-shares 0] [--centres false] [--segments false]
                                      [--tasks counting,negation,retrieval] [--retrieval-n 500]

Runs `harmosearch bench --task counting` for every search.count_quantile x count_overlap x
count_weight x count_rival_share x count_centres x count_segments, `--task
negation` for every search.negation_weight, and `--task retrieval` (the captions, a fifth of
which count: "three shapes: ...", "one small red circle ...") for every setting of the counting
grid (the task functions themselves, on images encoded once, with each query's text encoded
once), on the scenes of --split (val: the settings are chosen here; never test). Appends one
record per setting to benchmarks/results/counting_val.jsonl and prints the best of every figure.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench.datasets import load_bench_set
from harmosearch.bench.tasks import TASKS, Run
from harmosearch.bench.vectors import as_an_index, encode_images
from harmosearch.config import load_config
from harmosearch.config.load import shapes_model_unless_named
from harmosearch.model.encoder import load_encoder


class Remembering:
    """An encoder that encodes each list of texts once (the tasks ask the same queries again for
    every setting)."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self._seen: dict[tuple[str, ...], Any] = {}

    def encode_queries(self, texts: list[str]) -> Any:
        key = tuple(texts)
        if key not in self._seen:
            self._seen[key] = self._encoder.encode_queries(texts)
        return self._seen[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--detail", default="normal")
    parser.add_argument("--world", choices=("flat", "photo"), default="flat")
    parser.add_argument("--quantiles", type=floats, default=floats("0.3,0.5,0.6,0.7,0.8"))
    parser.add_argument("--overlaps", type=floats, default=floats("0.2,0.3,0.5"))
    parser.add_argument("--count-weights", type=floats, default=floats("0.5,1,2,4,8"))
    parser.add_argument("--negation-weights", type=floats, default=floats("0,1,3,5,10,20,30"))
    parser.add_argument("--rival-shares", type=floats, default=floats("0"))
    parser.add_argument("--centres", default="false", help="false, true or false,true")
    parser.add_argument("--segments", default="false", help="search.count_segments: false, true or false,true")
    parser.add_argument("--tasks", default="counting,negation")
    parser.add_argument("--retrieval-n", type=int, default=500)
    args = parser.parse_args()
    config = shapes_model_unless_named(load_config(overrides={"regions.detail": args.detail}))
    encoder = Remembering(load_encoder(config))
    grids = {
        "counting": [
            {
                "count_quantile": q,
                "count_overlap": o,
                "count_weight": w,
                "count_rival_share": r,
                "count_centres": c,
                "count_segments": g,
            }
            for q in args.quantiles
            for o in args.overlaps
            for w in args.count_weights
            for r in args.rival_shares
            for c in (v == "true" for v in args.centres.split(","))
            for g in (v == "true" for v in args.segments.split(","))
        ],
        "negation": [{"negation_weight": w} for w in args.negation_weights],
    }
    grids["retrieval"] = grids["counting"]
    best: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for task in args.tasks.split(","):
        grid = grids[task]
        n = args.retrieval_n if task == "retrieval" else args.n
        bench = load_bench_set("synthetic", None, config.paths.cache_dir, n, task, args.split, world=args.world)
        images = encode_images(encoder, config, bench)
        for setting in grid:
            settings = replace(config, search=replace(config.search, **setting))
            # ranked as an index of the scenes ranks (its trust and its unit)
            ranked, penalised, _, calibration = as_an_index(encoder, settings, bench, images)
            figures = TASKS[task](Run(encoder, ranked, bench, penalised, known_calibration=calibration))
            record = {
                "task": task,
                "split": args.split,
                "detail": args.detail,
                "world": args.world,
                "dataset": bench.name,
                "model": config.encoder.model,
                **setting,
            }
            append_result("counting_val", {**record, "figures": figures})
            modes = figures["modes"]
            shown = {f"{m} {k}": v for m, values in modes.items() for k, v in values.items() if m != "global"}
            shown = {k: v for k, v in shown.items() if "i2t" not in k} if task == "retrieval" else shown
            print(task, setting, {k: round(v, 3) for k, v in shown.items()}, flush=True)
            for key, value in shown.items():
                best.setdefault(f"{task} {key}", []).append((value, setting))
    for key, found in best.items():
        lower_is_better = "mae" in key
        value, setting = (min if lower_is_better else max)(found, key=lambda pair: pair[0])
        print(f"best {key}: {value:.3f} at {setting}")


if __name__ == "__main__":
    main()
