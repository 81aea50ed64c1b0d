"""What the pixel segment boxes of `--detail high` bring: the validation scenes at high detail
with and without them (without: the fine map, the small windows and the dense map's segments,
as high detail was before them), phrase search, grounding and, on the default set, caption
retrieval.

    python benchmarks/pixel_segments.py [--model harmo-tiny] [--n 300]

"With" is `harmosearch bench --detail high` as it is; "without" sets regions.pixel_segments to
none, which also brings the dense map's segments back (they are replaced only when pixel boxes
are given). One-lexeme queries at phrase_alpha 0.5 (as before
it existed) and 0.15 (the default). Appends to benchmarks/results/pixel_segments.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench import run_bench
from harmosearch.config import RegionConfig, load_config


def figures(model: str, n: int, phrase_alpha: float, objects: str, pixels: bool) -> dict[str, Any]:
    config = load_config(
        overrides={
            "encoder.model": model,
            "regions.detail": "high",
            "regions.pixel_segments": RegionConfig().pixel_segments if pixels else (),
            "search.refine": False,
            "search.phrase_alpha": phrase_alpha,
        }
    )
    tasks = ("search", "grounding", "retrieval") if objects == "mixed" else ("search", "grounding")
    out = run_bench(config, "synthetic", tasks, n=n, mode="all", split="val", objects=objects)["tasks"]
    row = {
        "P@5": out["search"]["P@5"],
        "box@0.5": out["search"]["box@0.5"],
        "grounding": out["grounding"]["accuracy"],
        "proposal_ceiling": out["grounding"]["proposal_ceiling"],
    }
    if "retrieval" in out:
        row["retrieval_R@1"] = {
            mode: {"t2i": v["t2i_R@1"], "i2t": v["i2t_R@1"]} for mode, v in out["retrieval"]["modes"].items()
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    record: dict[str, Any] = {"model": args.model, "split": "val", "n": args.n}
    for pixels in (True, False):
        for phrase_alpha in (0.5, 0.15):
            for objects in ("small", "large", "mixed"):
                row = figures(args.model, args.n, phrase_alpha, objects, pixels)
                key = f"{'with' if pixels else 'without'} pixel segments, phrase_alpha {phrase_alpha}, {objects}"
                record[key] = row
                print(key, {k: v for k, v in row.items() if k != "retrieval_R@1"}, flush=True)
    print(f"appended to {append_result('pixel_segments', record)}")


if __name__ == "__main__":
    main()
