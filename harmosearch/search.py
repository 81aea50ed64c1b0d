"""Searching an index: lexemes against regions, the whole query against images, then fusion.

Candidates come from both FAISS indexes (the top regions of every lexeme, searched in one
batched call, and the top images of the global query); each candidate is then rescored
exactly from the stored vectors, so an approximate index can miss candidates but never
distorts their scores. See `fusion` for the formula.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.config import Config, SearchConfig
from harmosearch.errors import IndexStoreError, QueryError
from harmosearch.fusion import fuse, penalty

MAX_QUERY_CHARS = 1000


@dataclass(frozen=True)
class LexemeMatch:
    text: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the original image


@dataclass(frozen=True)
class Result:
    rank: int
    image_id: int
    path: str  # relative to the photo root
    absolute: Path
    score: float
    global_score: float
    lexemes: tuple[LexemeMatch, ...]
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "path": self.path,
            "score": round(self.score, 6),
            "global_score": round(self.global_score, 6),
            "lexemes": [
                {"text": m.text, "score": round(m.score, 6), "box": [round(v, 1) for v in m.box]} for m in self.lexemes
            ],
        }


@dataclass
class SearchResponse:
    query: str
    lexemes: list[str]
    results: list[Result]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "lexemes": self.lexemes, "results": [r.to_dict() for r in self.results]}


def choose_box(scores: np.ndarray, areas: np.ndarray, margin: float) -> int:
    """Which region's box to show for a lexeme: the largest one scoring within `margin` of the
    best. The mean-pooled score favours small windows inside an object; its best-scoring box
    alone is often a part of it (measured on synthetic scenes: grounding 46.9% -> 54.5% at 0.05)."""
    near = np.flatnonzero(scores >= scores.max() - margin)
    return int(near[np.argmax(areas[near])])


def latest_index(root: Path) -> Path:
    """The most recently updated index under `root` (the default for `query` without --index)."""
    from harmosearch.store import MANIFEST

    manifests = sorted(Path(root).glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime) if Path(root).is_dir() else []
    if not manifests:
        raise IndexStoreError(f"no index found under {root}/; build one with: harmosearch index PHOTOS_DIR")
    return manifests[-1].parent


class Index:
    """An open index plus the encoder that built it: the Python API behind `harmosearch query`.

    index = harmosearch.open_index("indexes/photos")
    for result in index.search("red umbrella near bench", k=5).results:
        print(result.path, result.score, result.lexemes)
    """

    def __init__(
        self, path: Path, config: Config | None = None, encoder: Any = None, device: str | None = None
    ) -> None:
        from harmosearch.config import config_from_dict
        from harmosearch.encoder import EncoderIdentity
        from harmosearch.store import IndexReader

        self.path = Path(path)
        self.reader = IndexReader(self.path)
        manifest = self.reader.manifest
        built = config_from_dict(manifest["config"])
        # Encoder settings come from the index (they decide what the vectors mean); search
        # settings from the caller.
        self.config = (
            built if config is None else replace(built, search=config.search, synth=config.synth, train=config.train)
        )
        if encoder is None:
            from harmosearch.encoder import load_encoder

            encoder = load_encoder(self.config.encoder, device=device)
        built_with = EncoderIdentity.from_dict(manifest["encoder"])
        differs = built_with.mismatch(encoder.identity)
        if differs:
            raise IndexStoreError(
                f"index {self.path} was built with model {built_with.spec!r} and cannot be searched with "
                f"{encoder.identity.spec!r} ({differs}); query with --model {built_with.spec} or rebuild the index"
            )
        self.encoder = encoder
        self.photos_root = Path(manifest["photos_root"])
        self._tune()

    def _tune(self) -> None:
        import faiss

        for index in (self.reader.global_index, self.reader.region_index):
            ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
            if ivf is not None:
                ivf.nprobe = self.config.search.nprobe
            hnsw = getattr(index, "hnsw", None)
            if hnsw is not None:
                hnsw.efSearch = self.config.search.ef_search

    @property
    def n_images(self) -> int:
        return self.reader.n_images

    def search(
        self,
        text: str = "",
        k: int | None = None,
        alpha: float | None = None,
        global_only: bool = False,
        image: Path | None = None,
        negatives: tuple[str, ...] = (),
        min_score: float | None = None,
        settings: SearchConfig | None = None,
    ) -> SearchResponse:
        """Rank the indexed images for a text (and/or an image) query."""
        s = settings or self.config.search
        k = s.k if k is None else k
        alpha = s.alpha if alpha is None else alpha
        min_score = s.min_score if min_score is None else min_score
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        if not 0.0 <= alpha <= 1.0:
            raise QueryError(f"alpha must lie in [0, 1], got {alpha}")
        warnings: list[str] = []
        text = text or ""
        if len(text) > MAX_QUERY_CHARS:
            warnings.append(f"query truncated to its first {MAX_QUERY_CHARS} characters")
            text = text[:MAX_QUERY_CHARS]
        if not text.strip() and image is None:
            raise QueryError("empty query; give some text or --image PATH")
        queries = ([text] if text.strip() else []) + [n for n in negatives if n.strip()]
        encodings = self.encoder.encode_queries(queries) if queries else []
        positive = encodings[0] if text.strip() else None
        negative = encodings[1:] if text.strip() else encodings
        vectors = []
        if positive is not None:
            vectors.append(positive.global_vector.numpy())
            if positive.parsed.truncated:
                warnings.append("query longer than the model's context; its tail was ignored")
        if image is not None:
            vectors.append(self._image_vector(image))
        g = np.mean(vectors, axis=0)
        g = (g / max(float(np.linalg.norm(g)), 1e-12)).astype(np.float32)
        lexeme_texts = [] if positive is None or global_only else positive.parsed.lexeme_texts
        lexeme_vectors = (
            np.zeros((0, len(g)), np.float32)
            if not lexeme_texts
            else positive.lexeme_vectors.numpy().astype(np.float32)
        )
        candidates = self._candidates(g, lexeme_vectors, k, s)
        if self.n_images == 0 or len(candidates) == 0:
            return SearchResponse(text, lexeme_texts, [], warnings)
        global_scores = self.reader.global_vectors[candidates].astype(np.float32) @ g
        lexeme_scores, lexeme_rows = self.best_regions(candidates, lexeme_vectors, s.box_margin)
        fused = fuse(global_scores, lexeme_scores, alpha)
        if negative:
            neg_global = np.stack(
                [self.reader.global_vectors[candidates].astype(np.float32) @ n.global_vector.numpy() for n in negative],
                1,
            )
            neg_vectors = np.stack(
                [
                    n.lexeme_vectors.numpy().mean(0) if len(n.lexeme_vectors) else n.global_vector.numpy()
                    for n in negative
                ]
            )
            neg_vectors /= np.linalg.norm(neg_vectors, axis=1, keepdims=True)
            neg_region, _ = self.best_regions(candidates, neg_vectors.astype(np.float32))
            fused = fused - penalty(neg_global, neg_region, alpha)
        order = np.lexsort((candidates, -fused))  # best first; ties by image id
        results = []
        for position in order:
            if min_score is not None and fused[position] < min_score:
                continue
            image_id = int(candidates[position])
            matches = tuple(
                LexemeMatch(
                    lexeme_texts[j], float(lexeme_scores[position, j]), self._box(int(lexeme_rows[position, j]))
                )
                for j in range(len(lexeme_texts))
            )
            path = str(self.reader.images["path"][image_id])
            results.append(
                Result(
                    rank=len(results) + 1,
                    image_id=image_id,
                    path=path,
                    absolute=self.photos_root / path,
                    score=float(fused[position]),
                    global_score=float(global_scores[position]),
                    lexemes=matches,
                    width=int(self.reader.images["width"][image_id]),
                    height=int(self.reader.images["height"][image_id]),
                )
            )
            if len(results) == k:
                break
        return SearchResponse(text, lexeme_texts, results, warnings)

    def _candidates(self, g: np.ndarray, lexemes: np.ndarray, k: int, s: SearchConfig) -> np.ndarray:
        from harmosearch.store import search_vectors

        found: list[np.ndarray] = []
        if self.reader.n_images:
            wanted = min(self.reader.n_images, max(k, s.global_candidates))
            _, ids = search_vectors(self.reader.global_index, g[None], wanted)
            found.append(ids[0][ids[0] >= 0])
        if len(lexemes) and self.reader.n_regions:
            # One batched call for all lexemes; FAISS pads with -1 when asked for more than it holds.
            _, ids = search_vectors(self.reader.region_index, lexemes, min(self.reader.n_regions, s.region_candidates))
            rows = ids[ids >= 0]
            found.append(np.asarray(self.reader.regions["image_id"])[rows])
        if not found:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(found).astype(np.int64))

    def best_regions(
        self, candidates: np.ndarray, lexemes: np.ndarray, box_margin: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each candidate image and lexeme: the best region score, and the row of the region
        whose box to show (see choose_box)."""
        scores = np.full((len(candidates), len(lexemes)), -1.0, dtype=np.float32)
        rows = np.full((len(candidates), len(lexemes)), -1, dtype=np.int64)
        if len(lexemes) == 0:
            return scores, rows
        starts = self.reader.region_start
        for i, image_id in enumerate(candidates):
            lo, hi = int(starts[image_id]), int(starts[image_id + 1])
            if hi == lo:
                continue
            sims = self.reader.region_vectors[lo:hi].astype(np.float32) @ lexemes.T  # [regions, lexemes]
            scores[i] = sims.max(axis=0)
            r = self.reader.regions
            areas = (r["x1"][lo:hi] - r["x0"][lo:hi]) * (r["y1"][lo:hi] - r["y0"][lo:hi])
            rows[i] = [lo + choose_box(sims[:, j], areas, box_margin) for j in range(len(lexemes))]
        return scores, rows

    def _box(self, row: int) -> tuple[float, float, float, float]:
        if row < 0:
            return (0.0, 0.0, 0.0, 0.0)
        r = self.reader.regions
        return (float(r["x0"][row]), float(r["y0"][row]), float(r["x1"][row]), float(r["y1"][row]))

    def _image_vector(self, path: Path) -> np.ndarray:
        from harmosearch.indexing import open_image

        if not Path(path).is_file():
            raise QueryError(f"query image not found: {path}")
        try:
            image = open_image(Path(path))
        except Exception as exc:
            raise QueryError(f"cannot use {path} as a query: {exc}") from None
        global_vector, _ = self.encoder.encode_pixels(self.encoder.image_tensor(image)[None])
        return global_vector[0].numpy()

    # Searches by an indexed image and by a box drawn on one, and the files behind results: the
    # library side of `harmosearch serve` (which adds nothing but HTTP).

    def image_file(self, image_id: int) -> Path:
        """The original file of an indexed image. Refused when its real path (symlinks and '..'
        resolved) leaves the photo folder: a server must never hand out other files."""
        from harmosearch.errors import DataError

        self._check_image(image_id)
        relative = str(self.reader.images["path"][image_id])
        root = self.photos_root.resolve()
        try:
            real = (self.photos_root / relative).resolve(strict=True)
        except (OSError, RuntimeError):
            raise DataError(f"image {image_id} ({relative}) is no longer in {root}; re-run harmosearch index") from None
        if not real.is_relative_to(root):
            raise QueryError(f"image {image_id} ({relative}) leads outside the photo folder {root}; it is not served")
        if not real.is_file():
            raise DataError(f"image {image_id} ({relative}) is not a file; re-run harmosearch index")
        return real

    def info(self) -> dict[str, Any]:
        """What the index holds, as `harmosearch info` shows it: counts, model, FAISS types,
        generation, the resolved configuration and the size on disk."""
        from harmosearch.store import size_on_disk

        manifest = self.reader.manifest
        return {
            "path": str(self.path),
            "photos_root": str(self.photos_root),
            "images": self.n_images,
            "regions": self.reader.n_regions,
            "model": manifest["encoder"],
            "index_types": manifest["index_types"],
            "generation": manifest["generation"],
            "created": manifest["created"],
            "updated": manifest["updated"],
            "size_bytes": size_on_disk(self.path),
            "config": self.config.to_json(),
        }

    def similar(
        self,
        image_id: int,
        k: int | None = None,
        min_score: float | None = None,
        settings: SearchConfig | None = None,
    ) -> SearchResponse:
        """More like an indexed image: the other images ranked by global similarity to its stored
        vector, as `search(image=...)` ranks a query image (without encoding it again)."""
        s = settings or self.config.search
        k, _, min_score = self._options(k, None, min_score, s)
        self._check_image(image_id)
        g = self.reader.global_vectors[image_id].astype(np.float32)
        g /= max(float(np.linalg.norm(g)), 1e-12)
        candidates = self._candidates(g, np.zeros((0, len(g)), np.float32), k + 1, s)
        candidates = candidates[candidates != image_id]
        scores = self.reader.global_vectors[candidates].astype(np.float32) @ g
        empty = np.zeros((len(candidates), 0))
        results = self._ranked(candidates, scores, scores, [], empty, empty.astype(np.int64), k, min_score)
        return SearchResponse(str(self.reader.images["path"][image_id]), [], results)

    def region_vector(self, image_id: int, box: tuple[float, float, float, float]) -> np.ndarray:
        """The vector of a box (pixels of the original image) on an indexed image, pooled from its
        dense map as indexing pools proposals: the image is encoded again, once."""
        import torch

        from harmosearch.indexing import decode_image
        from harmosearch.regions import pool, to_grid

        x0, y0, x1, y1 = self._clip_box(image_id, box)
        # Decoded as indexing decodes it: JPEGs at the smallest scale that covers the model's input.
        image, width, height = decode_image(self.image_file(image_id), self.encoder.image_size)
        _, dense = self.encoder.encode_pixels(self.encoder.image_tensor(image)[None])
        grid_box = to_grid(
            torch.tensor([[x0, y0, x1, y1]]),
            width,
            height,
            self.encoder.grid,
            self.encoder.image_size,
            self.encoder.config.resize,
        )
        return pool(dense, [grid_box])[0][0].numpy().astype(np.float32)

    def search_region(
        self,
        image_id: int,
        box: tuple[float, float, float, float],
        k: int | None = None,
        alpha: float = 0.0,
        min_score: float | None = None,
        settings: SearchConfig | None = None,
    ) -> SearchResponse:
        """A box drawn on an indexed image as the query ("more of this umbrella"): the other images
        ranked by their best region's similarity to the box's vector, each with that region's box.
        alpha > 0 mixes in the images' global similarity to it, as `fuse` does for a lexeme."""
        s = settings or self.config.search
        k, alpha, min_score = self._options(k, alpha, min_score, s)
        query = self.region_vector(image_id, box)
        candidates = self._candidates(query, query[None], k + 1, s)
        candidates = candidates[candidates != image_id]
        global_scores = self.reader.global_vectors[candidates].astype(np.float32) @ query
        region_scores, rows = self.best_regions(candidates, query[None], s.box_margin)
        fused = fuse(global_scores, region_scores, alpha)
        results = self._ranked(candidates, fused, global_scores, ["region"], region_scores, rows, k, min_score)
        x0, y0, x1, y1 = self._clip_box(image_id, box)
        where = f"region ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) of {self.reader.images['path'][image_id]}"
        return SearchResponse(where, ["region"], results)

    def _check_image(self, image_id: int) -> None:
        if not 0 <= image_id < self.n_images:
            raise QueryError(f"no image {image_id} in {self.path}: image ids run from 0 to {self.n_images - 1}")

    def _clip_box(self, image_id: int, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """The box clipped to the image; an empty or malformed one is refused."""
        self._check_image(image_id)
        values = np.asarray(box, dtype=np.float64).reshape(-1)
        if len(values) != 4 or not np.all(np.isfinite(values)):
            raise QueryError(f"a box is four finite numbers x0, y0, x1, y1, got {box!r}")
        width, height = int(self.reader.images["width"][image_id]), int(self.reader.images["height"][image_id])
        x0, x1 = np.clip(values[[0, 2]], 0, width)
        y0, y1 = np.clip(values[[1, 3]], 0, height)
        if x1 <= x0 or y1 <= y0:
            raise QueryError(f"box {list(values)} holds no pixels of image {image_id} ({width}x{height})")
        return float(x0), float(y0), float(x1), float(y1)

    def _options(
        self, k: int | None, alpha: float | None, min_score: float | None, s: SearchConfig
    ) -> tuple[int, float, float | None]:
        k = s.k if k is None else k
        alpha = s.alpha if alpha is None else alpha
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        if not 0.0 <= alpha <= 1.0:
            raise QueryError(f"alpha must lie in [0, 1], got {alpha}")
        return k, alpha, s.min_score if min_score is None else min_score

    def _ranked(
        self,
        candidates: np.ndarray,
        fused: np.ndarray,
        global_scores: np.ndarray,
        texts: list[str],
        lexeme_scores: np.ndarray,
        lexeme_rows: np.ndarray,
        k: int,
        min_score: float | None,
    ) -> list[Result]:
        """The best k candidates (ties by image id) as Results, the box of each text's region."""
        results: list[Result] = []
        for position in np.lexsort((candidates, -fused)):
            if min_score is not None and fused[position] < min_score:
                continue
            image_id = int(candidates[position])
            path = str(self.reader.images["path"][image_id])
            matches = tuple(
                LexemeMatch(text, float(lexeme_scores[position, j]), self._box(int(lexeme_rows[position, j])))
                for j, text in enumerate(texts)
            )
            results.append(
                Result(
                    rank=len(results) + 1,
                    image_id=image_id,
                    path=path,
                    absolute=self.photos_root / path,
                    score=float(fused[position]),
                    global_score=float(global_scores[position]),
                    lexemes=matches,
                    width=int(self.reader.images["width"][image_id]),
                    height=int(self.reader.images["height"][image_id]),
                )
            )
            if len(results) == k:
                break
        return results


def open_index(path: str | os.PathLike[str] | None = None, config: Config | None = None, **kwargs: Any) -> Index:
    """Open an index for searching; without a path, the most recently updated one."""
    from harmosearch.indexing import default_index_root

    return Index(Path(path) if path is not None else latest_index(default_index_root()), config, **kwargs)
