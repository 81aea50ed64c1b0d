"""Why harmosearch's bf16 image forward was slow: torch's attention under autocast, against
harmosearch's blocks, in one run.

    python benchmarks/bf16_forward.py [--model ViT-B-16:random] [--batch 4] [--rounds 2]

Times (a) open_clip's `encode_image` in fp32, (b) the same under bf16 autocast, where torch's
MultiheadAttention leaves its fused inference path and projects q/k/v from a transposed view
(a batched product over the weight copied once per token), and (c) harmosearch's bf16 forward
(`encoder.runner`: blocks projecting contiguous tokens, matrix weights kept in bf16; global and
dense map in one pass). For (b) and (c), the share of the forward's CPU time in aten::copy_
(torch.profiler). Where bf16 is not native (no AVX512-BF16 or AMX) every bf16 product is
emulated too, so (b) and (c) are slower than (a) there, and only (c) / (b) tells the fix.
Appended to benchmarks/results/bf16_forward.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, interleaved, paired_ratio

from harmosearch.config import load_config
from harmosearch.model.device import cpu_features
from harmosearch.model.encoder import load_encoder


def copy_share(fn: Callable[[], None]) -> float:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key == "aten::copy_") / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16:random")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = {"encoder.model": args.model, "encoder.device": "cpu"}
    fp32 = load_encoder(load_config(overrides={**base, "encoder.precision": "fp32"}))
    bf16 = load_encoder(load_config(overrides={**base, "encoder.precision": "bf16"}))
    pixels = torch.randn(args.batch, 3, fp32.image_size, fp32.image_size, generator=torch.Generator().manual_seed(0))

    def open_clip_fp32() -> None:
        with torch.inference_mode():
            fp32.model.encode_image(pixels)

    def open_clip_bf16() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            fp32.model.encode_image(pixels)

    def harmosearch_bf16() -> None:
        bf16.runner.forward(pixels)

    fns = {
        "open_clip fp32": open_clip_fp32,
        "open_clip bf16 autocast": open_clip_bf16,
        "harmosearch bf16": harmosearch_bf16,
    }
    for fn in fns.values():
        fn()  # warm up
    rounds = dict(zip(fns, interleaved(list(fns.values()), rounds=args.rounds), strict=True))
    rates = {name: args.batch / min(times) for name, times in rounds.items()}
    shares = {name: copy_share(fns[name]) for name in ("open_clip bf16 autocast", "harmosearch bf16")}
    fix = paired_ratio(rounds["open_clip bf16 autocast"], rounds["harmosearch bf16"])
    for name, rate in rates.items():
        print(
            f"{name:26s} {rate:7.2f} images/s" + (f"  copy_ {shares[name]:.0%} of CPU time" if name in shares else "")
        )
    print(f"harmosearch bf16 over open_clip under bf16 autocast: {fix:.2f}x; native bf16: {'bf16' in cpu_features()}")
    path = append_result(
        "bf16_forward",
        {
            "model": args.model,
            "batch": args.batch,
            "rounds": args.rounds,
            "cpu_features": sorted(cpu_features()),
            "images_per_s": rates,
            "copy_share": shares,
            "harmosearch_over_autocast": fix,
            "seconds_per_round": rounds,
        },
    )
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
