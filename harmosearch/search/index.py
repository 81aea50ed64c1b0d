"""`Index`: an open index and the encoder that built it, wiring the query's stages.

    query -> filters -> retrieve -> score -> fuse -> rank -> rerank -> results

Each stage is a module of this package and a function of explicit inputs; the facade only opens
the index, keeps what queries share (the region tables, the embedded vocabularies, the FAISS
copies on GPUs) and hands each stage's output to the next.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harmosearch.config import Config, SearchConfig, load_config
from harmosearch.errors import IndexStoreError
from harmosearch.model.device import one_thread_per_pool
from harmosearch.regions.trust import stored_trust, weighed
from harmosearch.search import pictures
from harmosearch.search.calibration import in_cosines, stored_calibration
from harmosearch.search.contrast import Vocabularies
from harmosearch.search.count import presence_for
from harmosearch.search.filters import Filters, allowed_images
from harmosearch.search.fuse import fuse, fused_scores
from harmosearch.search.query import (
    Query,
    encode_query,
    query_settings,
    require_query,
    text_settings,
    unit,
    vector_query,
)
from harmosearch.search.rank import confidence, rank
from harmosearch.search.rerank import Sight, rerank, reranks
from harmosearch.search.results import SearchResponse, build_results, by_date
from harmosearch.search.retrieve import Searchable, candidates
from harmosearch.search.score import PenalisedTable, RegionTable, score_candidates

# What a search takes from the caller's configuration; the rest (the encoder and region
# settings the vectors were made with) comes from the index.
CALLER_SECTIONS = ("search", "paths", "synth", "train")


class Index:
    """An open index plus the encoder that built it: the Python API behind `harmosearch query`.

    index = harmosearch.open_index("indexes/photos")
    for result in index.search("red umbrella near bench", k=5).results:
        print(result.path, result.score, result.lexemes)
    """

    def __init__(
        self, path: Path, config: Config | None = None, encoder: Any = None, device: str | None = None
    ) -> None:
        from harmosearch.model.encoder import load_encoder
        from harmosearch.store import IndexReader

        self.path = Path(path)
        self.reader = IndexReader(self.path)
        manifest = self.reader.manifest
        self.config = search_config(manifest["config"], config or load_config())
        self.encoder = encoder or load_encoder(self.config, device=device)
        _check_model(self.path, manifest["encoder"], self.encoder.identity)
        self.photos_root = Path(manifest["photos_root"])
        r = self.reader.regions
        boxes = np.stack([r[c] for c in ("x0", "y0", "x1", "y1")], axis=1).astype(np.float32).reshape(-1, 4)
        scales = np.asarray(r["scale"], dtype=np.float32)
        self.calibration = stored_calibration(manifest)  # also the unit of the ranking's amounts (in_cosines)
        # Plain region scores (boxes, negatives, box queries) and, for ranking, the same table with
        # the window penalty (the configured one is kept; a query may ask for another).
        self.regions = RegionTable(self.reader.region_vectors, boxes, self.reader.region_start, scales)
        penalty = in_cosines(self.config.search, self.calibration).window_penalty
        self.penalised = PenalisedTable(self.regions, penalty)
        self.vocabularies = Vocabularies(self.encoder, self.config.paths.cache_dir)
        self.trust = stored_trust(manifest)  # None: built before trust was measured (fully trusted)
        self._paths = np.asarray(self.reader.images["path"], dtype=object)
        self.searchable = Searchable.tuned(self.reader, self.config.search)

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
        min_score: float | Literal["auto"] | None = None,
        settings: SearchConfig | None = None,
        relation_weight: float | None = None,
        relations: bool = True,
        after: str | date | None = None,
        before: str | date | None = None,
        under: Sequence[str | os.PathLike[str]] = (),
        sort: Literal["score", "date"] = "score",
        refine: bool | None = None,
    ) -> SearchResponse:
        """Rank the indexed images for a text (and/or an image) query. alpha weighs the global
        score for any query (default: settings.alpha, settings.phrase_alpha for a query of one
        lexeme; search/fuse.py). relations=False (or relation_weight 0) ranks the query's lexemes
        independently. refine (default: settings.refine) looks at the best results again
        (search/rerank.py). after / before ("2024", "2024-07", "2024-07-15", a date): capture time
        at or after the start of `after`, before the start of `before`, on the photos' own
        clocks; under: folders relative to the photo root (or absolute paths inside it).
        sort="date" puts the k best newest first. min_score="auto" keeps only results the
        index's calibration finds confident (text queries only)."""
        require_query(text, image)
        # The filters first: a bad date or folder is named before any mismatch of the options.
        allowed, filtered = allowed_images(self.reader.images, self.photos_root, Filters(after, before, under))
        weight = 0.0 if not relations else relation_weight
        s = query_settings(settings or self.config.search, k, alpha, min_score, weight, refine)
        s = weighed(text_settings(s, min_score, image is not None, self.calibration is not None, sort), self.trust)
        s = in_cosines(s, self.calibration)
        query = encode_query(self.encoder, text, image, negatives, not global_only, s.relation_weight > 0)
        calibrated = self.calibration is not None and image is None
        warnings = [*query.warnings, *self._warnings(image is not None), *filtered]
        contrast = self.vocabularies.contrast(query.embedded_texts, query.lexeme_vectors, s.vocabulary, s.contrast)
        with one_thread_per_pool():  # the query's numeric work is small (model/device.py)
            found = candidates(self.searchable, query, s, allowed)
            if len(found) == 0:
                return SearchResponse(query.text, query.lexeme_texts, [], warnings, calibrated)
            rule = presence_for(self.calibration, query, s, warnings)
            ranked = self.penalised.at(s.window_penalty)
            scored = score_candidates(self.regions, ranked, self.reader.global_vectors, found, query, s, contrast, rule)
            confident = confidence(self.calibration, scored, s) if calibrated else None
            # Without the photo folder (warned about) there is nothing to look at again.
            again = reranks(query, s, self.config.regions.detail) and self.photos_root.is_dir()
            # Reordered results meet a numeric min_score with their reordered scores (in rerank).
            later = again and s.rerank > 0 and isinstance(s.min_score, float)
            ranking = rank(scored, fused_scores(scored, s), self._paths, None if later else s.min_score, confident)
        if again:
            ranking, looked = rerank(ranking, scored, query, s, self._sight())
            warnings += looked
        results = self._results(scored, ranking.head(s.k), query)
        if sort == "date":
            results = by_date(results, self.reader.images["taken_local"])
        return SearchResponse(query.text, query.lexeme_texts, results, warnings, calibrated)

    def similar(
        self, image_id: int, k: int | None = None, min_score: float | None = None, settings: SearchConfig | None = None
    ) -> SearchResponse:
        """More like an indexed image: the other images ranked by global similarity to its stored
        vector, as `search(image=...)` ranks a query image (without encoding it again)."""
        s = in_cosines(query_settings(settings or self.config.search, k, None, min_score), self.calibration)
        self._check_image(image_id)
        query = vector_query(unit(self.reader.global_vectors[image_id].astype(np.float32)))
        return self._by_vector(query, image_id, s, str(self.reader.images["path"][image_id]))

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
        s = replace(query_settings(settings or self.config.search, k, alpha, min_score), relation_weight=0.0)
        s = in_cosines(s, self.calibration)
        x0, y0, x1, y1 = clipped = self._clip_box(image_id, box)
        query = vector_query(self.region_vector(image_id, clipped), lexeme="region")
        where = f"region ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) of {self.reader.images['path'][image_id]}"
        return self._by_vector(query, image_id, s, where)

    def _by_vector(self, query: Query, image_id: int, s: SearchConfig, where: str) -> SearchResponse:
        """The other images ranked for a query made of a stored or pooled vector, by the plain
        region table; fused at s.alpha whatever the query's lexeme count."""
        with one_thread_per_pool():
            found = candidates(self.searchable, query, replace(s, k=s.k + 1))
            scored = score_candidates(self.regions, self.regions, self.reader.global_vectors, found, query, s)
            fused = fuse(scored.global_scores, scored.match.scores, s.alpha)
        results = self._results(
            scored, rank(scored, fused, self._paths, s.min_score, exclude=image_id).head(s.k), query
        )
        return SearchResponse(where, list(query.lexeme_texts), results)

    def _results(self, scored: Any, ranking: Any, query: Query) -> list[Any]:
        texts, relations = query.lexeme_texts, query.relations
        return build_results(scored, ranking, texts, relations, self.reader.images, self.regions, self.photos_root)

    def _warnings(self, has_image: bool) -> list[str]:
        warnings = []
        if not self.photos_root.is_dir():
            warnings.append(
                f"the photo folder {self.photos_root} no longer exists; if it moved, run: "
                f"harmosearch index NEW_PLACE --index {self.path}"
            )
        if self.calibration is not None and has_image:
            warnings.append("queries with an image are not calibrated: no result is marked weak")
        return warnings

    def _sight(self) -> Sight:
        name_of = lambda image_id: str(self._paths[image_id])  # noqa: E731
        return Sight(self.encoder, self.picture, name_of, self.regions, self.config.regions.detail)

    # The files behind results and box queries: the library side of `harmosearch serve`.

    def image_file(self, image_id: int) -> Path:
        """The original file of an indexed image, never one outside the photo folder."""
        self._check_image(image_id)
        return pictures.image_file(self.reader.images, self.photos_root, image_id)

    def picture(self, image_id: int, min_side: int | None = None) -> tuple[Any, int, int]:
        """An indexed image's pixels and full size: the still, or the video frame of this row
        (decoded at reduced scale where the format allows, keeping at least min_side pixels)."""
        return pictures.decode(self.image_file(image_id), float(self.reader.images["frame_time"][image_id]), min_side)

    def region_vector(self, image_id: int, box: tuple[float, float, float, float]) -> np.ndarray:
        """The vector of a box (pixels of the original image) on an indexed image, pooled from its
        dense map as indexing pools proposals: the image is encoded again, once."""
        clipped = self._clip_box(image_id, box)
        decode = lambda side: self.picture(image_id, side)  # noqa: E731
        return pictures.box_vector(self.encoder, self.config.regions.detail, decode, clipped)

    def info(self) -> dict[str, Any]:
        """What the index holds, as `harmosearch info` shows it."""
        from harmosearch.store import size_on_disk

        m = self.reader.manifest
        return {
            "path": str(self.path),
            "photos_root": str(self.photos_root),
            "images": self.n_images,
            "regions": self.reader.n_regions,
            "model": m["encoder"],
            **{key: m[key] for key in ("index_types", "generation", "created", "updated")},
            "size_bytes": size_on_disk(self.path),
            "config": self.config.to_json(),
        }

    def _check_image(self, image_id: int) -> None:
        pictures.check_image(image_id, self.n_images)

    def _clip_box(self, image_id: int, box: Any) -> tuple[float, float, float, float]:
        self._check_image(image_id)
        return pictures.clip_box(self.reader.images, image_id, box)


