"""How long `harmosearch --help` takes, against the interpreter's own start (budget: 0.3 s).

    python benchmarks/startup.py [--runs 15]

Runs `harmosearch --help`, `harmosearch query --help` and a bare `python -c pass` in turn,
`--runs` times each (rounds alternate, so a slow spell on a shared machine hits all alike), with
the bytecode caches written by a first run of each, as on an installed copy. Reports the median
wall time of each, and the median CPU time (user + system) of each child, which a busy machine
disturbs less; and the modules `--help` imported that it must not (torch, open_clip, faiss).
Appended to benchmarks/results/startup.jsonl.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

HEAVY = ("torch", "open_clip", "faiss")
CLI = [sys.executable, "-c", "from harmosearch.cli import main; main()"]
COMMANDS = {
    "harmosearch --help": [*CLI, "--help"],
    "harmosearch query --help": [*CLI, "query", "--help"],
    "python -c pass": [sys.executable, "-c", "pass"],
}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `argv` (the child's user + system time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heavy_imports(env: dict[str, str]) -> list[str]:
    """The heavy modules loaded by the time `--help` has printed."""
    probe = "import sys\nfrom harmosearch.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
    probe += f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    done = subprocess.run([sys.executable, "-c", probe, "--help"], env=env, capture_output=True, text=True, check=True)
    return [name for name in done.stderr.strip().split(",") if name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["COLUMNS"] = "100"
    for argv in COMMANDS.values():  # writes the bytecode caches, as an install's first run does
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    walls: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpus: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, argv in COMMANDS.items():
            wall, cpu = timed(argv, env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    wall = {name: round(statistics.median(times), 4) for name, times in walls.items()}
    cpu = {name: round(statistics.median(times), 4) for name, times in cpus.items()}
    heavy = heavy_imports(env)
    for name in COMMANDS:
        print(f"{name:28s} wall {wall[name]:.3f} s   cpu {cpu[name]:.3f} s (medians of {args.runs})")
    print("heavy modules imported by --help:", ", ".join(heavy) or "none")
    out = append_result(
        "startup",
        {
            "runs": args.runs,
            "median_wall_s": wall,
            "median_cpu_s": cpu,
            "budget_s": 0.3,
            "heavy_imports": heavy,
            "load_average_after": list(os.getloadavg()),
        },
    )
    print("appended to", out)


if __name__ == "__main__":
    main()
