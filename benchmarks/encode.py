"""Encoding and indexing throughput, as ratios measured in one run on the same images.

    python benchmarks/encode.py [--model harmo-tiny] [--n 256] [--batch 64] [--device cpu]
                                [--precision auto] [--runtime auto] [--skip-trust] [--small M]

Prints images/s for (a) the raw forward of the inference path (`encoder.runner`: one pass of
the image tower giving global vectors and the value-path dense map; through torch, also open_clip's
own `encode_image`, global only); (b) global + regions: that forward, proposals (the pixel
segment boxes given), RoIAlign and selection; (c) a crop-per-region baseline that runs the image
tower once per region (torch paths); (d) end-to-end `build_index` (find, hash, decode, pixel
segments, encode, regions, calibration, region trust, store), whole and with the build's fixed
cost, its region trust measurement (up to 768 boxes alone encoded, whatever the library's size;
its seconds as the build's manifest records them), taken out: the per-image rate of a large library.
And each stage's share of the end-to-end time, each run alone in this process: decoding and
resizing the files (JPEG draft mode), the pixel segment proposals (regions.pixel_segments), the
forward, region proposals and pooling, region trust; the rest is hashing, DataLoader workers,
calibration, Parquet and FAISS. The calibration's texts are encoded once per model and machine
(then cached under paths.cache): their seconds are printed apart, not as a share.
With --small M, each round also builds an index of the first M images, and the per-image cost is
the slope between the two builds ((d at n) - (d at M)) / (n - M): what each further picture of a
large library costs, every build's start-up left out (the issue's measure: between a 32- and a
160-picture folder).
Goals: (b)/(a) time ratio <= 1.15, (d, per image)/(a) throughput ratio >= 0.85. On a GPU
(`--device cuda`) every variant runs under the encoder's autocast and is timed to the GPU's last
kernel.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, best_of, interleaved, paired_ratio, without_region_trust

from harmosearch.config import SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.media.formats import open_still
from harmosearch.model.device import autocast
from harmosearch.model.encoder import load_encoder, pixels_from_uint8, split_transform
from harmosearch.regions.proposals import image_regions, pixel_segment_boxes, window_boxes
from harmosearch.search.calibration import NULL_QUERIES
from harmosearch.store.manifest import read_manifest
from harmosearch.synth import generate


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--format", choices=["png", "jpg"], default="png", help="store the scenes as PNG or as JPEG (like photos)"
    )
    parser.add_argument("--encode-in", choices=["auto", "main", "workers"], default="auto")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="auto", help="encoder.precision: auto, fp32, bf16, int8, fp16")
    parser.add_argument("--runtime", default="auto", help="encoder.runtime: auto, torch, onnxruntime")
    parser.add_argument("--cache", default=None, help="paths.cache (exported graphs); default: the config's")
    parser.add_argument(
        "--small",
        type=int,
        default=0,
        help="also build an index of the first SMALL images each round: the per-image cost is then the slope "
        "between the two builds, each build's start-up (workers, sessions, calibration, writes) left out",
    )
    parser.add_argument(
        "--skip-trust",
        action="store_true",
        help="builds leave out the region trust measurement (a fixed cost per build)",
    )
    return parser.parse_args()


def scenes(folder: Path, n: int, fmt: str) -> list[Path]:
    generate(folder, SynthConfig(n=n, seed=777), workers=2)
    if fmt == "jpg":
        for png in sorted((folder / "images").glob("*.png")):
            Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=90)
            png.unlink()
    return sorted((folder / "images").glob(f"*.{fmt}"))


def main() -> None:
    args = arguments()
    work = Path(tempfile.mkdtemp(prefix="harmosearch-encode-"))
    try:
        paths = scenes(work / "scenes", args.n, args.format)
        overrides = {
            "encoder.model": args.model,
            "encoder.batch_size": args.batch,
            "encoder.device": args.device,
            "encoder.precision": args.precision,
            "encoder.runtime": args.runtime,
            "index.encode_in": args.encode_in,
        }
        config = load_config(overrides={**overrides, **({"paths.cache": args.cache} if args.cache else {})})
        encoder = load_encoder(config)
        encoder.runner.prepare(encoder.image_size)
        print(f"inference path: {encoder.path}")
        measure(args, work, paths, config, encoder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Variants:
    """What is timed, on the same images: each a function of no arguments."""

    def __init__(self, args: argparse.Namespace, work: Path, paths: list[Path], config: Any, encoder: Any) -> None:
        self.args, self.work, self.paths, self.config, self.encoder = args, work, paths, config, encoder
        self.load_before = list(os.getloadavg())
        self.images = [open_still(p).image for p in paths]
        pixels = torch.stack([encoder.image_tensor(im) for im in self.images])
        self.sizes = [im.size for im in self.images]
        self.device = encoder.device
        self.batches = [b.to(self.device) for b in torch.split(pixels, args.batch)]
        self.outputs = [encoder.encode_pixels(b) for b in self.batches]
        self.crop_images = self.images[: max(4, args.n // 16)]
        # Pictures as the indexing workers decode them (draft mode), for the pixel segments.
        self.drafted = [open_still(p, encoder.image_size) for p in paths]
        self.segments = self._segment_boxes()
        self.trust_seconds: list[float] = []  # of each end-to-end build, as its manifest records them
        self.trust: dict[str, Any] = {}  # the last build's region trust, as its manifest records it

    def finished(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def raw_forward(self) -> None:
        for b in self.batches:
            self.encoder.runner.forward(b)
        self.finished()

    def global_only(self) -> None:
        with torch.inference_mode(), autocast(self.device, self.encoder.path.precision):
            for b in self.batches:
                self.encoder.runner.model.encode_image(b)
        self.finished()

    def decode(self) -> None:
        """As the indexing workers decode: draft mode, the transform's geometry to uint8 per
        picture, ToTensor and Normalize once per batch (indexing.encode)."""
        split = split_transform(self.encoder.transform)
        pictures = [open_still(p, self.encoder.image_size).image for p in self.paths]
        if split is None:
            [self.encoder.transform(im) for im in pictures]
            return
        for lo in range(0, len(pictures), self.args.batch):
            arrays = np.stack([np.asarray(split[0](im), dtype=np.uint8) for im in pictures[lo : lo + self.args.batch]])
            pixels_from_uint8(torch.from_numpy(arrays), *split[1])

    def _segment_boxes(self) -> list[Any] | None:
        scales = tuple(self.config.regions.pixel_segments)
        if not scales:
            return None
        return [torch.from_numpy(pixel_segment_boxes(d.image, d.width, d.height, scales)) for d in self.drafted]

    def pixel_segments(self) -> None:
        self._segment_boxes()

    def _regions(self, outputs: Any) -> None:
        e, offset = self.encoder, 0
        for g, dense in outputs:
            part = slice(offset, offset + len(g))
            segments = self.segments[part] if self.segments is not None else None
            image_regions(
                dense,
                g,
                self.sizes[part],
                e.grid,
                e.image_size,
                e.config.resize,
                self.config.regions,
                None,
                None,
                segments,
            )
            offset += len(g)

    def regions(self) -> None:
        self._regions(self.outputs)

    def with_regions(self) -> None:
        self._regions(self.encoder.encode_pixels(b) for b in self.batches)
        self.finished()

    def calibration_texts(self) -> None:
        self.encoder.encode_queries(list(NULL_QUERIES))

    def end_to_end(self) -> None:
        shutil.rmtree(self.work / "index", ignore_errors=True)
        build_index(self.work / "scenes" / "images", self.work / "index", self.config, encoder=self.encoder)
        trust = read_manifest(self.work / "index").get("region_trust") or {}
        self.trust_seconds.append(float(trust.get("seconds", 0.0)))
        self.trust = trust

    def end_to_end_small(self) -> None:
        """build_index over the first --small images (a folder of links to them)."""
        folder = self.work / "small"
        if not folder.exists():
            folder.mkdir()
            for path in self.paths[: self.args.small]:
                (folder / path.name).symlink_to(path)
        shutil.rmtree(self.work / "index-small", ignore_errors=True)
        build_index(folder, self.work / "index-small", self.config, encoder=self.encoder)

    def crop_per_region(self) -> None:
        regions, e = self.config.regions, self.encoder
        with torch.inference_mode(), autocast(self.device, e.path.precision):
            for im in self.crop_images:
                boxes, _ = window_boxes(im.width, im.height, regions.scales, regions.overlap)
                crops = [e.image_tensor(im.crop(tuple(int(v) for v in box))) for box in boxes.tolist()]
                e.model.encode_image(torch.stack(crops).to(self.device))
        self.finished()


def timed(args: argparse.Namespace, v: Variants) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per round of each variant, and of each stage alone, rounds alternating between
    them all (a noisy spell on a shared machine hits all alike); and the fixed costs: the region
    trust of each end-to-end build (the build's own clock; none with --skip-trust), the
    calibration's texts (once per model and machine)."""
    torch_path = v.encoder.path.runtime == "torch"
    variants = {"raw": v.raw_forward, "regions": v.with_regions, "end to end": v.end_to_end}
    if torch_path:
        variants["global only"] = v.global_only
    if 0 < args.small < args.n:
        variants["end to end, small"] = v.end_to_end_small
    stages = {"decode": v.decode, "pixel segments": v.pixel_segments, "forward": v.raw_forward, "regions": v.regions}
    once = {"calibration texts": v.calibration_texts}
    fns = [*variants.values(), *stages.values(), *once.values()]
    with without_region_trust(args.skip_trust):
        v.with_regions(), v.end_to_end()  # warm up (the end-to-end build also caches the calibration's texts)
        v.trust_seconds.clear()
        rounds = interleaved(fns, rounds=args.rounds)
    times = dict(zip([*variants, *(f"stage: {k}" for k in stages), *once], rounds, strict=True))
    times["end to end, region trust taken out"] = [
        t - trust for t, trust in zip(times["end to end"], v.trust_seconds, strict=True)
    ]
    if "end to end, small" in times:  # seconds per round of the n - small pictures the larger build adds
        times["end to end, marginal"] = [
            big - small for big, small in zip(times["end to end"], times.pop("end to end, small"), strict=True)
        ]
    fixed = {k: times.pop(k) for k in once}
    if not args.skip_trust:
        fixed["region trust (per build)"] = list(v.trust_seconds)
    return times, fixed


