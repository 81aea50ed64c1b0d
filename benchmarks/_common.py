"""Helpers shared by the benchmark scripts: timing and appending results with machine info."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


@contextlib.contextmanager
def without_region_trust(skip: bool = True) -> Iterator[None]:
    """Index builds inside the block leave out their region trust measurement
    (harmosearch.regions.trust): a fixed cost per build, up to 768 boxes alone encoded whatever
    the library's size, that the per-image timings of a small folder would otherwise be mostly made
    of. Their indexes then have no trust (they rank as fully trusted). skip=False: a no-op."""
    from harmosearch.regions import trust

    original = trust.measure_trust
    if skip:
        trust.measure_trust = lambda *args, **kwargs: None
    try:
        yield
    finally:
        trust.measure_trust = original


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The fastest of `repeat` runs, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved(fns: list[Callable[[], Any]], rounds: int = 3) -> list[list[float]]:
    """Times of each function over `rounds` rounds that run them in turn: [function][round]."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of two functions timed in the same round: a slow spell
    on a shared machine slows both sides of a pair, so the ratio holds steadier than one of
    best times."""
    import statistics

    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def append_result(name: str, payload: dict[str, Any]) -> Path:
    """Append one JSON line to benchmarks/results/NAME.jsonl, with the commit that made it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    from harmosearch.bench import machine_info, source_state

    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(["python", *sys.argv]),
        **source_state(),
        "machine": machine_info(),
        **payload,
    }
    with path.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
    return path


def search_and_grounding(tasks: dict[str, Any]) -> dict[str, float]:
    """Phrase search P@5 and its box, grounding and its proposal ceiling (the share of annotated
    objects some kept region fits) from run_bench's tasks "search" and "grounding"."""
    return {
        "phrase_p5": tasks["search"]["P@5"],
        "phrase_box": tasks["search"]["box@0.5"],
        "grounding": tasks["grounding"]["accuracy"],
        "proposal_ceiling": tasks["grounding"]["proposal_ceiling"],
    }
