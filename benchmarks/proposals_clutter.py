"""Do the region proposals fit objects in clutter? The validation scenes of both worlds (flat,
and shapes over photographs) at one detail, with the dense map's segment boxes (as before
regions.pixel_segments), with pixel segments at one Felzenszwalb scale, at three with every
scale at full size (regions.pixel_coarsening 0), and at three with the coarser scales on a
shrunk picture (the default): phrase search, grounding and the proposal ceiling (the share of
annotated objects that some proposal fits at IoU >= 0.5). Then what the pixel segments cost:
their time per picture against one image encoding of the bundled model and of ViT-B/16 (random
weights), timed in turns in this run.

    python benchmarks/proposals_clutter.py [--n 100] [--model harmo-mix] [--detail normal]
                                           [--variants NAME ...]

Appends to benchmarks/results/proposals_clutter.jsonl.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, interleaved, paired_ratio

from harmosearch.bench import run_bench
from harmosearch.config import SHAPES_MODEL, load_config

# Each variant's region settings (the rest are the defaults).
VARIANTS: dict[str, dict[str, Any]] = {
    "dense-map segments": {"regions.pixel_segments": ()},
    "pixel segments at 300": {"regions.pixel_segments": (300.0,)},
    "pixel segments at 100, 300, 1000": {
        "regions.pixel_segments": (100.0, 300.0, 1000.0),
        "regions.pixel_coarsening": 0.0,
    },
    "pixel segments at 100, 300, 1000, coarser scales shrunk": {
        "regions.pixel_segments": (100.0, 300.0, 1000.0),
        "regions.pixel_coarsening": 0.3,
    },
}


def figures(args: argparse.Namespace, regions: dict[str, Any], world: str) -> dict[str, Any]:
    overrides = {"encoder.model": args.model, "search.refine": False, "regions.detail": args.detail, **regions}
    config = load_config(overrides=overrides)
    out = run_bench(config, "synthetic", ("search", "grounding"), n=args.n, split="val", world=world)["tasks"]
    return {
        "P@5": out["search"]["P@5"],
        "box@0.5": out["search"]["box@0.5"],
        "grounding": out["grounding"]["accuracy"],
        "proposal_ceiling": out["grounding"]["proposal_ceiling"],
        "config": config.to_json()["regions"],
    }


def costs(world: str, variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Seconds per picture of the pixel segments at each variant's scales, and their ratio to one
    image encoding (batch of 8) of each model, timed in turns."""
    import torch
    from PIL import Image

    from harmosearch.config import SynthConfig
    from harmosearch.model.encoder import load_encoder
    from harmosearch.regions.proposals import pixel_segment_boxes
    from harmosearch.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), SynthConfig(n=8, seed=77, world=world), workers=0)
        pictures = [Image.open(p).convert("RGB") for p in sorted(Path(tmp, "images").iterdir())]
    out: dict[str, Any] = {"pictures": len(pictures), "size": list(pictures[0].size)}
    for model in ("harmo-tiny", "ViT-B-16:random"):
        encoder = load_encoder(load_config(overrides={"encoder.model": model, "encoder.device": "cpu"}))
        batch = torch.stack([encoder.transform(p) for p in pictures])

        def encode(encoder: Any = encoder, batch: Any = batch) -> None:
            with torch.no_grad():
                encoder.encode_pixels(batch)

        segmented = {
            name: load_config(overrides=regions).regions
            for name, regions in variants.items()
            if regions["regions.pixel_segments"]
        }
        segmenters = [
            lambda regions=regions: [pixel_segment_boxes(p, *p.size, regions) for p in pictures]
            for regions in segmented.values()
        ]
        times = interleaved([encode, *segmenters], rounds=5)
        out[model] = {
            "encode_s_per_picture": min(times[0]) / len(pictures),
            **{f"{name} / encoding": paired_ratio(t, times[0]) for name, t in zip(segmented, times[1:], strict=True)},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--model", default=SHAPES_MODEL)
    parser.add_argument("--detail", choices=("normal", "high"), default="normal")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME")
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants}
    record: dict[str, Any] = {"model": args.model, "split": "val", "n": args.n, "detail": args.detail}
    for world in ("flat", "photo"):
        for name, regions in variants.items():
            row = figures(args, regions, world)
            record[f"{world}, {name}"] = row
            print(world, name, {k: round(v, 3) for k, v in row.items() if k != "config"}, flush=True)
    record["cost"] = costs("photo", variants)
    print(record["cost"])
    print(f"appended to {append_result('proposals_clutter', record)}")


if __name__ == "__main__":
    main()
