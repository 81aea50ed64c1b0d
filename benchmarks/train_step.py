"""Training step time, GC only vs GC + LRC + GR (and + TIGHT), as ratios measured in one run.

    python benchmarks/train_step.py [--batch 64] [--steps 6] [--device cpu]

Goal: GC+LRC+GR step time / GC-only step time <= 1.3.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.config import SynthConfig, load_config
from harmosearch.model.device import resolve_device, training_precision
from harmosearch.model.loading import load_model, resolve_spec
from harmosearch.synth import generate
from harmosearch.train.data import load_dataset
from harmosearch.train.loop import make_trainer, training_set

MODEL = "harmo-tiny-vit:random"


def step_time(
    losses: tuple[str, ...],
    samples: list,
    batch: int,
    steps: int,
    variant: str = "caption",
    device: str = "cpu",
    precision: str = "auto",
) -> float:
    """The median time of `harmosearch train`'s own step (Trainer.step: autocast, the loss terms,
    the grad scaler, clipping, AdamW, the schedule and the logit-scale clamp), the first excluded."""
    config = load_config(
        overrides={
            "encoder.model": MODEL,
            "encoder.device": device,
            "train.losses": ",".join(losses),
            "train.gr_variant": variant,
            "train.batch_size": batch,
            "train.precision": precision,
        }
    )
    model, _ = load_model(resolve_spec(MODEL))
    model.to(resolve_device(device)).train()
    dataset, normalise = training_set(samples, model, config)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=0)
    batches = list(loader)[:steps]
    trainer = make_trainer(model, config, steps, resolve_device(device), normalise)
    times = []
    for b in batches:
        start = time.perf_counter()
        trainer.step(b)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, ... (the step reads its losses back, so it ends synchronised)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), SynthConfig(n=args.batch * args.steps, seed=99), workers=2)
        samples = load_dataset(Path(tmp))
        rows = {}
        for name, losses, variant in (
            ("GC only", ("gc",), "caption"),
            ("GC+LRC", ("gc", "lrc"), "caption"),
            ("GC+LRC+GR(a)", ("gc", "lrc", "gr"), "caption"),
            ("GC+LRC+GR(b)", ("gc", "lrc", "gr"), "crop"),
            ("GC+LRC+GR+TIGHT", ("gc", "lrc", "gr", "tight"), "caption"),
        ):
            rows[name] = step_time(losses, samples, args.batch, args.steps, variant, args.device)
            print(f"{name:14s} {rows[name] * 1000:8.1f} ms/step  ({args.batch / rows[name]:.0f} samples/s)")
        ratio = rows["GC+LRC+GR(a)"] / rows["GC only"]
        tight_ratio = rows["GC+LRC+GR+TIGHT"] / rows["GC only"]
        print(f"step time ratio GC+LRC+GR / GC only: {ratio:.3f}  (goal <= 1.3)")
        print(f"step time ratio GC+LRC+GR+TIGHT / GC only: {tight_ratio:.3f}")
        path = append_result(
            "train_step",
            {
                "batch": args.batch,
                "device": args.device,
                "precision": training_precision(resolve_device(args.device), "auto"),
                "seconds_per_step": rows,
                "ratio": ratio,
                "tight_ratio": tight_ratio,
            },
        )
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
