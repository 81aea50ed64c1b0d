"""Indexing throughput of the Ray engine on a local Ray against the local engine, same machine, same run.

    python benchmarks/engines.py [--model harmo-tiny] [--n 192] [--workers 2] [--rounds 3]

Builds the index of the same synthetic scenes from scratch with `index.engine = "local"`
(`index.workers` processes) and with `index.engine = "ray"` (`--workers` actors of one CPU each,
on a Ray started once in this process, as `harmosearch index --engine ray` starts its own), in
alternating rounds so that a noisy spell on a shared machine slows both. The Ray rounds include
what every `index --engine ray` pays: starting the actors and loading a model in each. Reported:
images/s of each engine's fastest round, the median over rounds of the ray/local throughput ratio,
and the seconds Ray took to start. Appends the resolved configurations to
benchmarks/results/engines.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, interleaved, paired_ratio

from harmosearch.config import SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.model.encoder import load_encoder
from harmosearch.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--n", type=int, default=192)
    parser.add_argument("--workers", type=int, default=2, help="local worker processes, and Ray actors")
    parser.add_argument("--shard-size", type=int, default=32, help="files per Ray task")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="harmosearch-engines-"))
    try:
        generate(work / "scenes", SynthConfig(n=args.n, seed=777), workers=2)
        photos = work / "scenes" / "images"
        base = {"encoder.model": args.model, "encoder.device": "cpu", "index.workers": args.workers}
        local = load_config(overrides={**base, "index.engine": "local"})
        on_ray = load_config(
            overrides={
                **base,
                "index.engine": "ray",
                "ray.workers": args.workers,
                "ray.cpus_per_worker": 1.0,
                "ray.shard_size": args.shard_size,
            }
        )
        encoder = load_encoder(local)
        started = time.perf_counter()
        ray.init(num_cpus=max(args.workers, len(os.sched_getaffinity(0))), include_dashboard=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - started

        def run(config):
            def build() -> None:
                shutil.rmtree(work / "index", ignore_errors=True)
                build_index(photos, work / "index", config, encoder=encoder)

            return build

        rounds = interleaved([run(local), run(on_ray)], rounds=args.rounds)
        ray.shutdown()
        rates = {"local": args.n / min(rounds[0]), "ray": args.n / min(rounds[1])}
        ratio = paired_ratio(rounds[0], rounds[1])  # local time / ray time: ray's throughput over local's
        for name, rate in rates.items():
            print(f"{name:6s} {rate:7.1f} images/s")
        print(f"ray / local throughput: {ratio:.3f} (median of {args.rounds} rounds); Ray start {ray_start_s:.1f} s")
        path = append_result(
            "engines",
            {
                "model": args.model,
                "images": args.n,
                "workers": args.workers,
                "rounds": args.rounds,
                "seconds_per_round": {"local": rounds[0], "ray": rounds[1]},
                "images_per_s": rates,
                "ray_over_local_throughput": ratio,
                "ray_start_s": ray_start_s,
                "load_average_after": os.getloadavg(),
                "config": {"local": local.to_dict(), "ray": on_ray.to_dict()},
            },
        )
        print(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
