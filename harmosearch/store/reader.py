"""Reading an index: a consistent view of its current generation, its verification, and what
`harmosearch info` shows of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import IndexStoreError
from harmosearch.store.ann import open_faiss
from harmosearch.store.manifest import read_manifest, sha256_file
from harmosearch.store.tables import RowCounts, read_parquet


class IndexReader(RowCounts):
    """A consistent view of one generation: tables, vectors (memory-mapped) and FAISS indexes."""

    def __init__(self, root: Path, load_indexes: bool = True) -> None:
        self.root = Path(root)
        for _ in range(3):
            self.manifest = read_manifest(self.root)
            try:
                self._load(self.manifest["files"], load_indexes)
                break
            except (OSError, ValueError, RuntimeError) as exc:
                # Two updates committed while this reader was between the manifest and its files
                # (each update removes the generation before its previous one): read the new one.
                if read_manifest(self.root)["generation"] == self.manifest["generation"]:
                    raise IndexStoreError(
                        f"index {self.root} is damaged ({str(exc).splitlines()[0]}); run harmosearch info --verify"
                    ) from None
        else:
            raise IndexStoreError(f"index {self.root} kept changing while it was opened; try again")
        counts = np.bincount(self.regions["image_id"].astype(np.int64), minlength=self.n_images)
        self.region_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _load(self, files: dict[str, Any], load_indexes: bool) -> None:
        self.images = read_parquet(self.root / files["images"])
        self.regions = read_parquet(self.root / files["regions"])
        self.global_vectors = np.load(self.root / files["global_vectors"], mmap_mode="r")
        self.region_vectors = np.load(self.root / files["region_vectors"], mmap_mode="r")
        self.global_index = open_faiss(self.root, files["global_index"]) if load_indexes else None
        self.region_index = open_faiss(self.root, files["region_index"]) if load_indexes else None

    def regions_of(self, image_id: int) -> slice:
        return slice(int(self.region_start[image_id]), int(self.region_start[image_id + 1]))


def verify(root: Path) -> list[str]:
    """Problems found in an index (empty when it is sound)."""
    problems: list[str] = []
    try:
        manifest = read_manifest(root)
    except IndexStoreError as exc:
        return [str(exc)]
    for name, expected in manifest.get("checksums", {}).items():
        path = Path(root) / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != expected["bytes"]:
            problems.append(f"{name}: size {path.stat().st_size} bytes, manifest says {expected['bytes']}")
        elif sha256_file(path) != expected["sha256"]:
            problems.append(f"{name}: checksum mismatch (the file changed after it was written)")
    if problems:
        return problems
    try:
        reader = IndexReader(root)
    except IndexStoreError as exc:
        return [str(exc)]
    counts = manifest["counts"]
    checks = [
        (
            reader.n_images == counts["images"],
            f"images table has {reader.n_images} rows, manifest says {counts['images']}",
        ),
        (
            reader.n_regions == counts["regions"],
            f"regions table has {reader.n_regions} rows, manifest says {counts['regions']}",
        ),
        (len(reader.global_vectors) == reader.n_images, "global vectors and images table differ in length"),
        (len(reader.region_vectors) == reader.n_regions, "region vectors and regions table differ in length"),
        (reader.global_index.ntotal == reader.n_images, "global FAISS index and images table differ in length"),
        (reader.region_index.ntotal == reader.n_regions, "region FAISS index and regions table differ in length"),
        (bool(np.all(np.diff(reader.regions["image_id"]) >= 0)), "regions are not grouped by image"),
        (
            reader.n_regions == 0 or int(reader.regions["image_id"].max()) < reader.n_images,
            "a region points past the images table",
        ),
    ]
    problems += [message for ok, message in checks if not ok]
    return problems


def size_on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def describe(root: Path) -> dict[str, Any]:
    """What `harmosearch info` shows of an index: counts, model, FAISS types, times, sizes, config."""
    manifest = read_manifest(root)
    enc = manifest["encoder"]
    photos = Path(manifest["photos_root"])
    return {
        "index": str(root),
        "photos": str(photos),
        "photos_found": photos.is_dir(),
        "images": manifest["counts"]["images"],
        "regions": manifest["counts"]["regions"],
        "videos": manifest["counts"].get("videos", 0),
        "frames": manifest["counts"].get("frames", 0),
        "calibrated": "calibration" in manifest,
        # None: never measured (made before it was); {"trust": None}: tried, nothing to sample
        "region_trust": (manifest["region_trust"] or {"trust": None} if "region_trust" in manifest else None),
        # encoder.dense_mode auto's choice when the index was built (indexing.dense_choice); None otherwise
        "dense_mode_choice": manifest.get("dense_mode_choice"),
        "model": enc["spec"],
        "weights": enc["weights"],
        "embed_dim": enc["embed_dim"],
        "image_size": enc["image_size"],
        "grid": list(enc["grid"]),
        # How the image vectors were made (model.runtimes); indexes that do not say made them in fp32.
        "vectors": f"{enc['precision']} ({enc['runtime']})" if enc.get("precision") else "fp32 (torch), unrecorded",
        "faiss": dict(manifest["index_types"]),
        "created": manifest["created"],
        "updated": manifest["updated"],
        "generation": manifest["generation"],
        "bytes": size_on_disk(root),
        "last_update": {k: v for k, v in manifest.get("last_update", {}).items() if isinstance(v, int)},
        "config": manifest["config"],
        # How a high detail's regions were proposed beyond the config (regions.proposal_constants)
        "proposals": manifest.get("proposals"),
    }
