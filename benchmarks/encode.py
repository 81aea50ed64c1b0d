"""Encoding and indexing throughput, as ratios measured in one run on the same images.

    python benchmarks/encode.py [--model harmo-tiny] [--n 256] [--batch 64] [--device cpu]

Prints images/s for (a) global only: open_clip's own `encode_image`, the raw model forward;
(b) global + regions: harmosearch's forward (global vector and value-path dense map), proposals,
RoIAlign and selection; (c) a crop-per-region baseline that runs the image tower once per
region; (d) end-to-end `build_index` (find, hash, decode, encode, regions, store).
Goals: (b)/(a) time ratio <= 1.15, (d)/(a) throughput ratio >= 0.85. On a GPU (`--device cuda`)
every variant runs under the encoder's autocast and is timed to the GPU's last kernel.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, best_of, interleaved, paired_ratio

from harmosearch.config import SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.media.formats import open_still
from harmosearch.model.device import autocast
from harmosearch.model.encoder import load_encoder, vision_forward
from harmosearch.regions.proposals import image_regions, window_boxes
from harmosearch.synth import generate


def main() -> None:
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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="harmosearch-encode-"))
    try:
        generate(work / "scenes", SynthConfig(n=args.n, seed=777), workers=2)
        if args.format == "jpg":
            for png in sorted((work / "scenes" / "images").glob("*.png")):
                Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=90)
                png.unlink()
        config = load_config(
            overrides={
                "encoder.model": args.model,
                "encoder.batch_size": args.batch,
                "encoder.device": args.device,
                "index.encode_in": args.encode_in,
            }
        )
        encoder = load_encoder(config)
        paths = sorted((work / "scenes" / "images").glob(f"*.{args.format}"))
        images = [open_still(p).image for p in paths]
        pixels = torch.stack([encoder.image_tensor(im) for im in images])
        sizes = [im.size for im in images]
        device = encoder.device
        batches = [b.to(device) for b in torch.split(pixels, args.batch)]

        def finished() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def global_only() -> None:
            with torch.inference_mode(), autocast(device, encoder.config.precision):
                for b in batches:
                    encoder.model.encode_image(b)
            finished()

        def global_and_dense() -> None:
            with torch.inference_mode(), autocast(device, encoder.config.precision):
                for b in batches:
                    vision_forward(encoder.model, b, encoder.config.dense_mode)
            finished()

        def with_regions() -> None:
            offset = 0
            for b in batches:
                g, dense = encoder.encode_pixels(b)
                image_regions(
                    dense,
                    g,
                    sizes[offset : offset + len(b)],
                    encoder.grid,
                    encoder.image_size,
                    encoder.config.resize,
                    config.regions,
                )
                offset += len(b)
            finished()

        crop_images = images[: max(4, args.n // 16)]

        def crop_per_region() -> None:
            with torch.inference_mode(), autocast(device, encoder.config.precision):
                for im in crop_images:
                    boxes, _ = window_boxes(im.width, im.height, config.regions.scales, config.regions.overlap)
                    crops = [encoder.image_tensor(im.crop(tuple(int(v) for v in box))) for box in boxes.tolist()]
                    encoder.model.encode_image(torch.stack(crops).to(device))
            finished()

        def end_to_end() -> None:
            shutil.rmtree(work / "index", ignore_errors=True)
            build_index(work / "scenes" / "images", work / "index", config, encoder=encoder)

        with_regions()  # warm up
        # Rounds alternate between the variants, so a noisy spell on a shared machine hits all of
        # them alike; each variant keeps its fastest round.
        rounds = interleaved([global_only, global_and_dense, with_regions, end_to_end], rounds=args.rounds)
        t_global, t_dense, t_regions, t_e2e = (min(times) for times in rounds)
        t_crop = best_of(crop_per_region, repeat=1) * len(images) / len(crop_images)
        n = len(images)
        rows = {
            "global only (open_clip encode_image)": n / t_global,
            "global + dense map (one forward)": n / t_dense,
            "global + regions": n / t_regions,
            "crop per region (baseline)": n / t_crop,
            "end-to-end build_index": n / t_e2e,
        }
        for name, rate in rows.items():
            print(f"{name:38s} {rate:8.1f} images/s")
        # Ratios: the median over rounds of each round's pair (see paired_ratio).
        regions_ratio = paired_ratio(rounds[2], rounds[0])
        e2e_ratio = paired_ratio(rounds[0], rounds[3])
        print(f"time ratio global+regions / global-only: {regions_ratio:.3f}  (goal <= 1.15)")
        print(f"crop-per-region is {t_crop / t_regions:.1f}x slower than one pass with regions")
        print(f"end-to-end indexing / global-only forward throughput: {e2e_ratio:.3f}  (goal >= 0.85)")
        path = append_result(
            "encode",
            {
                "model": args.model,
                "images": n,
                "format": args.format,
                "encode_in": args.encode_in,
                "device": str(device),
                "batch": args.batch,
                "images_per_s": rows,
                "rounds": args.rounds,
                "seconds_per_round": rounds,
                "regions_over_global_time": regions_ratio,
                "end_to_end_over_raw": e2e_ratio,
            },
        )
        print(f"appended to {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
