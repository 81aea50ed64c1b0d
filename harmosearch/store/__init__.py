"""The index directory: the only package that knows file formats.

    manifest.json            schema version, encoder identity, resolved config, counts, times,
                             the data files of the current generation with their SHA-256, the
                             index's calibration; written last, by an atomic rename
    images.gN.parquet        row i = global FAISS id i: path, size, mtime_ns, sha256, width, height,
                             frame_time (a video's frames are rows of their own), capture time,
                             camera, orientation, GPS position (MEDIA_COLUMNS)
    regions.gN.parquet       row j = region FAISS id j: image_id, box (pixels and normalised), scale
    global.gN.npy            float16 global vectors (exact rescoring, incremental reuse)
    regions.gN.npy           float16 region vectors
    global.gN.faiss          FAISS index over the global vectors
    regions.gN.faiss         FAISS index over the region vectors; with index.shard_size, the
                             shards regions.gN.sK.faiss over consecutive rows instead
    index.lock               held by the one writer

Every update writes a new generation N beside the old one and then swaps the manifest, so a
reader sees the old index or the new one, never a torn one. The previous generation is kept
until the next update, for readers that loaded its manifest a moment before the swap.

The rooms: `manifest` (the manifest, its schema version, the writer lock, atomic writes, hashes),
`tables` (the Parquet tables), `ann` (FAISS: index types, building, shards, GPU copies, search,
exact rescoring), `staging` (encoded batches not yet committed), `reader` (opening, verifying and
describing an index), `writer` (the next generation and the manifest swap) and `vectors` (stored
float16 rows read back as float32 for scoring). What other packages use is imported here.
"""

from harmosearch.store.ann import (
    ShardedIndex,
    build_faiss,
    build_shards,
    check_index_type,
    choose_index_type,
    faiss_reason,
    open_faiss,
    rescore_exact,
    search_vectors,
    to_gpus,
    tune,
)
from harmosearch.store.manifest import SCHEMA_VERSION, IndexLock, read_manifest, sha256_file
from harmosearch.store.reader import IndexReader, describe, size_on_disk, verify
from harmosearch.store.staging import (
    StagedPicture,
    claim_staging,
    clear_staging,
    read_staged,
    save_chunk,
    staged_pictures,
)
from harmosearch.store.tables import IMAGE_COLUMNS, MEDIA_COLUMNS, REGION_COLUMNS, IndexData, video_counts
from harmosearch.store.writer import write_generation

__all__ = [
    "IMAGE_COLUMNS",
    "MEDIA_COLUMNS",
    "REGION_COLUMNS",
    "SCHEMA_VERSION",
    "IndexData",
    "IndexLock",
    "IndexReader",
    "ShardedIndex",
    "StagedPicture",
    "build_faiss",
    "build_shards",
    "check_index_type",
    "choose_index_type",
    "claim_staging",
    "clear_staging",
    "describe",
    "faiss_reason",
    "open_faiss",
    "read_manifest",
    "read_staged",
    "rescore_exact",
    "save_chunk",
    "search_vectors",
    "sha256_file",
    "size_on_disk",
    "staged_pictures",
    "to_gpus",
    "tune",
    "verify",
    "video_counts",
    "write_generation",
]
