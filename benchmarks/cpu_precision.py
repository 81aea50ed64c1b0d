"""Does bf16 autocast pay on this CPU? `harmosearch train`'s step in fp32 and in bf16, in one run.

    python benchmarks/cpu_precision.py [--batch 32] [--steps 3]

`train.precision = "auto"` trains in bf16 only on CPUs that multiply bf16 natively (AVX512-BF16 or
AMX; `harmosearch.model.device.cpu_has_native_bf16`). This measures why: the median step time of
harmo-tiny with GC + LRC + GR + TIGHT at each precision (the first step excluded), and one
1024 x 1024 matrix product at each. Appended to benchmarks/results/cpu_precision.jsonl.
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
from train_step import step_time

from harmosearch.config import SynthConfig
from harmosearch.model.device import cpu_has_native_bf16
from harmosearch.synth import generate
from harmosearch.train.data import load_dataset


def matmul_seconds(dtype: torch.dtype, side: int = 1024) -> float:
    a = torch.randn(side, side).to(dtype)
    a @ a  # warm-up
    start = time.perf_counter()
    a @ a
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), SynthConfig(n=args.batch * args.steps, seed=99), workers=2)
        samples = load_dataset(Path(tmp))
        steps = {}
        for precision in ("fp32", "bf16"):
            steps[precision] = step_time(
                ("gc", "lrc", "gr", "tight"), samples, args.batch, args.steps, precision=precision
            )
            print(f"{precision}: {steps[precision]:.2f} s/step ({args.batch / steps[precision]:.1f} samples/s)")
    products = {name: matmul_seconds(dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    native = cpu_has_native_bf16()
    print(f"1024^2 product: fp32 {products['fp32']:.3f} s, bf16 {products['bf16']:.3f} s; native bf16: {native}")
    path = append_result(
        "cpu_precision",
        {
            "batch": args.batch,
            "native_bf16": native,
            "capability": torch.backends.cpu.get_cpu_capability(),
            "seconds_per_step": steps,
            "step_ratio_bf16_over_fp32": steps["bf16"] / steps["fp32"],
            "matmul_1024_seconds": products,
            "matmul_ratio_bf16_over_fp32": products["bf16"] / products["fp32"],
        },
    )
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
