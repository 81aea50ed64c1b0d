"""Searching an index: lexemes against regions, the whole query against images, then fusion.

Candidates come from both FAISS indexes (the top regions of every lexeme, searched in one
batched call, and the top images of the global query); each candidate is then rescored
exactly from the stored vectors, so an approximate index can miss candidates but never
distorts their scores. See `fusion` for the formula and `scoring` for the region step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.config import Config, SearchConfig, load_config
from harmosearch.errors import ConfigError, IndexStoreError, QueryError
from harmosearch.fusion import fuse, penalty
from harmosearch.scoring import RegionTable, best_regions

MAX_QUERY_CHARS = 1000
# What a search takes from the caller's configuration; the rest (the encoder and region
# settings the vectors were made with) comes from the index.
CALLER_SECTIONS = ("search", "paths", "synth", "train")


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


@dataclass
class _Query:
    """A query in vectors: the global vector, each lexeme's vector, and each --not phrase's."""

    text: str
    global_vector: np.ndarray  # [D]
    lexeme_texts: list[str]
    lexeme_vectors: np.ndarray  # [L, D]
    negative_global: np.ndarray  # [N, D]
    negative_regions: np.ndarray  # [N, D]
    warnings: list[str]


def latest_index(root: Path) -> Path:
    """The most recently updated index under `root` (the default for `query` without --index)."""
    from harmosearch.store import MANIFEST

    root = Path(root)
    manifests = sorted(root.glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
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
        from harmosearch.encoder import EncoderIdentity, load_encoder
        from harmosearch.store import IndexReader

        self.path = Path(path)
        self.reader = IndexReader(self.path)
        manifest = self.reader.manifest
        caller = config or load_config()
        self.config = replace(
            config_from_dict(manifest["config"]), **{name: getattr(caller, name) for name in CALLER_SECTIONS}
        )
        self.encoder = encoder or load_encoder(self.config, device=device)
        built_with = EncoderIdentity.from_dict(manifest["encoder"])
        differs = built_with.mismatch(self.encoder.identity)
        if differs:
            raise IndexStoreError(
                f"index {self.path} was built with model {built_with.spec!r} and cannot be searched with "
                f"{self.encoder.identity.spec!r} ({differs}); query with --model {built_with.spec} or rebuild the index"
            )
        self.photos_root = Path(manifest["photos_root"])
        r = self.reader.regions
        boxes = np.stack([r[c] for c in ("x0", "y0", "x1", "y1")], axis=1).astype(np.float32).reshape(-1, 4)
        self.regions = RegionTable(self.reader.region_vectors, boxes, self.reader.region_start)
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
        s = _settings(settings or self.config.search, k, alpha, min_score)
        query = self._encode(text, image, negatives, global_only)
        if not self.photos_root.is_dir():
            query.warnings.append(
                f"the photo folder {self.photos_root} no longer exists; if it moved, run: "
                f"harmosearch index NEW_PLACE --index {self.path}"
            )
        candidates = self._candidates(query, s)
        if len(candidates) == 0:
            return SearchResponse(query.text, query.lexeme_texts, [], query.warnings)
        global_scores = self.reader.global_vectors[candidates].astype(np.float32) @ query.global_vector
        lexeme_scores, lexeme_rows = best_regions(self.regions, candidates, query.lexeme_vectors, s.box_margin)
        fused = fuse(global_scores, lexeme_scores, s.alpha) - self._penalty(candidates, query, s.alpha)
        order = np.lexsort((candidates, -fused))  # best first; ties by image id
        if s.min_score is not None:
            order = order[fused[order].astype(np.float64) >= s.min_score]  # a huge bound overflows float32
        results = [
            self._result(
                rank,
                int(candidates[p]),
                float(fused[p]),
                float(global_scores[p]),
                query,
                lexeme_scores[p],
                lexeme_rows[p],
            )
            for rank, p in enumerate(order[: s.k], start=1)
        ]
        return SearchResponse(query.text, query.lexeme_texts, results, query.warnings)

    def _encode(self, text: str, image: Path | None, negatives: tuple[str, ...], global_only: bool) -> _Query:
        """The query text (cut to MAX_QUERY_CHARS), the --not phrases and the query image, in vectors."""
        warnings: list[str] = []
        text = text or ""
        if len(text) > MAX_QUERY_CHARS:
            warnings.append(f"query truncated to its first {MAX_QUERY_CHARS} characters")
            text = text[:MAX_QUERY_CHARS]
        if not text.strip() and image is None:
            raise QueryError("empty query; give some text or --image PATH")
        for phrase in (text, *negatives):
            if not _is_utf8(phrase):
                raise QueryError(f"{phrase!r} is not valid UTF-8 text; check the terminal's encoding (LANG)")
        has_text = bool(text.strip())
        negatives = tuple(n for n in negatives if n.strip())
        encodings = self.encoder.encode_queries(([text] if has_text else []) + list(negatives))
        positive, negative = (encodings[0], encodings[1:]) if has_text else (None, encodings)
        vectors = []
        if positive is not None:
            vectors.append(positive.global_vector.numpy())
            if positive.parsed.truncated:
                warnings.append("query longer than the model's context; its tail was ignored")
        if image is not None:
            vectors.append(self._image_vector(image))
        g = _unit(np.mean(vectors, axis=0))
        dim = len(g)
        use_lexemes = positive is not None and not global_only and len(positive.parsed.lexemes) > 0
        lexeme_texts = positive.parsed.lexeme_texts if use_lexemes else []
        lexemes = positive.lexeme_vectors.numpy().astype(np.float32) if use_lexemes else np.zeros((0, dim), np.float32)
        # A --not phrase's region vector: the mean of its lexemes, or its global vector without any.
        neg_regions = [
            n.lexeme_vectors.numpy().mean(0) if len(n.lexeme_vectors) else n.global_vector.numpy() for n in negative
        ]
        return _Query(
            text,
            g,
            lexeme_texts,
            lexemes,
            np.stack([n.global_vector.numpy() for n in negative]).astype(np.float32)
            if negative
            else np.zeros((0, dim)),
            np.stack([_unit(v) for v in neg_regions]) if negative else np.zeros((0, dim), np.float32),
            warnings,
        )

    def _candidates(self, query: _Query, s: SearchConfig) -> np.ndarray:
        """Images among the top global matches or holding one of each lexeme's top regions."""
        from harmosearch.store import search_vectors

        found: list[np.ndarray] = []
        if self.reader.n_images:
            wanted = min(self.reader.n_images, max(s.k, s.global_candidates))
            _, ids = search_vectors(self.reader.global_index, query.global_vector[None], wanted)
            found.append(ids[0][ids[0] >= 0])
        if len(query.lexeme_vectors) and self.reader.n_regions:
            # One batched call for all lexemes; FAISS pads with -1 when asked for more than it holds.
            wanted = min(self.reader.n_regions, s.region_candidates)
            _, ids = search_vectors(self.reader.region_index, query.lexeme_vectors, wanted)
            found.append(np.asarray(self.reader.regions["image_id"])[ids[ids >= 0]])
        if not found:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(found).astype(np.int64))

    def _penalty(self, candidates: np.ndarray, query: _Query, alpha: float) -> np.ndarray | float:
        if len(query.negative_global) == 0:
            return 0.0
        neg_global = self.reader.global_vectors[candidates].astype(np.float32) @ query.negative_global.T
        neg_region, _ = best_regions(self.regions, candidates, query.negative_regions, 0.0)
        return penalty(neg_global, neg_region, alpha)

    def _result(
        self,
        rank: int,
        image_id: int,
        score: float,
        global_score: float,
        query: _Query,
        lexeme_scores: np.ndarray,
        lexeme_rows: np.ndarray,
    ) -> Result:
        path = str(self.reader.images["path"][image_id])
        matches = tuple(
            LexemeMatch(text, float(lexeme_scores[j]), self._box(int(lexeme_rows[j])))
            for j, text in enumerate(query.lexeme_texts)
        )
        return Result(
            rank=rank,
            image_id=image_id,
            path=path,
            absolute=self.photos_root / path,
            score=score,
            global_score=global_score,
            lexemes=matches,
            width=int(self.reader.images["width"][image_id]),
            height=int(self.reader.images["height"][image_id]),
        )

    def _box(self, row: int) -> tuple[float, float, float, float]:
        if row < 0:
            return (0.0, 0.0, 0.0, 0.0)
        x0, y0, x1, y1 = (float(v) for v in self.regions.boxes[row])
        return (x0, y0, x1, y1)

    def _image_vector(self, path: Path) -> np.ndarray:
        from harmosearch.media.decode import open_image

        if not Path(path).is_file():
            raise QueryError(f"query image not found: {path}")
        try:
            image = open_image(Path(path))
        except Exception as exc:
            raise QueryError(f"cannot use {path} as a query: {exc}") from None
        global_vector, _ = self.encoder.encode_pixels(self.encoder.image_tensor(image)[None])
        return global_vector[0].numpy()


def _settings(base: SearchConfig, k: int | None, alpha: float | None, min_score: float | None) -> SearchConfig:
    """The search settings with the per-call options on top, checked like the config file."""
    try:
        return replace(
            base,
            k=base.k if k is None else k,
            alpha=base.alpha if alpha is None else alpha,
            min_score=base.min_score if min_score is None else min_score,
        )
    except ConfigError as exc:
        raise QueryError(str(exc).removeprefix("search.")) from None


def _is_utf8(text: str) -> bool:
    """False for text holding undecodable bytes (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def open_index(path: str | os.PathLike[str] | None = None, config: Config | None = None, **kwargs: Any) -> Index:
    """Open an index for searching; without a path, the most recently updated one under
    config.paths.indexes."""
    config = config or load_config()
    return Index(Path(path) if path is not None else latest_index(config.paths.indexes_dir), config, **kwargs)