def search_config(stored: dict[str, Any], caller: Config) -> Config:
    """The settings of a search: the index's encoder and region settings with the caller's
    CALLER_SECTIONS, and the caller's precision and runtime: queries are encoded the way this
    machine does best, whatever made the index's vectors."""
    from harmosearch.config import config_from_dict

    index = config_from_dict(stored)
    here = {key: getattr(caller.encoder, key) for key in ("precision", "runtime")}
    return replace(
        index, encoder=replace(index.encoder, **here), **{name: getattr(caller, name) for name in CALLER_SECTIONS}
    )


def _check_model(path: Path, stored: dict[str, Any], identity: Any) -> None:
    """Refuse an encoder whose vectors are not comparable with the index's."""
    from harmosearch.model.encoder import EncoderIdentity

    built_with = EncoderIdentity.from_dict(stored)
    differs = built_with.mismatch(identity)
    if differs:
        raise IndexStoreError(
            f"index {path} was built with model {built_with.spec!r} and cannot be searched with "
            f"{identity.spec!r} ({differs}); query with --model {built_with.spec} or rebuild the index"
        )


def open_index(path: str | os.PathLike[str] | None = None, config: Config | None = None, **kwargs: Any) -> Index:
    """Open an index for searching; without a path, the most recently updated one under
    config.paths.indexes."""
    from harmosearch.indexes import latest_index

    config = config or load_config()
    return Index(Path(path) if path is not None else latest_index(config.paths.indexes_dir), config, **kwargs)
