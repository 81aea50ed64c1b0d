"""Do the region proposals fit objects in clutter? The validation scenes of both worlds (flat,
and shapes over photographs) at the default detail, with the dense map's segment boxes (as
before regions.pixel_segments), with pixel segments at one Felzenszwalb scale, and at three
(the default): phrase search, grounding and the proposal ceiling (the share of annotated
objects that some proposal fits at IoU >= 0.5). Then what the pixel segments cost: their time
per picture against one image encoding of the bundled model and of ViT-B/16 (random weights),
timed in turns in this run.

    python benchmarks/proposals_clutter.py [--n 100]

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
from harmosearch.config import load_config

VARIANTS = {
    "dense-map segments": (),
    "pixel segments at 300": (300.0,),
    "pixel segments at 100, 300, 1000": (100.0, 300.0, 1000.0),
}


def figures(scales: tuple[float, ...], world: str, n: int) -> dict[str, Any]:
    config = load_config(
        overrides={"encoder.model": "harmo-tiny", "search.refine": False, "regions.pixel_segments": scales}
    )
    out = run_bench(config, "synthetic", ("search", "grounding"), n=n, split="val", world=world)["tasks"]
    return {
        "P@5": out["search"]["P@5"],
        "box@0.5": out["search"]["box@0.5"],
        "grounding": out["grounding"]["accuracy"],
        "proposal_ceiling": out["grounding"]["proposal_ceiling"],
        "config": config.to_json()["regions"],
    }


def costs(world: str) -> dict[str, Any]:
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

        segmenters = [
            lambda scales=scales: [pixel_segment_boxes(p, *p.size, scales) for p in pictures]
            for scales in VARIANTS.values()
            if scales
        ]
        times = interleaved([encode, *segmenters], rounds=5)
        out[model] = {
            "encode_s_per_picture": min(times[0]) / len(pictures),
            **{
                f"{name} / encoding": paired_ratio(t, times[0])
                for name, t in zip([k for k, v in VARIANTS.items() if v], times[1:], strict=True)
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    record: dict[str, Any] = {"model": "harmo-tiny", "split": "val", "n": args.n, "detail": "normal"}
    for world in ("flat", "photo"):
        for name, scales in VARIANTS.items():
            row = figures(scales, world, args.n)
            record[f"{world}, {name}"] = row
            print(world, name, {k: round(v, 3) for k, v in row.items() if k != "config"}, flush=True)
    record["cost"] = costs("photo")
    print(record["cost"])
    print(f"appended to {append_result('proposals_clutter', record)}")


if __name__ == "__main__":
    main()
