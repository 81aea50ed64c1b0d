"""Peak memory of an index update, against the size of the vectors it writes.

    python benchmarks/update_memory.py [--images 8000,40000] [--regions 100] [--model harmo-tiny]

For each size: that many tiny photos, and their encoded vectors staged as an interrupted run
leaves them (random unit vectors in the model's space, `--regions` per image, 256 images a
chunk). Then `harmosearch index` resumes them in a child process: scanning, hashing, metadata,
assembly, the FAISS build the size policy picks, calibration and writing; everything but the
encoding. The child's peak anonymous memory (RssAnon in /proc, sampled every 20 ms: what the
process itself allocates) is set against the bytes of the vectors it stores (float16); its
peak resident memory (ru_maxrss) also counts the pages of memory-mapped files it has touched,
which the kernel may drop at will. Between two sizes, the growth of the anonymous peak over the
growth in regions is what an update holds per region (the fixed cost of Python, torch and the
model cancels out). Sizes run smallest first (ru_maxrss of children is a running maximum).
Linux only. Appends to benchmarks/results/update_memory.jsonl.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.config import load_config
from harmosearch.indexing.encode import Encoded
from harmosearch.model.encoder import load_encoder
from harmosearch.store import claim_staging, read_manifest, save_chunk, sha256_file

CHUNK = 256


def make_photos(folder: Path, n: int) -> list[Path]:
    """n distinct 8x8 PNGs (each pixel row spells the image number)."""
    from PIL import Image

    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        pixels = np.zeros((8, 8, 3), np.uint8)
        pixels[0, :4, 0] = np.frombuffer(i.to_bytes(4, "big"), np.uint8)
        path = folder / f"{i // 1000:03d}" / f"p{i:06d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def stage(index: Path, paths: list[Path], regions: int, made_by: dict, dim: int, rng: np.random.Generator) -> None:
    """Chunks of encoded pictures for `paths`, as `harmosearch index` stages them."""
    folder = claim_staging(index, made_by)

    def unit(*shape: int) -> np.ndarray:
        x = rng.standard_normal(shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    corners = np.tile(np.float32([0, 0, 4, 4]), (regions, 1))
    for number, start in enumerate(range(0, len(paths), CHUNK)):
        records = [
            (sha256_file(p), Encoded(8, 8, unit(dim), corners, np.full(regions, 0.5, np.float32), unit(regions, dim)))
            for p in paths[start : start + CHUNK]
        ]
        save_chunk(folder, number, records)


def rss_anon(pid: int) -> int:
    """A process's anonymous resident memory in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="8000,40000")
    parser.add_argument("--regions", type=int, default=100)
    parser.add_argument("--model", default="harmo-tiny")
    args = parser.parse_args()
    config = load_config(overrides={"encoder.model": args.model, "encoder.device": "cpu"})
    encoder = load_encoder(config)
    dim = encoder.identity.embed_dim
    made_by = {"encoder": encoder.identity.to_dict(), "regions": config.to_json()["regions"]}
    rng = np.random.default_rng(0)
    rows = []
    for n in sorted(int(x) for x in args.images.split(",")):
        work = Path(tempfile.mkdtemp(prefix="harmosearch-update-"))
        try:
            paths = make_photos(work / "photos", n)
            stage(work / "index", paths, args.regions, made_by, dim, rng)
            started = time.perf_counter()
            command = ["index", str(work / "photos"), "--index", str(work / "index"), "--model", args.model]
            out, err = work / "stdout", work / "stderr"
            with out.open("w") as stdout, err.open("w") as stderr:
                child = subprocess.Popen(
                    [sys.executable, "-m", "harmosearch", *command, "--device", "cpu"], stdout=stdout, stderr=stderr
                )
                anon = 0
                while child.poll() is None:
                    anon = max(anon, rss_anon(child.pid))
                    time.sleep(0.02)
            seconds = time.perf_counter() - started
            if child.returncode != 0:
                raise SystemExit(f"harmosearch index failed: {err.read_text().strip().splitlines()[-1]}")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
            manifest = read_manifest(work / "index")
            regions = manifest["counts"]["regions"]
            row = {
                "images": n,
                "regions": regions,
                "vectors_bytes": (n + regions) * dim * 2,
                "peak_anon_bytes": anon,
                "peak_rss_bytes": peak,
                "seconds": round(seconds, 1),
                "index_types": manifest["index_types"],
                "resumed_all": f"{n} taken from an interrupted run" in out.read_text(),
            }
            rows.append(row)
            print(
                f"{n} images, {regions:,} regions: vectors {row['vectors_bytes'] / 2**20:.0f} MiB, peak anonymous "
                f"{anon / 2**20:.0f} MiB, resident {peak / 2**20:.0f} MiB, {seconds:.0f} s ({manifest['index_types']})"
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    summary = {}
    if len(rows) > 1:
        grown = rows[-1]["regions"] - rows[0]["regions"]
        per_region = (rows[-1]["peak_anon_bytes"] - rows[0]["peak_anon_bytes"]) / grown
        resident = (rows[-1]["peak_rss_bytes"] - rows[0]["peak_rss_bytes"]) / grown
        summary = {
            "anon_bytes_per_added_region": per_region,
            "rss_bytes_per_added_region": resident,
            "vector_bytes_per_region": dim * 2,
        }
        print(
            f"an update holds {per_region:.0f} bytes per region ({resident:.0f} resident with mapped files); "
            f"a region's vector is {dim * 2} bytes (float16)"
        )
    path = append_result("update_memory", {"model": args.model, "dim": dim, "rows": rows, **summary})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
