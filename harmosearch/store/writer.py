"""Writing an index: the next generation beside the current one, then the manifest swap."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.indexes import MANIFEST
from harmosearch.store.ann import build_shards, choose_index_type, write_faiss
from harmosearch.store.manifest import SCHEMA_VERSION, sha256_file, write_atomic
from harmosearch.store.tables import IMAGE_COLUMNS, REGION_COLUMNS, IndexData, video_counts, write_parquet


def write_generation(
    root: Path,
    data: IndexData,
    identity: dict[str, Any],
    config: dict[str, Any],
    index_type: str,
    photos_root: Path,
    previous: dict[str, Any] | None,
    stats: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write generation N+1 and swap the manifest to it; drop generations older than N.
    `extra` keys are stored in the manifest beside the standard ones."""

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    generation = (previous or {}).get("generation", 0) + 1
    policy = config["index"]
    dim = int(identity["embed_dim"])
    shard_size = int(policy.get("shard_size", 0))
    global_type, region_type = (
        choose_index_type(n, index_type, policy["exact_below"], dim, int(policy.get("hnsw_memory_mb", 0)))
        for n in (data.n_images, data.n_regions)
    )
    checksums: dict[str, dict[str, Any]] = {}
    files = _write_tables_and_vectors(root, generation, data, dim, checksums)
    for key, stem, vectors, kind in (
        ("global_index", "global", data.global_vectors, global_type),
        ("region_index", "regions", data.region_vectors, region_type),
    ):
        files[key] = _write_faiss_files(
            root, f"{stem}.g{generation}", vectors.reshape(-1, dim), kind, shard_size, checksums
        )
    created = (previous or {}).get("created", now())
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "generation": generation,
        "created": created,
        "updated": now(),
        "photos_root": str(Path(photos_root).resolve()),
        "encoder": identity,
        "config": config,
        "index_types": {"global": global_type, "regions": region_type},
        "counts": {"images": data.n_images, "regions": data.n_regions, **video_counts(data.images)},
        "files": files,
        "checksums": checksums,
        "last_update": stats or {},
        **(extra or {}),
    }
    write_atomic(
        root / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2, default=list), encoding="utf-8")
    )
    keep = set(_file_names(files)) | set(_file_names((previous or {}).get("files", {})))
    for path in root.glob("*.g*.*"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
    return manifest


def _write_tables_and_vectors(
    root: Path, generation: int, data: IndexData, dim: int, checksums: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The generation's Parquet tables and .npy vectors, each written atomically and its checksum
    recorded; returns the manifest's `files` entries for them."""
    files: dict[str, Any] = {
        "images": f"images.g{generation}.parquet",
        "regions": f"regions.g{generation}.parquet",
        "global_vectors": f"global.g{generation}.npy",
        "region_vectors": f"regions.g{generation}.npy",
    }
    staged = data.vector_files or (None, None)
    writers = {
        "images": lambda p: write_parquet(p, data.images, IMAGE_COLUMNS),
        "regions": lambda p: write_parquet(p, data.regions, REGION_COLUMNS),
        "global_vectors": lambda p: _save_npy(p, data.global_vectors, dim, staged[0]),
        "region_vectors": lambda p: _save_npy(p, data.region_vectors, dim, staged[1]),
    }
    for key, name in files.items():
        write_atomic(root / name, writers[key])
        checksums[name] = _checksum(root / name)
    return files


def _write_faiss_files(
    root: Path, stem: str, vectors: np.ndarray, index_type: str, shard_size: int, checksums: dict[str, dict[str, Any]]
) -> str | list[str]:
    """The FAISS index over `vectors`: one file `stem`.faiss, or with more than `shard_size` rows
    the shards `stem`.sK.faiss; returns its name or the list of its shards' names."""
    count = math.ceil(len(vectors) / shard_size) if shard_size and len(vectors) > shard_size else 1
    names = [f"{stem}.faiss"] if count == 1 else [f"{stem}.s{i:03d}.faiss" for i in range(count)]
    for name, shard in zip(names, build_shards(vectors, index_type, shard_size if count > 1 else 0), strict=True):
        write_atomic(root / name, lambda p, shard=shard: write_faiss(shard, p))
        checksums[name] = _checksum(root / name)
    return names[0] if count == 1 else names


def _checksum(path: Path) -> dict[str, Any]:
    """A data file's entry in the manifest's checksums, which `verify` compares it with."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _file_names(files: dict[str, Any]) -> list[str]:
    """Every file a manifest's `files` names (a sharded FAISS index names a list)."""
    return [name for value in files.values() for name in ([value] if isinstance(value, str) else value)]


def _save_npy(path: Path, vectors: np.ndarray, dim: int, staged: Path | None = None) -> None:
    if staged is not None:
        os.replace(staged, path)  # `vectors` maps it: the data stays the same, under its new name
        return
    with open(path, "wb") as f:
        np.save(f, np.asarray(vectors, dtype=np.float16).reshape(-1, dim))


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
