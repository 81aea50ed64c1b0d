"""How wide the crop around a box should be when `--refine` reorders results by crops
(search.crops.CROP_MARGIN): phrase search P@5 on the validation scenes, small, large and default-set
objects, at the default and the high detail, for several margins.

    python benchmarks/crop_margin.py [--model harmo-tiny] [--n 300] [--margins 0.1 0.2 0.5 1.0]

Each run is `harmosearch bench --task search --refine --split val [--detail high]` with the
configured search.crop_weight; only the margin changes. Appends to
benchmarks/results/crop_margin.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench import run_bench
from harmosearch.config import load_config
from harmosearch.search import crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.2, 0.5, 1.0])
    args = parser.parse_args()
    record: dict[str, Any] = {"model": args.model, "split": "val", "n": args.n, "rows": {}}
    shipped = crops.CROP_MARGIN
    for margin in args.margins:
        crops.CROP_MARGIN = margin
        row = {}
        for detail in ("normal", "high"):
            config = load_config(
                overrides={"encoder.model": args.model, "regions.detail": detail, "search.refine": True}
            )
            record.setdefault("config", {})[detail] = config.to_json()
            for objects in ("small", "large", "mixed"):
                out = run_bench(config, "synthetic", ("search",), n=args.n, split="val", objects=objects)
                row[f"{detail} {objects}"] = out["tasks"]["search"]["P@5"]
        row["mean"] = sum(row.values()) / len(row)
        record["rows"][str(margin)] = row
        print(f"margin {margin}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in row.items()), flush=True)
    crops.CROP_MARGIN = shipped
    print(f"appended to {append_result('crop_margin', record)}")


if __name__ == "__main__":
    main()
