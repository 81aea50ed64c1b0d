"""Searching an index: lexemes against regions, the whole query against images, then fusion.

Candidates come from both FAISS indexes (the top regions of every lexeme, searched in one
batched call, and the top images of the global query); each candidate is then rescored
exactly from the stored vectors, so an approximate index can miss candidates but never
distorts their scores. See `fusion` for the formula and `scoring` for the region step.

Filters (capture date, folder) apply before ranking: FAISS searches only the allowed rows
through an ID selector, and a small allowed set (at most EXACT_SUBSET_REGIONS regions) is
scored whole, so k results come back whenever k files pass the filters. A video's frames are
rows of their own; a video appears once among the results, at its best frame. Text queries are
measured against the index's calibration (`calibration`): results that score like the best
match of unrelated queries are marked as not confident.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from harmosearch.config import Config, SearchConfig, load_config
from harmosearch.errors import ConfigError, IndexStoreError, QueryError
from harmosearch.indexes import latest_index
from harmosearch.search.contrast import Contrast, Vocabulary, load_vocabulary
from harmosearch.search.fuse import fuse, penalty
from harmosearch.search.score import RegionMatch, RegionTable, best_regions, match_regions, related_lexemes

MAX_QUERY_CHARS = 1000
KEPT_VOCABULARIES = 8  # embedded vocabularies an index keeps (per setting of search.vocabulary)
# A filtered search scores every allowed image exactly when they hold at most this many regions
# (about the work of an unfiltered search's candidates); above it, FAISS searches the allowed rows.
EXACT_SUBSET_REGIONS = 50_000
SORTS = ("score", "date")
# What a search takes from the caller's configuration; the rest (the encoder and region
# settings the vectors were made with) comes from the index.
CALLER_SECTIONS = ("search", "paths", "synth", "train")


@dataclass(frozen=True)
class LexemeMatch:
    text: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the original image


@dataclass(frozen=True)
class RelationMatch:
    subject: str  # the lexemes' texts
    relation: str  # canonical name, e.g. "left of"
    object: str
    negated: bool
    score: float  # the geometric score in [0, 1] of the boxes shown for subject and object

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "relation": self.relation,
            "object": self.object,
            "negated": self.negated,
            "score": round(self.score, 6),
        }


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
    relations: tuple[RelationMatch, ...] = ()
    frame_time: float | None = None  # seconds into a video: the frame that matched; None for a still
    taken: str | None = None  # capture time, ISO 8601 (media.metadata)
    confident: bool | None = None  # scores above the index's calibration; None when not calibrated

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "path": self.path,
            "frame_time": None if self.frame_time is None else round(self.frame_time, 3),
            "score": round(self.score, 6),
            "global_score": round(self.global_score, 6),
            "confident": self.confident,
            "taken": self.taken,
            "lexemes": [
                {"text": m.text, "score": round(m.score, 6), "box": [round(v, 1) for v in m.box]} for m in self.lexemes
            ],
            "relations": [r.to_dict() for r in self.relations],
        }


@dataclass
class SearchResponse:
    query: str
    lexemes: list[str]
    results: list[Result]
    warnings: list[str] = field(default_factory=list)
    calibrated: bool = False  # results were measured against the index's calibration

    @property
    def confident_match(self) -> bool | None:
        """Whether any result is confident; None when the query was not calibrated."""
        return any(r.confident for r in self.results) if self.calibrated else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "lexemes": self.lexemes,
            "confident_match": self.confident_match,
            "results": [r.to_dict() for r in self.results],
        }


@dataclass
class _Query:
    """A query in vectors: the global vector, each lexeme's vector, its scored relations, and
    each --not phrase's vectors."""

    text: str
    global_vector: np.ndarray  # [D]
    lexeme_texts: list[str]
    lexeme_vectors: np.ndarray  # [L, D]
    relations: list[tuple[int, str, int, bool]]  # (subject, relation, object, negated), decidable ones
    negative_global: np.ndarray  # [N, D]
    negative_regions: np.ndarray  # [N, D]
    warnings: list[str]


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
        from harmosearch.model.encoder import EncoderIdentity, load_encoder
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
        scales = np.asarray(r["scale"], dtype=np.float32)
        # Plain region scores (boxes, negatives, box queries) and, for ranking, the same table with
        # the configured window penalty; a query's own settings may ask for another (_ranking).
        self.regions = RegionTable(self.reader.region_vectors, boxes, self.reader.region_start, scales)
        penalty = self.config.search.window_penalty
        self._penalised = (penalty, self.regions.penalising_windows(penalty))
        self._vocabularies: dict[tuple[str, tuple[int, int] | None], Vocabulary | None] = {}  # see _contrast
        self.calibration = _stored_calibration(manifest)
        self._tune()

    def _tune(self) -> None:
        """nprobe and efSearch from the search settings; with search.faiss_gpu, copies of the
        indexes on the GPUs for unfiltered searches (ID selectors stay on the CPU)."""
        from harmosearch.store import to_gpus, tune

        s = self.config.search
        for index in (self.reader.global_index, self.reader.region_index):
            tune(index, s.nprobe, s.ef_search)
        self.gpu_indexes: dict[str, Any] = {}
        if s.faiss_gpu != "off":
            for name, index in (("global", self.reader.global_index), ("regions", self.reader.region_index)):
                self.gpu_indexes[name] = to_gpus(index, shard=s.faiss_gpu == "shard")

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
        lexeme; fusion.py). relations=False (or
        relation_weight 0) ignores the query's relations, ranking its lexemes independently.
        refine (default: settings.refine) looks at the best max(k, settings.rerank) results
        again on their re-encoded dense maps (refine.py): each lexeme's box is searched again, so
        the box shown fits the object, and those results are reordered and scored by
        refine_alpha * global + (1 - refine_alpha) * their refined lexeme scores (the relation
        part as matched on the indexed regions); the k shown come from them, and a numeric
        min_score applies to that score. With settings.rerank 0, only the k shown are refined,
        and their ranks and scores stay. "auto" confidence is always the indexed scores'.

        after / before ("2024", "2024-07", "2024-07-15", a date): capture time at or after the
        start of `after`, before the start of `before`, on the photos' own clocks. under: folders
        relative to the photo root (or absolute paths inside it). sort="date" puts the k best
        newest first. min_score="auto" keeps only results the index's calibration finds
        confident (text queries only; as a configured default, queries with an image ignore it)."""
        weight = 0.0 if not relations else relation_weight
        s = _settings(settings or self.config.search, k, alpha, min_score, weight, refine)
        if sort not in SORTS:
            raise QueryError(f"unknown sort {sort!r}; use score or date")
        if s.min_score == "auto" and image is not None:
            if min_score == "auto":
                raise QueryError(
                    "--min-score auto does not apply to --image queries: image similarity is not calibrated"
                )
            s = replace(s, min_score=None)
        if s.min_score == "auto" and self.calibration is None:
            raise QueryError(
                f"index {self.path} has no calibration for --min-score auto; update it with harmosearch index"
            )
        query = self._encode(text, image, negatives, global_only, s.relation_weight > 0)
        if not self.photos_root.is_dir():
            query.warnings.append(
                f"the photo folder {self.photos_root} no longer exists; if it moved, run: "
                f"harmosearch index NEW_PLACE --index {self.path}"
            )
        calibrated = self.calibration is not None and image is None
        if self.calibration is not None and image is not None:
            query.warnings.append("queries with an image are not calibrated: no result is marked weak")
        allowed = self._allowed(after, before, under, query.warnings)
        candidates = self._candidates(query.global_vector, query.lexeme_vectors, s, allowed)
        if len(candidates) == 0:
            return SearchResponse(query.text, query.lexeme_texts, [], query.warnings, calibrated)
        global_scores = self.reader.global_vectors[candidates].astype(np.float32) @ query.global_vector
        contrast = self._contrast(query.lexeme_texts, query.lexeme_vectors, s)
        match = match_regions(
            self._ranking(s.window_penalty),
            candidates,
            query.lexeme_vectors,
            query.relations,
            s.box_margin,
            s.relation_weight,
            s.relation_candidates,
            contrast,
        )
        alpha = s.alpha_for(len(query.lexeme_vectors))
        fused = fuse(global_scores, match.scores, alpha, match.relation_scores, s.relation_weight)
        penalties = self._penalty(candidates, query, alpha)
        fused = fused - penalties
        confident = self._confident(global_scores, match.plain_scores, penalties, alpha) if calibrated else None
        # Without the photo folder (warned about above) there is nothing to re-encode.
        # Kept boxes with nothing to reorder by leave nothing to refine (SearchConfig.refines_anything).
        refine = bool(
            s.refine
            and len(query.lexeme_vectors)
            and self.photos_root.is_dir()
            and s.refines_anything(self.config.regions.detail)
        )
        # Reordered results meet a numeric min_score with their reordered scores (in _refined),
        # so it must not drop any of them before they are looked at again.
        later = refine and s.rerank > 0 and isinstance(s.min_score, float)
        order = self._order(candidates, fused, replace(s, min_score=None) if later else s, confident=confident)
        boxes: dict[int, np.ndarray] = {}
        if refine:
            lexemes = np.asarray(query.lexeme_vectors, dtype=np.float32)
            order, fused, match, boxes = self._refined(
                candidates,
                order,
                fused,
                global_scores,
                penalties,
                match,
                lexemes,
                s,
                query.warnings,
                contrast,
                related_lexemes(query.relations) if s.relation_weight else [],
                query.lexeme_texts,
            )
        results = self._results(
            candidates, order[: s.k], fused, global_scores, query.lexeme_texts, query.relations, match, confident
        )
        results = [_with_boxes(r, boxes[p]) if p in boxes else r for r, p in zip(results, order, strict=False)]
        if sort == "date":
            results = _by_date(results, self.reader.images["taken_local"])
        return SearchResponse(query.text, query.lexeme_texts, results, query.warnings, calibrated)

    def _confident(
        self, global_scores: np.ndarray, lexeme_scores: np.ndarray, penalties: np.ndarray | float, alpha: float
    ) -> np.ndarray:
        """Which candidates score above the calibration's bar. The score measured leaves out the
        relations' geometric term and the window penalty, which the null queries do not get (so an
        index's calibration holds whatever search.window_penalty is); a query without lexemes
        ranks by its global score, which the calibration holds at alpha 1."""
        from harmosearch.search.calibration import assess

        plain = fuse(global_scores, lexeme_scores, alpha) - penalties
        at = alpha if lexeme_scores.shape[1] else 1.0
        return assess(self.calibration, plain, at).confident  # type: ignore[arg-type]

    def _best_frame_only(self, candidates: np.ndarray, order: np.ndarray) -> np.ndarray:
        """`order` without the rows of a file already listed: a video keeps its best frame."""
        paths = np.asarray(self.reader.images["path"], dtype=object)[candidates[order]]
        _, first = np.unique(paths.astype(str), return_index=True)
        return order[np.sort(first)]

    def _allowed(
        self,
        after: str | date | None,
        before: str | date | None,
        under: Sequence[str | os.PathLike[str]],
        warnings: list[str],
    ) -> np.ndarray | None:
        """Image rows that pass the date and folder filters (bool per row), or None without filters."""
        from harmosearch.media.metadata import date_range

        if after is None and before is None and not under:
            return None
        allowed = np.ones(self.reader.n_images, dtype=bool)
        if after is not None or before is not None:
            low, high = date_range(_date_text(after), _date_text(before))
            taken = np.asarray(self.reader.images["taken_local"], dtype=np.float64)
            allowed &= (taken >= low) & (taken < high)
        if under:
            folders = [self._folder(f) for f in under]
            if "" not in folders:
                prefixes = tuple(f + "/" for f in folders)
                paths = self.reader.images["path"]
                allowed &= np.fromiter(
                    (str(p) in folders or str(p).startswith(prefixes) for p in paths), dtype=bool, count=len(paths)
                )
        if not allowed.any():
            warnings.append("no indexed file passes the filters (--after, --before, --under)")
        return allowed

    def _folder(self, folder: str | os.PathLike[str]) -> str:
        """A --under folder as the paths of the images table write it: relative to the photo
        root, "/"-separated, without "./" or a trailing "/"; "" for the whole root."""
        text = os.fspath(folder)
        path = Path(text).expanduser()
        if path.is_absolute():
            try:
                text = path.resolve().relative_to(self.photos_root.resolve()).as_posix()
            except ValueError:
                raise QueryError(f"--under {folder}: not inside the photo folder {self.photos_root}") from None
        parts = [p for p in PurePosixPath(text.replace(os.sep, "/")).parts if p != "."]
        if ".." in parts or (parts and parts[0] == "/"):
            raise QueryError(f"--under {folder}: give a folder inside the photo folder, relative to it")
        return "/".join(parts)

    def _encode(
        self, text: str, image: Path | None, negatives: tuple[str, ...], global_only: bool, use_relations: bool
    ) -> _Query:
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
        relations = _relations(positive.parsed, warnings) if use_lexemes and use_relations else []
        # A --not phrase's region vector: the mean of its lexemes, or its global vector without any.
        neg_regions = [
            n.lexeme_vectors.numpy().mean(0) if len(n.lexeme_vectors) else n.global_vector.numpy() for n in negative
        ]
        return _Query(
            text,
            g,
            lexeme_texts,
            lexemes,
            relations,
            np.stack([n.global_vector.numpy() for n in negative]).astype(np.float32)
            if negative
            else np.zeros((0, dim)),
            np.stack([_unit(v) for v in neg_regions]) if negative else np.zeros((0, dim), np.float32),
            warnings,
        )

    def _candidates(
        self, global_vector: np.ndarray, lexeme_vectors: np.ndarray, s: SearchConfig, allowed: np.ndarray | None = None
    ) -> np.ndarray:
        """Images among the top global matches or holding one of each lexeme's top regions; with
        filters, among the allowed images only (all of them when few, or when FAISS cannot
        restrict this index type or found fewer than k)."""
        if allowed is None:
            return self._faiss_candidates(global_vector, lexeme_vectors, s, None)
        ids = np.flatnonzero(allowed)
        start = self.reader.region_start
        if int((start[ids + 1] - start[ids]).sum()) <= EXACT_SUBSET_REGIONS:
            return ids
        try:
            found = self._faiss_candidates(global_vector, lexeme_vectors, s, allowed)
        except RuntimeError:  # an index type that takes no ID selector
            return ids
        return found if len(found) >= min(s.k, len(ids)) else ids

    def _faiss_candidates(
        self, global_vector: np.ndarray, lexeme_vectors: np.ndarray, s: SearchConfig, allowed: np.ndarray | None
    ) -> np.ndarray:
        from harmosearch.store import search_vectors

        found: list[np.ndarray] = []
        images = self.reader.n_images if allowed is None else int(allowed.sum())
        region_allowed = None if allowed is None else np.repeat(allowed, np.diff(self.reader.region_start))
        regions = self.reader.n_regions if region_allowed is None else int(region_allowed.sum())
        gpu = self.gpu_indexes if allowed is None else {}  # ID selectors run on the CPU indexes
        if images:
            wanted = min(images, max(s.k, s.global_candidates))
            index = gpu.get("global", self.reader.global_index)
            _, ids = search_vectors(index, global_vector[None], wanted, allowed)
            found.append(ids[0][ids[0] >= 0])
        if len(lexeme_vectors) and regions:
            # One batched call for all lexemes; FAISS pads with -1 when asked for more than it holds.
            wanted = min(regions, s.region_candidates)
            index = gpu.get("regions", self.reader.region_index)
            _, ids = search_vectors(index, lexeme_vectors, wanted, region_allowed)
            found.append(np.asarray(self.reader.regions["image_id"])[ids[ids >= 0]])
        if not found:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(found).astype(np.int64))

    def _ranking(self, window_penalty: float) -> RegionTable:
        """The region table that ranks images under this window penalty (the last one is kept;
        one tuple, so that threads serving queries never see a table with another's penalty)."""
        penalty, table = self._penalised
        if penalty != window_penalty:
            table = self.regions.penalising_windows(window_penalty)
            self._penalised = (window_penalty, table)
        return table

    def _contrast(self, lexeme_texts: list[str], lexeme_vectors: np.ndarray, s: SearchConfig) -> Contrast | None:
        """The rivals of the query's lexemes in search.vocabulary, embedded once per setting (a
        file: again when it changes)."""
        if s.contrast == 0 or not lexeme_texts:
            return None
        key = (s.vocabulary, _file_signature(s.vocabulary))
        if key not in self._vocabularies:
            if len(self._vocabularies) >= KEPT_VOCABULARIES:
                self._vocabularies.clear()
            self._vocabularies[key] = load_vocabulary(self.encoder, s.vocabulary)
        vocabulary = self._vocabularies[key]
        return None if vocabulary is None else vocabulary.for_lexemes(lexeme_texts, lexeme_vectors, s.contrast)

    def _penalty(self, candidates: np.ndarray, query: _Query, alpha: float) -> np.ndarray | float:
        if len(query.negative_global) == 0:
            return 0.0
        neg_global = self.reader.global_vectors[candidates].astype(np.float32) @ query.negative_global.T
        neg_region, _ = best_regions(self.regions, candidates, query.negative_regions, 0.0)
        return penalty(neg_global, neg_region, alpha)

    def _rank(
        self,
        candidates: np.ndarray,
        fused: np.ndarray,
        global_scores: np.ndarray,
        texts: list[str],
        match: RegionMatch,
        s: SearchConfig,
        exclude: int | None = None,
    ) -> list[Result]:
        """The best s.k candidates (see _order) as Results."""
        order = self._order(candidates, fused, s, exclude)[: s.k]
        return self._results(candidates, order, fused, global_scores, texts, [], match)

    def _order(
        self,
        candidates: np.ndarray,
        fused: np.ndarray,
        s: SearchConfig,
        exclude: int | None = None,
        confident: np.ndarray | None = None,
    ) -> np.ndarray:
        """Positions in `candidates`, best first (ties by image id; a video's best frame only), of
        those that pass s.min_score ("auto": the calibrated ones)."""
        order = np.lexsort((candidates, -fused))
        if exclude is not None:
            order = order[candidates[order] != exclude]
        order = self._best_frame_only(candidates, order)
        if s.min_score == "auto" and confident is not None:
            order = order[confident[order]]
        elif isinstance(s.min_score, float):
            order = order[fused[order].astype(np.float64) >= s.min_score]  # a huge bound overflows float32
        return order

    def _results(
        self,
        candidates: np.ndarray,
        order: np.ndarray,
        fused: np.ndarray,
        global_scores: np.ndarray,
        texts: list[str],
        relations: list[tuple[int, str, int, bool]],
        match: RegionMatch,
        confident: np.ndarray | None = None,
    ) -> list[Result]:
        results = [
            self._result(rank, int(candidates[p]), float(fused[p]), float(global_scores[p]), texts, relations, match, p)
            for rank, p in enumerate(order, start=1)
        ]
        if confident is not None:
            results = [replace(r, confident=bool(confident[p])) for r, p in zip(results, order, strict=True)]
        return results

    def _result(
        self,
        rank: int,
        image_id: int,
        score: float,
        global_score: float,
        texts: list[str],
        relations: list[tuple[int, str, int, bool]],
        match: RegionMatch,
        position: int,
    ) -> Result:
        images = self.reader.images
        path = str(images["path"][image_id])
        seconds = float(images["frame_time"][image_id])
        taken = images["taken"][image_id]
        shown = self.regions.boxes_of(match.rows[position])
        matches = tuple(
            LexemeMatch(text, float(match.scores[position, j]), tuple(float(v) for v in shown[j]))
            for j, text in enumerate(texts)
        )
        related = tuple(
            RelationMatch(texts[s], name, texts[o], negated, float(match.relation_scores[position, k]))
            for k, (s, name, o, negated) in enumerate(relations)
        )
        return Result(
            rank=rank,
            image_id=image_id,
            path=path,
            absolute=self.photos_root / path,
            score=score,
            global_score=global_score,
            lexemes=matches,
            width=int(images["width"][image_id]),
            height=int(images["height"][image_id]),
            relations=related,
            frame_time=None if math.isnan(seconds) else seconds,
            taken=taken if isinstance(taken, str) else None,
        )

    def _refined(
        self,
        candidates: np.ndarray,
        order: np.ndarray,
        fused: np.ndarray,
        global_scores: np.ndarray,
        penalties: np.ndarray | float,
        match: RegionMatch,
        lexemes: np.ndarray,
        s: SearchConfig,
        warnings: list[str],
        contrast: Contrast | None = None,
        related: Sequence[int] = (),
        lexeme_texts: Sequence[str] = (),
    ) -> tuple[np.ndarray, np.ndarray, RegionMatch, dict[int, np.ndarray]]:
        """Refinement (refine.py) of the first max(k, s.rerank) positions of `order` (only the k
        shown when s.rerank is 0): each lexeme's box searched again near the indexed one (unless
        s.searches_boxes says the indexed boxes are kept: then they are shown and cropped); with
        s.rerank, those positions, scored by fused + s.crop_weight * the mean crop score of
        their lexemes' new boxes (refine.crop_scores against `lexeme_texts` embedded as
        captions), or with crop_weight 0 by fuse(global, lexeme scores, refine_alpha, relation
        part) - penalties, reordered and cut at a numeric s.min_score (the rest of `order` is
        dropped: every result shown is scored the same way). Returns (order, fused, match,
        position -> refined boxes [L, 4]). A result whose picture is gone or cannot be decoded
        keeps its indexed boxes and lexeme scores (in that same formula; no crop score), with a
        warning."""
        from harmosearch.errors import HarmosearchError
        from harmosearch.search.box_search import as_seeds, crop_scores, decode_side, refine_boxes

        head = order[: max(s.k, s.rerank)]
        pictures, kept, unread = [], [], []
        for p in head:
            image_id = int(candidates[p])
            try:
                pictures.append(self.picture(image_id, decode_side(self.encoder, s.refine_scale)))
            except HarmosearchError as exc:  # gone since indexing, or undecodable
                unread.append(f"{self.reader.images['path'][image_id]}: {exc}")
                continue
            kept.append(int(p))
        if unread:
            warnings.append(
                f"{len(unread)} of the best {len(head)} results were not looked at again, their pictures unread "
                f"({unread[0]}); they keep their indexed boxes"
            )
        refined: dict[int, np.ndarray] = {}
        crops = np.zeros(len(fused), np.float32)  # each candidate's mean crop score
        # Refined scores know no window penalty; a picture not read again, or every one when the
        # indexed boxes are kept, keeps its indexed scores without it too (with the contrast, as
        # refined scores have it), so that one formula scores the reordered results.
        searching = s.searches_boxes(self.config.regions.detail)
        lexeme_scores = match.plain_scores.astype(np.float32)
        count = len(lexemes)
        contrast = contrast if s.rerank else None  # only the reordering uses the scores
        if contrast is not None and (len(kept) < len(head) or not searching):
            others = np.setdiff1d(head, kept) if searching else head
            lexeme_scores[others] = self._unread_scores(
                candidates[others], match.rows[others], lexemes, related, s, contrast
            )
        if kept:
            boxes = self.regions.boxes_of(match.rows[kept]).reshape(-1, 4)
            image_of = np.repeat(np.arange(len(kept)), count)
            requests = None if contrast is None else contrast.columns(np.tile(np.arange(count), len(kept)))
            if searching:
                boxes, scores = refine_boxes(
                    self.encoder,
                    pictures,
                    image_of,
                    np.tile(lexemes, (len(kept), 1)),
                    as_seeds(boxes),
                    s.refine_scale,
                    s.box_margin,
                    requests,
                )
                refined = {p: boxes[i * count : (i + 1) * count] for i, p in enumerate(kept)}
                lexeme_scores[kept] = scores.reshape(len(kept), count)
            if s.rerank and s.crop_weight:
                texts = self.encoder.encode_texts(list(lexeme_texts)).numpy()
                looks = crop_scores(self.encoder, pictures, image_of, boxes, np.tile(texts, (len(kept), 1)))
                crops[kept] = looks.reshape(len(kept), count).mean(1)
        if not s.rerank:
            return order, fused, match, refined
        fused = fused.copy()
        if s.crop_weight:
            fused[head] += s.crop_weight * crops[head]
        else:
            relation_scores = match.relation_scores[head] if match.relation_scores.size else None
            fused[head] = fuse(
                global_scores[head], lexeme_scores[head], s.refine_alpha, relation_scores, s.relation_weight
            )
            fused[head] -= penalties[head] if isinstance(penalties, np.ndarray) else penalties
        head = head[np.lexsort((candidates[head], -fused[head]))]
        if isinstance(s.min_score, float):
            head = head[fused[head].astype(np.float64) >= s.min_score]
        return head, fused, replace(match, scores=lexeme_scores), refined

    def _unread_scores(
        self,
        images: np.ndarray,
        rows: np.ndarray,
        lexemes: np.ndarray,
        related: Sequence[int],
        s: SearchConfig,
        contrast: Contrast,
    ) -> np.ndarray:
        """Lexeme scores [C, L] of results whose pictures could not be read again, scored as
        refined ones are (no window penalty, the contrast's term): a lone lexeme's best region,
        a related lexeme's region chosen with the relations (rows [C, L]; -1 without one)."""
        scores = best_regions(self.regions, images, lexemes, s.box_margin, contrast)[0]
        for j in related:
            chosen = rows[:, j]
            found = chosen >= 0
            vectors = np.asarray(self.regions.vectors[chosen[found]], dtype=np.float32)
            plain = (vectors @ lexemes[j])[:, None]
            scores[found, j] = (plain + contrast.columns([j]).term(plain, vectors))[:, 0]
            scores[~found, j] = -1.0
        return scores

    def _image_vector(self, path: Path) -> np.ndarray:
        from harmosearch.media.formats import open_still

        if not Path(path).is_file():
            raise QueryError(f"query image not found: {path}")
        try:
            image = open_still(Path(path)).image
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
        s = _settings(settings or self.config.search, k, None, min_score, None)
        self._check_image(image_id)
        g = _unit(self.reader.global_vectors[image_id].astype(np.float32))
        candidates = self._candidates(g, np.zeros((0, len(g)), np.float32), replace(s, k=s.k + 1))
        scores = self.reader.global_vectors[candidates].astype(np.float32) @ g
        empty = np.zeros((len(candidates), 0))
        none = RegionMatch(empty, np.zeros((len(candidates), 0), np.int64), empty, empty)
        results = self._rank(candidates, scores, scores, [], none, s, exclude=image_id)
        return SearchResponse(str(self.reader.images["path"][image_id]), [], results)

    def picture(self, image_id: int, min_side: int | None = None) -> tuple[Any, int, int]:
        """An indexed image's pixels and full size: the still, or the video frame of this row
        (decoded at reduced scale where the format allows, keeping at least min_side pixels)."""
        from harmosearch.media.formats import open_still
        from harmosearch.media.video import frame_at

        path = self.image_file(image_id)
        seconds = float(self.reader.images["frame_time"][image_id])
        decoded = open_still(path, min_side) if np.isnan(seconds) else frame_at(path, seconds, min_side)
        return decoded.image, decoded.width, decoded.height

    def region_vector(self, image_id: int, box: tuple[float, float, float, float]) -> np.ndarray:
        """The vector of a box (pixels of the original image) on an indexed image, pooled from its
        dense map as indexing pools proposals: the image is encoded again, once."""
        import torch

        from harmosearch.regions.proposals import detail_size, pool_detailed, to_grid

        x0, y0, x1, y1 = self._clip_box(image_id, box)
        encoder = self.encoder
        # Decoded and encoded as indexing did: JPEGs at the smallest scale that covers the input
        # size of the dense map the index's regions were pooled from.
        patch = encoder.image_size // encoder.grid[0]
        fine_size = detail_size(self.config.regions.detail, encoder.image_size, patch)
        image, width, height = self.picture(image_id, fine_size or encoder.image_size)
        _, dense = encoder.encode_images([image])
        fine = encoder.encode_images([image], fine_size)[1] if fine_size else None
        grid_box = to_grid(
            torch.tensor([[x0, y0, x1, y1]]), width, height, encoder.grid, encoder.image_size, encoder.config.resize
        )
        return pool_detailed(dense, [grid_box], fine)[0][0].numpy().astype(np.float32)

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
        s = _settings(settings or self.config.search, k, alpha, min_score, None)
        query = self.region_vector(image_id, box)
        candidates = self._candidates(query, query[None], replace(s, k=s.k + 1))
        global_scores = self.reader.global_vectors[candidates].astype(np.float32) @ query
        match = match_regions(self.regions, candidates, query[None], [], s.box_margin, 0.0, 1)
        fused = fuse(global_scores, match.scores, s.alpha)
        results = self._rank(candidates, fused, global_scores, ["region"], match, s, exclude=image_id)
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


def _settings(
    base: SearchConfig,
    k: int | None,
    alpha: float | None,
    min_score: float | str | None,
    relation_weight: float | None,
    refine: bool | None = None,
) -> SearchConfig:
    """The search settings with the per-call options on top, checked like the config file."""
    try:
        return replace(
            base,
            k=base.k if k is None else k,
            alpha=base.alpha if alpha is None else alpha,
            phrase_alpha=base.phrase_alpha if alpha is None else alpha,
            min_score=base.min_score if min_score is None else min_score,
            relation_weight=base.relation_weight if relation_weight is None else relation_weight,
            refine=base.refine if refine is None else refine,
        )
    except ConfigError as exc:
        raise QueryError(str(exc).removeprefix("search.")) from None


def _with_boxes(result: Result, boxes: np.ndarray) -> Result:
    """The result with its lexemes' boxes replaced (boxes [L, 4], pixels)."""
    matches = tuple(
        replace(m, box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])))
        for m, b in zip(result.lexemes, boxes, strict=True)
    )
    return replace(result, lexemes=matches)


