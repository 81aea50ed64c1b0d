"""Training step time, GC only vs GC + LRC + GR (and + TIGHT), as ratios measured in one run.

    python benchmarks/train_step.py [--batch 64] [--steps 6]

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

from harmosearch.config import SynthConfig
from harmosearch.encoder import load_model, resolve_spec
from harmosearch.synth import generate
from harmosearch.train.data import TrainingSet, load_dataset
from harmosearch.train.loop import forward_batch, param_groups
from harmosearch.train.losses import HarmoLoss


def step_time(losses: tuple[str, ...], batches: list[dict], variant: str = "caption") -> float:
    model, _ = load_model(resolve_spec("harmo-tiny-vit:random"))
    model.train()
    loss_fn = HarmoLoss(losses, gr_variant=variant)
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4)
    times = []
    for batch in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward_batch(
                model, batch, "value", "gr" in losses and variant == "crop", "last", need_distractors="tight" in losses
            )
        terms = loss_fn(out)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]  # median, first step excluded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), SynthConfig(n=args.batch * args.steps, seed=99), workers=2)
        from open_clip import get_tokenizer
        from open_clip.transform import image_transform

        from harmosearch.encoder import register_model_configs

        register_model_configs()
        tokenizer = get_tokenizer("harmo-tiny-vit")
        ds = TrainingSet(
            load_dataset(Path(tmp)),
            image_transform(112, is_train=False),
            tokenizer,
            32,
            (14, 14),
            112,
            "squash",
            seed=0,
            distractors=("loose", "part", "shift"),
        )
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch)
        batches = list(loader)
        rows = {}
        for name, losses, variant in (
            ("GC only", ("gc",), "caption"),
            ("GC+LRC", ("gc", "lrc"), "caption"),
            ("GC+LRC+GR(a)", ("gc", "lrc", "gr"), "caption"),
            ("GC+LRC+GR(b)", ("gc", "lrc", "gr"), "crop"),
            ("GC+LRC+GR+TIGHT", ("gc", "lrc", "gr", "tight"), "caption"),
        ):
            rows[name] = step_time(losses, batches, variant)
            print(f"{name:14s} {rows[name] * 1000:8.1f} ms/step  ({args.batch / rows[name]:.0f} samples/s)")
        ratio = rows["GC+LRC+GR(a)"] / rows["GC only"]
        tight_ratio = rows["GC+LRC+GR+TIGHT"] / rows["GC only"]
        print(f"step time ratio GC+LRC+GR / GC only: {ratio:.3f}  (goal <= 1.3)")
        print(f"step time ratio GC+LRC+GR+TIGHT / GC only: {tight_ratio:.3f}")
        path = append_result(
            "train_step", {"batch": args.batch, "seconds_per_step": rows, "ratio": ratio, "tight_ratio": tight_ratio}
        )
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
