"""`harmosearch bench`: retrieval recall@K, box classification, phrase grounding and phrase search.

    result = run_bench(config, "synthetic", split="test")     # every task the dataset supports
    append_record(Path("benchmarks/results/bench.jsonl"), result, "harmosearch bench ...")

Rooms: `datasets` reads the benchmark sets, `vectors` encodes them (images through the indexing
pipeline), `tasks` scores them. `dupes` holds the duplicate finder's own set (benchmarks/dupes.py).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from harmosearch.bench.datasets import ARO_DATASETS, check_bench_options, check_synthetic_pairs, load_bench_set
from harmosearch.bench.tasks import MODES, TASKS, Run
from harmosearch.bench.vectors import Progress, as_an_index, encode_images
from harmosearch.config import Config
from harmosearch.errors import DataError
from harmosearch.folders import output_file
from harmosearch.regions.trust import region_weight
from harmosearch.search.calibration import ranking_unit


def default_tasks(dataset: str, objects: str = "mixed") -> tuple[str, ...]:
    """Flickr30k has captions only, ARO compositional items only; synthetic scenes come with twin
    pairs for the compositional task (in the default object set), COCO and scene folders without
    them; counting and negation run on scenes of their own when named (--task counting)."""
    if dataset == "flickr30k":
        return ("retrieval",)
    if dataset in ARO_DATASETS:
        return ("compositional",)
    if dataset == "synthetic" and objects == "mixed":
        return tuple(t for t in TASKS if t not in OWN_SCENES)
    return ("retrieval", "boxcls", "grounding", "search")


# Tasks on scenes of their own (synth.counting), run when asked for by name.
OWN_SCENES = ("counting", "negation")


def _check_save_scores(save_scores: Path | None, tasks: tuple[str, ...]) -> None:
    if save_scores is not None and "retrieval" not in tasks:  # the only task with score matrices
        raise DataError("--save-scores writes the retrieval task's score matrices; add --task retrieval")


def run_bench(
    config: Config,
    dataset: str,
    tasks: tuple[str, ...] | None = None,
    data_dir: Path | None = None,
    mode: str = "all",
    n: int = 500,
    encoder: Any = None,
    progress: Progress | None = None,
    save_scores: Path | None = None,
    split: str = "test",
    objects: str = "mixed",
    world: str = "flat",
) -> dict[str, Any]:
    """Run `tasks` (default: default_tasks(dataset)) and return every figure with the model
    identity, the resolved config and the machine. `objects` picks the synthetic scenes: mixed
    (the default), small or large (synth.OBJECT_SETS); `world` flat (the default) or photo."""
    started = time.perf_counter()
    tasks = tuple(tasks or default_tasks(dataset, objects))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise DataError(f"unknown task {unknown[0]!r}: use {', '.join(TASKS)}")
    if save_scores is not None:
        output_file(save_scores, "--save-scores", example="scores.npy")
    if mode not in MODES:
        raise DataError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    # What a single option gets wrong (the model, a dataset's files) is named before options
    # that do not go together, and those before any synthetic scene is drawn.
    check_bench_options(dataset, data_dir, n, split, objects, world)
    if encoder is None:
        from harmosearch.model.encoder import load_encoder

        encoder = load_encoder(config)
    cache = config.paths.cache_dir

    def bench_sets() -> dict[str, Any]:
        return {t: load_bench_set(dataset, data_dir, cache, n, t, split, objects, world) for t in tasks}

    if dataset == "synthetic":  # drawn into the cache: only once the options go together
        for task in tasks:
            check_synthetic_pairs(task, objects, world)
        _check_save_scores(save_scores, tasks)
        sets = bench_sets()
    else:  # read from disk, cheaply, first: a missing dataset is a single option's fault
        sets = bench_sets()
        _check_save_scores(save_scores, tasks)
    result: dict[str, Any] = {
        "dataset": dataset,
        "split": split if dataset == "synthetic" else None,
        "objects": objects if dataset == "synthetic" else None,
        "world": world if dataset == "synthetic" else None,
        "tasks": {},
        "model": encoder.identity.to_dict(),
        "config": config.to_json(),
        "machine": machine_info(config.paths.cache_dir),
    }
    measured: dict[str, tuple[Any, Any]] = {}  # a set's trust and calibration, for its every task
    for task, bench in sets.items():
        missing = [p for p in bench.images if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} images of {bench.name} are missing, e.g. {missing[0]}")
        t0 = time.perf_counter()
        images = encode_images(encoder, config, bench, progress)
        # ranked as an index of these images ranks: its trust, its unit (and its calibration)
        digest = bench.digest()
        ranked, images, trust, calibration = as_an_index(encoder, config, bench, images, measured.get(digest))
        measured[digest] = (trust, calibration)
        figures = TASKS[task](Run(encoder, ranked, bench, images, mode, save_scores, progress, calibration))
        result["tasks"][task] = {
            **figures,
            "ranking_unit": ranking_unit(calibration),
            "region_trust": trust.to_dict() if trust is not None else None,
            "region_weight": region_weight(trust, config.search.trust_low, config.search.trust_high),
            "dataset": bench.name,
            "seconds": round(time.perf_counter() - t0, 2),
            "image_encoding_seconds": round(images.seconds, 2),
        }
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def append_record(path: Path, result: dict[str, Any], command: str) -> Path:
    """Append one bench result, with the command that made it, as a JSON line (the raw record
    behind a published figure)."""
    path = output_file(path, "--record")
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command, **source_state(), **result}
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")
    return path


RECORDS_DIR = "benchmarks/results/"


def source_state(root: Path | None = None) -> dict[str, Any]:
    """The git commit of the code that made a record, and whether its tree was clean (no change
    to tracked files, no untracked file outside .gitignore; records appended under
    benchmarks/results/ are not code, so a run of several benchmarks stays clean); both None
    outside a git checkout. `root`: the checkout (default: the one this package runs from)."""
    import subprocess

    root = root or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=all") if commit else None
    changed = [line for line in (status or "").splitlines() if not line[3:].startswith(RECORDS_DIR)]
    return {"commit": commit.strip() if commit else None, "clean": None if status is None else not changed}


def machine_info(cache_dir: Path | None = None) -> dict[str, Any]:
    """The machine a record was made on: versions, cores, threads, the CPU's features and the
    int8 probe's speed-up cached under `cache_dir` (default: the configured cache)."""
    import torch

    from harmosearch.config import PathsConfig
    from harmosearch.model.device import cpu_features
    from harmosearch.model.int8_probe import measured_speedup

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_features": sorted(cpu_features()),  # what encoder.precision auto goes by
        "int8_probe": measured_speedup(cache_dir or PathsConfig().cache_dir),  # and, without VNNI, this
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


__all__ = ["append_record", "default_tasks", "machine_info", "run_bench", "source_state"]
