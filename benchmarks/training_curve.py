"""How far more training takes the bundled model (issue #29: what training time would reach its
photo-world targets).

    python benchmarks/training_curve.py [--start harmo-mix] [--steps 1000] [--every 250]
                                        [--scenes 16000] [--seed 2000] [--n 200] [--bench-only]

Draws --scenes fresh scenes of both worlds (seed 2000: neither the recipe's 1000 nor a bench
set's), trains --start on them with harmo-mix's recipe (the four losses, batches of 128, lr 5e-4
after a warmup of 50 steps, cosine decay over --steps), keeping a copy of the checkpoint of every
--every steps (the loop itself keeps its two newest), and benches the start and every checkpoint
on the validation scenes of both worlds (phrase search P@5 and grounding, --n scenes each,
default settings). Appends one record per model and world to results/training_curve.jsonl, with
the steps trained beyond the start and the wall seconds of training they took (metrics.jsonl).
--bench-only benches the checkpoints an earlier run left in --work. Validation scenes only: this
measures a trend, it chooses nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, search_and_grounding
from make_bundled import TRAIN

from harmosearch.bench import run_bench
from harmosearch.config import SynthConfig, load_config
from harmosearch.synth import generate
from harmosearch.train.loop import train

WORLDS = ("photo", "flat")


def figures(model: str, world: str, n: int) -> dict[str, float]:
    """Phrase search and grounding of `model` on n validation scenes of `world`, and the share
    of objects some proposal fits (grounding's ceiling)."""
    config = load_config(overrides={"encoder.model": model, "encoder.device": "cpu"})
    result = run_bench(config, "synthetic", ("search", "grounding"), n=n, split="val", world=world)
    tasks = result["tasks"]
    return {
        **search_and_grounding(tasks),
        "region_trust": tasks["search"]["region_trust"]["trust"],
        "region_weight": tasks["search"]["region_weight"],
    }


def training_seconds(run: Path) -> dict[int, float]:
    """Each step's wall seconds so far (the loop's metrics.jsonl: batch / samples_per_s per step,
    checkpoint writes aside), summed up to every step."""
    total, seconds = 0.0, {0: 0.0}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        metrics = json.loads(line)
        total += TRAIN["train.batch_size"] / metrics["samples_per_s"]
        seconds[metrics["step"]] = total
    return seconds


def keep_checkpoints(run: Path, kept: Path) -> Callable[[dict], None]:
    """An on_step that copies each step checkpoint, once written, to `kept` (the loop keeps only
    its two newest)."""

    def on_step(metrics: dict) -> None:
        for checkpoint in (run / "checkpoints").glob("step_*"):
            if not (kept / checkpoint.name).exists():
                shutil.copytree(checkpoint, kept / checkpoint.name, ignore=shutil.ignore_patterns("trainer.pt"))

    return on_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/training-curve"))
    parser.add_argument("--start", default="harmo-mix")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--scenes", type=int, default=16_000)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--n", type=int, default=200, help="validation scenes per world")
    parser.add_argument("--bench-only", action="store_true", help="bench the checkpoints of an earlier run in --work")
    args = parser.parse_args()
    data, run, kept = args.work / "scenes", args.work / "run", args.work / "kept"
    overrides = {
        "encoder.model": args.start,
        "train.epochs": 10_000,  # --steps decides
        "train.max_steps": args.steps,
        "train.lr": 5e-4,
        "train.warmup_steps": 50,
        "train.checkpoint_every": args.every,
    }
    config = load_config(overrides={**TRAIN, **overrides})
    if not args.bench_only:
        if not (data / "annotations.json").is_file():
            generate(data, SynthConfig(n=args.scenes, seed=args.seed, world="mixed"), workers=2)
        kept.mkdir(parents=True, exist_ok=True)
        train(config, data, run, on_step=keep_checkpoints(run, kept))
    # Step checkpoints copied while training, and those the loop kept (an earlier run's).
    models = {0: args.start}
    for checkpoint in sorted([*kept.glob("step_*"), *(run / "checkpoints").glob("step_*")]):
        models[int(checkpoint.name.removeprefix("step_"))] = str(checkpoint)
    seconds = training_seconds(run)
    for step, model in sorted(models.items()):
        for world in WORLDS:
            got = figures(model, world, args.n)
            print(f"step {step} {world}: {got}", flush=True)
            append_result(
                "training_curve",
                {
                    "start": args.start,
                    "steps_beyond_start": step,
                    "training_seconds": seconds[step],
                    "scenes": args.scenes,
                    "scene_seed": args.seed,
                    "world": world,
                    "split": "val",
                    "n": args.n,
                    **got,
                    "train_config": config.to_json()["train"],
                },
            )


if __name__ == "__main__":
    main()