def measure(args: argparse.Namespace, work: Path, paths: list[Path], config: Any, encoder: Any) -> None:
    v = Variants(args, work, paths, config, encoder)
    times, fixed = timed(args, v)
    n = len(v.images)
    best = {k: min(t) for k, t in times.items()}
    rows = {"raw forward (global + dense map, one pass)": n / best["raw"]}
    if "global only" in times:
        rows["global only (open_clip encode_image)"] = n / best["global only"]
        rows["crop per region (baseline)"] = len(v.crop_images) / best_of(v.crop_per_region, repeat=1)
    rows["global + regions"] = n / best["regions"]
    if not args.skip_trust:
        rows["end-to-end build_index"] = n / best["end to end"]
    rows["end-to-end build_index, region trust taken out"] = n / best["end to end, region trust taken out"]
    marginal = "end to end, marginal" in times
    if marginal:
        rows[f"end-to-end build_index, per further picture ({args.small} to {n})"] = (n - args.small) / best[
            "end to end, marginal"
        ]
    for name, rate in rows.items():
        print(f"{name:50s} {rate:8.2f} images/s")
    per_image = best["end to end, region trust taken out"]
    shares = {k.removeprefix("stage: "): best[k] / per_image for k in times if k.startswith("stage: ")}
    print("share of the end-to-end time (region trust taken out), each stage alone:")
    print("  " + ", ".join(f"{k} {s:.0%}" for k, s in shares.items()))
    fixed_seconds = {k: min(t) for k, t in fixed.items() if t}
    print("fixed costs:", ", ".join(f"{k} {s:.1f} s" for k, s in fixed_seconds.items()))
    # Ratios: the median over rounds of each round's pair (see paired_ratio).
    regions_ratio = paired_ratio(times["regions"], times["raw"])
    e2e_ratio = None if args.skip_trust else paired_ratio(times["raw"], times["end to end"])
    per_image_ratio = paired_ratio(times["raw"], times["end to end, region trust taken out"])
    print(f"time ratio global+regions / raw forward: {regions_ratio:.3f}  (goal <= 1.15)")
    print(
        f"end-to-end indexing (region trust taken out) / raw forward throughput: {per_image_ratio:.3f}  (goal >= 0.85)"
    )
    marginal_ratio = None
    if marginal:  # throughputs per picture: raw's n pictures against the marginal n - small
        raw, extra = times["raw"], times["end to end, marginal"]
        marginal_ratio = paired_ratio([r / n for r in raw], [t / (n - args.small) for t in extra])
        print(f"per further picture, end-to-end / raw forward throughput: {marginal_ratio:.3f}  (goal >= 0.85)")
    path = append_result(
        "encode",
        {
            "model": args.model,
            "images": n,
            "format": args.format,
            "encode_in": args.encode_in,
            "device": str(v.device),
            "inference_path": str(encoder.path),
            "batch": args.batch,
            "load_average_before": v.load_before,
            "load_average_after": list(os.getloadavg()),
            "images_per_s": rows,
            "stage_share_of_end_to_end_without_trust": shares,
            "fixed_seconds": fixed_seconds,
            "trust_skipped_in_rounds": args.skip_trust,
            "region_trust": v.trust,
            "rounds": args.rounds,
            "seconds_per_round": times,
            "regions_over_raw_time": regions_ratio,
            "end_to_end_over_raw": e2e_ratio,
            "end_to_end_without_trust_over_raw": per_image_ratio,
            "small": args.small or None,
            "end_to_end_marginal_over_raw": marginal_ratio,
        },
    )
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