def _by_date(results: list[Result], taken_local: np.ndarray) -> list[Result]:
    """The results newest first (by capture time on the photo's own clock; undated last, ties in
    score order), ranked in that order."""
    taken = np.asarray(taken_local, dtype=np.float64)[[r.image_id for r in results]]
    order = np.argsort(-np.nan_to_num(taken, nan=-np.inf), kind="stable")
    return [replace(results[i], rank=rank) for rank, i in enumerate(order, start=1)]


def _relations(parsed: Any, warnings: list[str]) -> list[tuple[int, str, int, bool]]:
    """The parsed relations that boxes can decide, as (subject, relation, object, negated); a
    warning names each one that needs depth (in front of, behind)."""
    scored = []
    for r in parsed.relations:
        if r.decidable:
            scored.append((r.subject, r.relation, r.object, r.negated))
        else:
            warnings.append(
                f"{r.phrase!r} needs depth, which 2D boxes do not show; "
                f"{parsed.lexemes[r.subject].text!r} and {parsed.lexemes[r.object].text!r} are matched without it"
            )
    return scored


def _stored_calibration(manifest: dict[str, Any]) -> Any:
    """The index's calibration, or None when it has none of the current version."""
    from harmosearch.search.calibration import CALIBRATION_VERSION, Calibration

    stored = manifest.get("calibration")
    if not stored or stored.get("version") != CALIBRATION_VERSION:
        return None
    return Calibration.from_dict(stored)


def _date_text(value: str | date | None) -> str | None:
    """A --after / --before value as media.metadata.period reads it."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _is_utf8(text: str) -> bool:
    """False for text holding undecodable bytes (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _file_signature(setting: str) -> tuple[int, int] | None:
    """(mtime, size) of a vocabulary file, None for "auto", "none" or a file that is not there
    (reading it then says why)."""
    if setting in ("auto", "none"):
        return None
    try:
        stat = Path(setting).expanduser().stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def open_index(path: str | os.PathLike[str] | None = None, config: Config | None = None, **kwargs: Any) -> Index:
    """Open an index for searching; without a path, the most recently updated one under
    config.paths.indexes."""
    config = config or load_config()
    return Index(Path(path) if path is not None else latest_index(config.paths.indexes_dir), config, **kwargs)
