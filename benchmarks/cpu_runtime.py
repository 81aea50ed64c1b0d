"""Indexing speed and fidelity of each CPU inference path, side by side in one run.

    python benchmarks/cpu_runtime.py [--model ViT-B-16:random] [--n 48] [--rounds 3] [--skip-trust]

Builds one folder of synthetic scenes (as JPEG photos) into an index with `build_index` and the
default settings, once per setting: `precision = "fp32"` (the reference), the default (auto),
int8 with bf16 ruled out (`runtime = "onnxruntime"`), bf16, the default on a CPU said to have
neither bf16 nor VNNI nor the int8 probe's verdict (HARMOSEARCH_CPU_FEATURES=none: fp32), and
the default at `--detail high` (what the speed buys: issue #32 makes high detail the default
only if it costs no more per image than normal detail in fp32). Settings that resolve to the
same path on this CPU share its timing. Rounds alternate between the paths (a slow spell on a
shared machine hits all alike); speeds are images/s of the build (decoding, pixel segments, both
towers' forward passes, regions, calibration, Parquet and FAISS) with its region trust
measurement taken out (a fixed cost per build, boxes of up to 128 pictures encoded whatever the library's
size, its seconds as the manifest records them): the per-image rate of a large library; the
whole build's rate is kept beside. With --skip-trust no build measures it (on a loaded machine
it is most of a small folder's build).
Ratios are the median of each round's pair with fp32.
Where bf16 is emulated (no AVX512-BF16 or AMX) it runs on --emulated-n images, paired with fp32
on the same. Fidelity: the mean cosine of each path's vectors to fp32's, global vectors by photo
and region vectors of the boxes both indexes hold (not at high detail: other regions). Appended
to benchmarks/results/cpu_runtime.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, interleaved, paired_ratio, without_region_trust

from harmosearch.config import SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.model.device import CPU_FEATURES_ENV, cpu_features
from harmosearch.model.encoder import load_encoder
from harmosearch.model.int8_probe import measured_speedup
from harmosearch.store import IndexReader
from harmosearch.store.manifest import read_manifest
from harmosearch.synth import generate

# name -> (settings, CPU features to pretend, or None for this CPU's)
SETTINGS = {
    "fp32": ({"encoder.precision": "fp32"}, None),
    "default": ({}, None),
    "int8, bf16 ruled out": ({"encoder.runtime": "onnxruntime"}, None),
    "bf16": ({"encoder.precision": "bf16"}, None),
    "default, no bf16 or VNNI": ({}, "none"),
    # What the speed buys: high detail at this CPU's path (fidelity not compared: other regions).
    "default, high detail": ({"regions.detail": "high"}, None),
}


@contextlib.contextmanager
def features(value: str | None) -> Iterator[None]:
    """HARMOSEARCH_CPU_FEATURES set to `value` (None: this CPU's own) for the block."""
    before = os.environ.get(CPU_FEATURES_ENV)
    if value is not None:
        os.environ[CPU_FEATURES_ENV] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CPU_FEATURES_ENV, None)
        else:
            os.environ[CPU_FEATURES_ENV] = before


def vectors(index: Path) -> tuple[dict[str, np.ndarray], dict[tuple, np.ndarray]]:
    """Global vectors by photo, region vectors by (photo, rounded box)."""
    reader = IndexReader(index)
    paths = [str(p) for p in reader.images["path"]]
    regions = {}
    for i, path in enumerate(paths):
        sl = reader.regions_of(i)
        boxes = np.stack([reader.regions[c][sl] for c in ("x0", "y0", "x1", "y1")], 1).round(1)
        for box, vector in zip(boxes, np.asarray(reader.region_vectors[sl], np.float32), strict=True):
            regions[(path, *box.tolist())] = vector
    return dict(zip(paths, np.asarray(reader.global_vectors, np.float32), strict=True)), regions


def mean_cosine(a: dict, b: dict) -> tuple[float, float]:
    """(mean cosine over the keys both hold, the share of a's keys that b holds)."""
    keys = [k for k in a if k in b]
    x, y = np.stack([a[k] for k in keys]), np.stack([b[k] for k in keys])
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return float(cos.mean()), len(keys) / len(a)


def timed_builds(photos: Path, work: Path, configs: dict, rounds: int, skip_trust: bool) -> tuple[dict, dict, dict]:
    """Seconds per round of build_index for each path (after a warm-up build that exports), and
    of each build's region trust measurement (a fixed cost per build: boxes of up to 128 pictures encoded,
    whatever the library's size), as the build's manifest records it, of the timed builds and of
    the warm-up build (with skip_trust, no build measures it)."""
    encoders = {}
    trust: dict[str, list[float]] = {path: [] for path in configs}

    def build(path: str, index: Path) -> None:
        config, feats = configs[path]
        with features(feats):
            build_index(photos, index, config, encoder=encoders[path], rebuild=True)
        trust[path].append(trust_seconds(index))

    with without_region_trust(skip_trust):
        for path, (config, feats) in configs.items():
            with features(feats):
                encoders[path] = load_encoder(config)
            build(path, work / "warm")
        warm = {path: trust[path].pop() for path in configs}
        times = interleaved([lambda p=p: build(p, work / p) for p in configs], rounds=rounds)
    return dict(zip(configs, times, strict=True)), trust, warm


def trust_seconds(index: Path) -> float:
    """What the index's region trust measurement took, as its manifest records it (0: none)."""
    return float((read_manifest(index).get("region_trust") or {}).get("seconds", 0.0))


