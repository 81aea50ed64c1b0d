"""A/B of lexeme pooling in text token space: mean of the span's tokens vs its last token.

    python benchmarks/lexeme_pool.py [--steps 300] [--batch 64]

Both variants train harmo-tiny-vit from the same random weights (seed 0) for the same steps on
the bundled model's scenes (seed 1000, drawn if missing) and are scored on 200 held-out scenes
(seed 424242): box classification Top-1, grounding accuracy, text-to-image R@1 (global, fused).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench import run_bench
from harmosearch.config import SynthConfig, load_config
from harmosearch.synth import generate
from harmosearch.train.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--scenes", type=Path, default=Path("runs/bundled/scenes"))
    parser.add_argument("--work", type=Path, default=Path("runs/lexeme_pool"))
    args = parser.parse_args()
    if not (args.scenes / "annotations.json").is_file():
        generate(args.scenes, SynthConfig(n=16_000, seed=1000), workers=2)
    rows = {}
    for pool in ("mean", "last"):
        started = time.perf_counter()
        config = load_config(
            overrides={
                "encoder.model": "harmo-tiny-vit:random",
                "encoder.lexeme_pool": pool,
                "train.max_steps": args.steps,
                "train.epochs": 100,
                "train.batch_size": args.batch,
                "train.lr": 1e-3,
                "train.warmup_steps": 50,
                "train.checkpoint_every": 100_000,
            }
        )
        result = train(config, args.scenes, args.work / pool, resume=False)
        scores = run_bench(
            load_config(overrides={"encoder.model": str(result.final)}),
            "synthetic",
            ("boxcls", "grounding", "retrieval"),
            n=200,
        )
        t = scores["tasks"]
        rows[pool] = {
            "boxcls_top1": t["boxcls"]["top1"],
            "grounding": t["grounding"]["accuracy"],
            "t2i_R@1": t["retrieval"]["modes"]["global"]["t2i_R@1"],
            "t2i_R@1_fused": t["retrieval"]["modes"]["fused"]["t2i_R@1"],
            "seconds": round(time.perf_counter() - started),
        }
        print(pool, rows[pool], flush=True)
    append_result("lexeme_pool", {"steps": args.steps, "batch": args.batch, "rows": rows})


if __name__ == "__main__":
    main()
