"""Which dense map for which model? Each `encoder.dense_mode` on each model x world (issue #30).

    python benchmarks/dense_modes.py [--split val] [--n 100] [--models harmo-tiny-gc,harmo-mix]
        [--worlds flat,photo] [--modes value,plain,clear,sclip,naclip]

For each model, world and dense mode, on the synthetic scenes of --split: the region trust the
bench measures on the scenes' own images (as `harmosearch index` does), text->image R@1 of the
captions, phrase-search P@5 and grounding, fused as `harmosearch query` fuses (regions weighed by
that trust) and fused with the regions fully weighed (what the mode's regions carry before trust
takes them out); per model x world the global-only R@1 and P@5 (the same in every mode: the
global vector is the model's own), and the mode `encoder.dense_mode = "auto"` would choose from
those trusts (indexing.dense_choice.pick_dense_mode). Every other setting is the default.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result
from transfer import FULLY_WEIGHED, GLOBAL_ONLY

from harmosearch.bench import run_bench
from harmosearch.config import load_config
from harmosearch.indexing.dense_choice import pick_dense_mode
from harmosearch.model.dense_modes import AUTO_CANDIDATES
from harmosearch.model.encoder import load_encoder

TASKS = ("retrieval", "search", "grounding")


def cell(model: str, world: str, modes: list[str], split: str, n: int) -> dict[str, Any]:
    """One model x world: every mode's figures, the global-only ones and auto's choice."""
    started = time.perf_counter()
    base = load_encoder(load_config(overrides={"encoder.model": model}))

    def bench(mode: str, overrides: dict[str, Any], tasks: tuple[str, ...], ranking: str = "fused") -> Any:
        config = load_config(overrides={"encoder.model": model, "encoder.dense_mode": mode, **overrides})
        common = {"split": split, "n": n, "world": world, "encoder": base.with_dense_mode(mode), "mode": ranking}
        return run_bench(config, "synthetic", tasks, **common)["tasks"]

    rows = {}
    for mode in modes:
        trusted = bench(mode, {}, TASKS)
        full = bench(mode, FULLY_WEIGHED, TASKS[:2])
        trust = trusted["search"]["region_trust"]
        rows[mode] = {
            "region_trust": trust["trust"] if trust else None,
            "region_weight": trusted["search"]["region_weight"],
            "t2i_R@1": trusted["retrieval"]["modes"]["fused"]["t2i_R@1"],
            "P@5": trusted["search"]["P@5"],
            "grounding": trusted["grounding"]["accuracy"],
            "fully_weighed": {  # grounding does not depend on the weighing
                "t2i_R@1": full["retrieval"]["modes"]["fused"]["t2i_R@1"],
                "P@5": full["search"]["P@5"],
            },
        }
        print(f"  {model} {world} {mode}: {rows[mode]}", flush=True)
    plain = bench("value", GLOBAL_ONLY, ("search",))
    global_retrieval = bench("value", {}, ("retrieval",), ranking="global")
    trusts = {mode: row["region_trust"] for mode, row in rows.items() if mode in AUTO_CANDIDATES}
    return {
        "model": model,
        "world": world,
        "dataset": plain["search"]["dataset"],
        "modes": rows,
        "global": {
            "t2i_R@1": global_retrieval["retrieval"]["modes"]["global"]["t2i_R@1"],
            "P@5": plain["search"]["P@5"],
        },
        "auto_choice": pick_dense_mode(trusts),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--n", type=int, default=100, help="scenes per world")
    parser.add_argument("--models", default="harmo-tiny-gc,harmo-mix")
    parser.add_argument("--worlds", default="flat,photo")
    parser.add_argument("--modes", default=",".join(AUTO_CANDIDATES))
    args = parser.parse_args()
    config = load_config().to_json()  # the defaults every row ran at (each with its own model and mode)
    for model in args.models.split(","):
        for world in args.worlds.split(","):
            row = cell(model, world, args.modes.split(","), args.split, args.n)
            print(
                f"{model} {world}: global R@1 {row['global']['t2i_R@1']:.3f} P@5 {row['global']['P@5']:.3f}; "
                f"auto picks {row['auto_choice']}; {row['seconds']:.0f} s",
                flush=True,
            )
            record = {"split": args.split, "n": args.n, "rows": [row], "config": config}  # one record a cell
            path = append_result("dense_modes_val" if args.split == "val" else "dense_modes", record)
            print(f"appended to {path}", flush=True)


if __name__ == "__main__":
    main()
