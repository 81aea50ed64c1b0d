"""Encoding and indexing throughput, as ratios measured in one run on the same images.

    python benchmarks/encode.py [--model harmo-tiny] [--n 256] [--batch 64] [--device cpu]
                                [--precision auto] [--runtime auto]

Prints images/s for (a) the raw forward of the inference path (`encoder.runner`: one pass of
the image tower giving global vectors and the value-path dense map; through torch, also open_clip's
own `encode_image`, global only); (b) global + regions: that forward, proposals, RoIAlign and
selection; (c) a crop-per-region baseline that runs the image tower once per region (torch
paths); (d) end-to-end `build_index` (find, hash, decode, encode, regions, calibration, store).
And each stage's share of the end-to-end time, each run alone in this process: decoding and
resizing the files (JPEG draft mode), the forward, region proposals and pooling, the
calibration's texts; the rest is hashing, Parquet and FAISS.
Goals: (b)/(a) time ratio <= 1.15, (d)/(a) throughput ratio >= 0.85. On a GPU (`--device cuda`)
every variant runs under the encoder's autocast and is timed to the GPU's last kernel.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, best_of, interleaved, paired_ratio

from harmosearch.config import SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.media.formats import open_still
from harmosearch.model.device import autocast
from harmosearch.model.encoder import load_encoder
from harmosearch.regions.proposals import image_regions, window_boxes
from harmosearch.search.calibration import NULL_QUERIES
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
        self.images = [open_still(p).image for p in paths]
        pixels = torch.stack([encoder.image_tensor(im) for im in self.images])
        self.sizes = [im.size for im in self.images]
        self.device = encoder.device
        self.batches = [b.to(self.device) for b in torch.split(pixels, args.batch)]
        self.outputs = [encoder.encode_pixels(b) for b in self.batches]
        self.crop_images = self.images[: max(4, args.n // 16)]

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
        for p in self.paths:
            self.encoder.transform(open_still(p, self.encoder.image_size).image)

    def _regions(self, outputs: Any) -> None:
        e, offset = self.encoder, 0
        for g, dense in outputs:
            image_regions(
                dense,
                g,
                self.sizes[offset : offset + len(g)],
                e.grid,
                e.image_size,
                e.config.resize,
                self.config.regions,
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

    def crop_per_region(self) -> None:
        regions, e = self.config.regions, self.encoder
        with torch.inference_mode(), autocast(self.device, e.path.precision):
            for im in self.crop_images:
                boxes, _ = window_boxes(im.width, im.height, regions.scales, regions.overlap)
                crops = [e.image_tensor(im.crop(tuple(int(v) for v in box))) for box in boxes.tolist()]
                e.model.encode_image(torch.stack(crops).to(self.device))
        self.finished()


def measure(args: argparse.Namespace, work: Path, paths: list[Path], config: Any, encoder: Any) -> None:
    v = Variants(args, work, paths, config, encoder)
    torch_path = encoder.path.runtime == "torch"
    stages = {
        "decode": v.decode,
        "forward": v.raw_forward,
        "regions": v.regions,
        "calibration texts": v.calibration_texts,
    }
    fns = [v.raw_forward, v.with_regions, v.end_to_end, *stages.values()] + ([v.global_only] if torch_path else [])
    v.with_regions(), v.end_to_end()  # warm up
    # Rounds alternate between the variants, so a noisy spell on a shared machine hits all of
    # them alike; each variant keeps its fastest round.
    rounds = interleaved(fns, rounds=args.rounds)
    t_raw, t_regions, t_e2e = (min(times) for times in rounds[:3])
    n = len(v.images)
    rows = {"raw forward (global + dense map, one pass)": n / t_raw}
    if torch_path:
        rows["global only (open_clip encode_image)"] = n / min(rounds[-1])
        rows["crop per region (baseline)"] = len(v.crop_images) / best_of(v.crop_per_region, repeat=1)
    rows["global + regions"] = n / t_regions
    rows["end-to-end build_index"] = n / t_e2e
    for name, rate in rows.items():
        print(f"{name:44s} {rate:8.1f} images/s")
    shares = {name: min(rounds[3 + i]) / t_e2e for i, name in enumerate(stages)}
    print("share of the end-to-end time, each stage alone:", ", ".join(f"{k} {s:.0%}" for k, s in shares.items()))
    # Ratios: the median over rounds of each round's pair (see paired_ratio).
    regions_ratio = paired_ratio(rounds[1], rounds[0])
    e2e_ratio = paired_ratio(rounds[0], rounds[2])
    print(f"time ratio global+regions / raw forward: {regions_ratio:.3f}  (goal <= 1.15)")
    print(f"end-to-end indexing / raw forward throughput: {e2e_ratio:.3f}  (goal >= 0.85)")
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
            "images_per_s": rows,
            "stage_share_of_end_to_end": shares,
            "rounds": args.rounds,
            "seconds_per_round": rounds,
            "regions_over_raw_time": regions_ratio,
            "end_to_end_over_raw": e2e_ratio,
        },
    )
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
