"""Retrieval: the candidate images a query scores, found by the approximate indexes.

Candidates are the images among the top global matches or holding one of each lexeme's top
regions (every lexeme in one batched FAISS call). Each candidate is then scored exactly from the
stored vectors (`score`), so an approximate index can miss candidates but never distorts their
scores. With filters, FAISS searches only the allowed rows through an ID selector; a small
allowed set (at most EXACT_SUBSET_REGIONS regions) is scored whole, so k results come back
whenever k files pass the filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harmosearch.config import SearchConfig
from harmosearch.errors import IndexStoreError
from harmosearch.search.query import Query

# A filtered search scores every allowed image exactly when they hold at most this many regions
# (about the work of an unfiltered search's candidates); above it, FAISS searches the allowed rows.
EXACT_SUBSET_REGIONS = 50_000


@dataclass(frozen=True)
class Searchable:
    """What retrieval searches: the two FAISS indexes (or their GPU copies, which take no ID
    selector) and which image each region row belongs to."""

    global_index: Any
    region_index: Any
    region_start: np.ndarray  # [I + 1]
    region_images: np.ndarray  # [R] image id of each region row
    gpu: dict[str, Any]

    @property
    def n_images(self) -> int:
        return len(self.region_start) - 1

    @classmethod
    def tuned(cls, reader: Any, s: SearchConfig) -> Searchable:
        """An index reader's FAISS indexes tuned by the search settings (nprobe, efSearch); with
        search.faiss_gpu, copies on the GPUs for unfiltered searches."""
        from harmosearch.store import to_gpus, tune

        gpu: dict[str, Any] = {}
        for name, index in (("global", reader.global_index), ("regions", reader.region_index)):
            tune(index, s.nprobe, s.ef_search)
            if s.faiss_gpu != "off":
                gpu[name] = to_gpus(index, shard=s.faiss_gpu == "shard")
        image_of = np.asarray(reader.regions["image_id"])
        return cls(reader.global_index, reader.region_index, reader.region_start, image_of, gpu)


def candidates(where: Searchable, query: Query, s: SearchConfig, allowed: np.ndarray | None = None) -> np.ndarray:
    """Candidate image ids, sorted; with filters, among the allowed images only (all of them
    when few, or when FAISS cannot restrict this index type or found fewer than k)."""
    if allowed is None:
        try:
            return _searched(where, query, s, None)
        except RuntimeError as exc:
            raise _unsearchable(exc, bool(where.gpu)) from None
    ids = np.flatnonzero(allowed)
    start = where.region_start
    if int((start[ids + 1] - start[ids]).sum()) <= EXACT_SUBSET_REGIONS:
        return ids
    try:
        found = _searched(where, query, s, allowed)
    except RuntimeError:  # an index type that takes no ID selector
        return ids
    return found if len(found) >= min(s.k, len(ids)) else ids


def _unsearchable(exc: RuntimeError, on_gpu: bool) -> IndexStoreError:
    """What to do about an index FAISS cannot search (an IVF without lists once passed for one)."""
    from harmosearch.store.ann import faiss_reason

    reason = faiss_reason(str(exc))
    if on_gpu:
        return IndexStoreError(
            f"FAISS cannot search this index on the GPU: {reason}; set search.faiss_gpu = off to search on the CPU"
        )
    return IndexStoreError(
        f"FAISS cannot search this index: {reason}; make another FAISS index from its kept vectors (nothing "
        "is encoded again): harmosearch index PHOTOS --index INDEX --index-type SQfp16"
    )


def _searched(where: Searchable, query: Query, s: SearchConfig, allowed: np.ndarray | None) -> np.ndarray:
    from harmosearch.store import search_vectors

    found: list[np.ndarray] = []
    images = where.n_images if allowed is None else int(allowed.sum())
    region_allowed = None if allowed is None else np.repeat(allowed, np.diff(where.region_start))
    regions = len(where.region_images) if region_allowed is None else int(region_allowed.sum())
    gpu = where.gpu if allowed is None else {}  # ID selectors run on the CPU indexes
    if images:
        wanted = min(images, max(s.k, s.global_candidates))
        _, ids = search_vectors(gpu.get("global", where.global_index), query.global_vector[None], wanted, allowed)
        found.append(ids[0][ids[0] >= 0])
    # A negated lexeme's best regions show what the query does not want: they find no candidates.
    lexemes = query.lexeme_vectors[query.wanted] if query.negated else query.lexeme_vectors
    if len(lexemes) and regions:
        # One batched call for all lexemes; FAISS pads with -1 when asked for more than it holds.
        wanted = min(regions, s.region_candidates)
        index = gpu.get("regions", where.region_index)
        _, ids = search_vectors(index, lexemes, wanted, region_allowed)
        found.append(where.region_images[ids[ids >= 0]])
    if not found:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64))