def per_image(times: dict[str, list[float]], trust: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each round's build seconds with its region trust measurement taken out."""
    return {p: [t - s for t, s in zip(times[p], trust[p], strict=True)] for p in times}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16:random")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--emulated-n", type=int, default=8, help="images for bf16 where it is emulated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", default=None, help="paths.cache (exported graphs); default: the config's")
    parser.add_argument(
        "--skip-trust",
        action="store_true",
        help="builds leave out the region trust measurement (a fixed cost per build)",
    )
    parser.add_argument("--settings", default=";".join(SETTINGS), help="which of SETTINGS, by name, separated by ';'")
    return parser.parse_args()


def photo_folders(work: Path, n: int, few_n: int) -> tuple[Path, Path]:
    """n synthetic scenes as JPEG photos, and a folder of the first few_n of them."""
    generate(work / "scenes", SynthConfig(n=n, seed=2024), workers=2)
    photos, few = work / "photos", work / "few"
    photos.mkdir()
    few.mkdir()
    for png in sorted((work / "scenes" / "images").glob("*.png")):
        Image.open(png).convert("RGB").save(photos / f"{png.stem}.jpg", quality=90)
    for jpg in sorted(photos.glob("*.jpg"))[:few_n]:
        shutil.copy(jpg, few / jpg.name)
    return photos, few


def resolve(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, tuple]]:
    """Each named setting's path on this CPU, and the config (and features) of each path."""
    base = {"encoder.model": args.model, "encoder.device": "cpu", **({"paths.cache": args.cache} if args.cache else {})}
    resolved, configs = {}, {}
    for name in args.settings.split(";"):
        settings, feats = SETTINGS[name.strip()]
        config = load_config(overrides={**base, **settings})
        with features(feats):
            path = str(load_encoder(config).path) + (", high detail" if config.regions.detail == "high" else "")
        resolved[name] = path
        configs.setdefault(path, (config, feats))
    return resolved, configs


def main() -> None:
    args = arguments()
    work = Path(tempfile.mkdtemp(prefix="harmosearch-cpu-runtime-"))
    try:
        load_before = list(os.getloadavg())
        photos, few = photo_folders(work, args.n, args.emulated_n)
        resolved, configs = resolve(args)
        print("paths:", resolved)
        fp32 = "fp32 (torch)"
        full = {p: c for p, c in configs.items() if "bf16" in cpu_features() or not p.startswith("bf16")}
        times, trust, warm_trust = timed_builds(photos, work / "full", full, args.rounds, args.skip_trust)
        emulated = {p: c for p, c in configs.items() if p not in full}
        few_times, few_trust = ({}, {})
        if emulated:
            few_configs = {fp32: configs[fp32], **emulated}
            few_times, few_trust, _ = timed_builds(few, work / "few-index", few_configs, 1, args.skip_trust)
        speeds, ratios, whole, fidelity = {}, {}, {}, {}
        for path in configs:
            n, seconds, trusts, folder = (
                (args.n, times, trust, "full") if path in full else (args.emulated_n, few_times, few_trust, "few-index")
            )
            own = per_image(seconds, trusts)
            speeds[path], whole[path] = n / min(own[path]), n / min(seconds[path])
            ratios[path] = paired_ratio(own[fp32], own[path])
            fidelity[path] = path_fidelity(work / folder, fp32, path)
            f = fidelity[path]
            print(
                f"{path:34s} {speeds[path]:7.2f} images/s ({whole[path]:.2f} the whole build)  {ratios[path]:5.2f}x "
                f"fp32  cosine global {f['global_cosine']:.4f}, regions {f['region_cosine']:.4f} "
                f"({f['regions_matched']:.0%} of boxes shared)"
            )
        for name, path in resolved.items():
            print(f"  {name:28s} -> {path}: {ratios[path]:.2f}x fp32")
        few_named = {f"{p} ({args.emulated_n} images)": t for p, t in few_times.items()}
        out = append_result(
            "cpu_runtime",
            {
                "model": args.model,
                "images": args.n,
                "emulated_images": args.emulated_n if emulated else 0,
                "rounds": args.rounds,
                "cpu_features": sorted(cpu_features()),
                "int8_probe": measured_speedup(configs[fp32][0].paths.cache_dir),  # without VNNI, auto goes by it
                "load_average_before": load_before,
                "load_average_after": list(os.getloadavg()),
                "settings": resolved,
                "images_per_s": speeds,
                "speed_over_fp32": ratios,
                **({} if args.skip_trust else {"images_per_s_whole_build": whole}),
                "trust_skipped_in_rounds": args.skip_trust,
                "trust_seconds_warm_up": warm_trust,
                "per_image": (
                    "builds left out the region trust measurement (a fixed cost per build)"
                    if args.skip_trust
                    else "each build's region trust measurement (its manifest's seconds) taken out"
                ),
                "fidelity_to_fp32": fidelity,
                "seconds_per_round": {**times, **few_named},
                "trust_seconds_per_round": {
                    **trust,
                    **{f"{p} ({args.emulated_n} images)": t for p, t in few_trust.items()},
                },
            },
        )
        print(f"appended to {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def path_fidelity(folder: Path, fp32: str, path: str) -> dict[str, float]:
    """Mean cosine of a path's vectors to fp32's: global vectors by photo, region vectors of the
    boxes both indexes hold (not compared at another detail: other regions)."""
    (g_ref, r_ref), (g, r) = vectors(folder / fp32), vectors(folder / path)
    r_cos, matched = mean_cosine(r_ref, r) if "detail" not in path else (float("nan"), 0.0)
    return {"global_cosine": mean_cosine(g_ref, g)[0], "region_cosine": r_cos, "regions_matched": matched}


if __name__ == "__main__":
    main()
