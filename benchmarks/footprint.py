"""What an index costs per image and per region: disk, memory once opened, and indexing throughput.

    python benchmarks/footprint.py [--model ViT-B-16:random] [--n 96] [--size 320] [--workers 2]

Builds the index of `--n` synthetic scenes with `harmosearch index`'s own code (`build_index`,
default settings: regions on, the size-based index policy) and reports, from the files it wrote:
regions per image, bytes on disk per image and per region for each kind of file (tables,
float16 vectors, FAISS indexes), the resident memory an opened `Index` adds (anonymous memory,
not pages of mapped files; the model excluded), and end-to-end images/s divided by the CPU
cores it had. The default model is the default model's architecture with random weights: the
cost of a forward pass and the vector size do not depend on the weights, and pretrained ones
need a download. Appends to benchmarks/results/footprint.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.config import SynthConfig, load_config
from harmosearch.indexing import build_index
from harmosearch.model.encoder import load_encoder
from harmosearch.search import Index
from harmosearch.store import read_manifest
from harmosearch.synth import generate

KINDS = {  # manifest file keys by what they hold
    "tables": ("images", "regions"),
    "float16 vectors": ("global_vectors", "region_vectors"),
    "faiss indexes": ("global_index", "region_index"),
}


def anonymous_mb() -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16:random")
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--size", type=int, default=320, help="scene width and height in pixels")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="harmosearch-footprint-"))
    try:
        generate(work / "scenes", SynthConfig(n=args.n, seed=31, size=args.size), workers=2)
        config = load_config(
            overrides={"encoder.model": args.model, "encoder.device": "cpu", "index.workers": args.workers}
        )
        encoder = load_encoder(config)
        report = build_index(work / "scenes" / "images", work / "index", config, encoder=encoder)
        manifest = read_manifest(work / "index")
        sizes = {name: entry["bytes"] for name, entry in manifest["checksums"].items()}
        files = manifest["files"]

        def total(keys: tuple[str, ...]) -> int:
            names = [n for k in keys for n in ([files[k]] if isinstance(files[k], str) else files[k])]
            return sum(sizes[n] for n in names)

        images, regions = report.images, report.regions
        per_kind = {
            kind: {
                "bytes_per_image": total(keys) / images,
                "global_bytes_per_image": total(keys[:1]) / images,
                "region_bytes_per_region": total(keys[1:]) / regions,
            }
            for kind, keys in KINDS.items()
        }
        before = anonymous_mb()
        index = Index(work / "index", config, encoder=encoder)
        index.search("a red circle")  # the first search allocates what searches keep
        opened_mb = anonymous_mb() - before
        disk = sum(sizes.values())
        payload = {
            "model": args.model,
            "embed_dim": manifest["encoder"]["embed_dim"],
            "images": images,
            "scene_pixels": f"{args.size}x{args.size}",
            "regions": regions,
            "regions_per_image": regions / images,
            "index_types": manifest["index_types"],
            "disk_bytes_per_image": disk / images,
            "by_kind": per_kind,
            "opened_index_heap_bytes_per_image": opened_mb * 2**20 / images,
            "images_per_s": report.images_per_s,
            "cores": cores,
            "images_per_s_per_core": report.images_per_s / cores,
            "load_average_after": os.getloadavg(),
            "config": config.to_dict(),
        }
        print(
            f"{images} images, {regions / images:.1f} regions each; {disk / images / 1024:.1f} KiB on disk per image; "
            f"opened: {opened_mb * 2**20 / images / 1024:.1f} KiB heap per image; "
            f"{report.images_per_s:.2f} images/s on {cores} cores"
        )
        print(append_result("footprint", payload))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
