"""The vectors a benchmark scores: images through the same pipeline as indexing, texts as
queries are encoded, and fused caption x image scores as `harmosearch query` fuses them.

Image vectors are cached on disk per (model, region settings, dataset), so a second task or
mode does not encode again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.bench.datasets import BenchSet
from harmosearch.config import Config, SearchConfig
from harmosearch.errors import DataError
from harmosearch.search.contrast import Contrast, Vocabulary, load_vocabulary
from harmosearch.search.count import presence_for
from harmosearch.search.fuse import fuse, fused_scores
from harmosearch.search.query import Query, counts_or_negates, encode_query
from harmosearch.search.score import RegionTable, best_regions, score_candidates

PROMPTS = ("a photo of a {}.", "a {}.", "a picture of a {}.", "an image of a {}.", "a photo of the {}.")
Progress = Callable[[str, int, int], None]


@dataclass
class ImageVectors:
    global_vectors: np.ndarray  # [I, D]
    regions: RegionTable  # the indexing proposals of every image
    gt_vectors: np.ndarray  # [B, D], the dataset's annotated boxes pooled from the dense map
    seconds: float


def encode_images(encoder: Any, config: Config, bench: BenchSet, progress: Progress | None = None) -> ImageVectors:
    """Global, proposal-region and ground-truth-box vectors of every image, made by the indexing
    pipeline (`pipeline.encode_files`); cached under config.paths.cache. The regions are the plain
    table, as an index stores them: `as_an_index` adds the window penalty in the index's unit."""
    from harmosearch.indexing.encode import encode_files
    from harmosearch.model.runtimes import vectors_made_by
    from harmosearch.regions.proposals import proposal_constants

    regions = config.to_json()["regions"]
    constants = proposal_constants(config.regions.detail)
    if constants is not None:  # older caches of normal detail stay valid
        regions["constants"] = constants
    key = hashlib.sha256(json.dumps([vectors_made_by(encoder), regions, bench.digest()]).encode()).hexdigest()[:20]
    cache_file = config.paths.cache_dir / "bench" / f"images-{key}.npz"
    if cache_file.is_file():
        return _load(cache_file)
    started = time.perf_counter()
    probes: list[list[tuple[float, float, float, float]]] = [[] for _ in bench.images]
    owners: dict[int, list[int]] = defaultdict(list)
    for j, (image_id, box, _) in enumerate(bench.boxes):
        probes[image_id].append(box)
        owners[image_id].append(j)
    dim = encoder.identity.embed_dim
    encoded: list[Any] = [None] * len(bench.images)
    gt = np.zeros((len(bench.boxes), dim), np.float32)
    for position, outcome in encode_files(bench.images, encoder, config, None, probes, progress, bench.crops):
        if isinstance(outcome, str):
            raise DataError(f"{bench.images[position]}: {outcome}")
        encoded[position] = outcome
        if owners.get(position):
            gt[owners[position]] = outcome.probes
    counts = [len(e.vectors) for e in encoded]
    result = ImageVectors(
        np.stack([e.global_vector for e in encoded]).astype(np.float32),
        RegionTable(
            np.concatenate([e.vectors for e in encoded]).astype(np.float32).reshape(-1, dim),
            np.concatenate([e.boxes for e in encoded]).astype(np.float32).reshape(-1, 4),
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            np.concatenate([e.scales for e in encoded]).astype(np.float32),
        ),
        gt,
        time.perf_counter() - started,
    )
    _save(cache_file, result)
    return result


def _save(path: Path, v: ImageVectors) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    r = v.regions
    arrays = {"g": v.global_vectors, "rv": r.vectors, "rb": r.boxes, "rs": r.start, "sc": r.scales}
    np.savez(tmp, **arrays, gt=v.gt_vectors, seconds=v.seconds)
    tmp.replace(path)


def _load(path: Path) -> ImageVectors:
    with np.load(path) as z:
        regions = RegionTable(z["rv"], z["rb"], z["rs"], z["sc"])
        return ImageVectors(z["g"], regions, z["gt"], float(z["seconds"]))


@dataclass
class TextVectors:
    """Texts embedded as queries are."""

    global_vectors: np.ndarray  # [T, D]
    lexemes: np.ndarray  # [L, D], every text's lexeme vectors in order
    owners: np.ndarray  # [L], the text each lexeme belongs to
    relations: list[list[tuple[int, str, int, bool]]]  # per text, its decidable relations
    lexeme_texts: list[str] = field(default_factory=list)  # [L], what each lexeme says
    # the texts that count or negate a lexeme ("one red circle", "three shapes: ..."), as queries
    # encode them (search/query.py): they are ranked one by one, as such a query is
    queries: dict[int, Query] = field(default_factory=dict)


def encode_texts(encoder: Any, texts: list[str], dim: int, progress: Progress | None = None) -> TextVectors:
    g_rows, lex_rows, owners, relations, lexeme_texts = [], [], [], [], []
    queries: dict[int, Query] = {}
    batch = 256
    for start in range(0, len(texts), batch):
        for n, enc in enumerate(encoder.encode_queries(texts[start : start + batch])):
            if getattr(enc, "parsed", None) is not None and counts_or_negates(enc.parsed):
                queries[start + n] = encode_query(encoder, texts[start + n])
            g_rows.append(enc.global_vector.numpy())
            vectors = enc.lexeme_vectors.numpy()
            lex_rows.append(vectors)
            owners += [start + n] * len(vectors)
            parsed = getattr(enc, "parsed", None)
            found = parsed.relations if parsed is not None else ()
            lexeme_texts += list(parsed.lexeme_texts) if parsed is not None else [""] * len(vectors)
            relations.append([(r.subject, r.relation, r.object, r.negated) for r in found if r.decidable])
        if progress:
            progress("encoding captions", min(start + batch, len(texts)), len(texts))
    return TextVectors(
        np.stack(g_rows).astype(np.float32) if g_rows else np.zeros((0, dim), np.float32),
        np.concatenate(lex_rows).astype(np.float32) if owners else np.zeros((0, dim), np.float32),
        np.asarray(owners, dtype=np.int64),
        relations,
        lexeme_texts,
        queries,
    )


def fused_table(
    global_scores: np.ndarray,
    lexemes: np.ndarray,
    owners: np.ndarray,
    images: ImageVectors,
    settings: SearchConfig,
    contrast: Contrast | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Text x image fused scores as `harmosearch query` fuses them (settings.alpha_for each
    text's lexeme count, settings.box_margin), from global_scores [T, I], lexeme vectors [L, D]
    and the text each belongs to [L] (and their contrast, rows the lexemes); also the region row
    shown for each lexeme on each image [I, L]."""
    every = np.arange(images.regions.n_images)
    best, rows = best_regions(images.regions, every, lexemes, settings.box_margin, contrast)  # [I, L]
    fused = np.empty_like(global_scores)
    for t in range(len(global_scores)):
        own = owners == t
        fused[t] = fuse(global_scores[t], best[:, own], settings.alpha_for(int(own.sum())))
    return fused, rows


def query_scores(
    texts: TextVectors,
    images: ImageVectors,
    settings: SearchConfig,
    mode: str,
    subset: Any = None,
    vocabulary: Vocabulary | None = None,
    calibration: Any = None,
) -> np.ndarray:
    """Text x image scores [T, I] as `harmosearch query` scores: mode "global" (the plain CLIP
    ranking), "fused" (lexemes x regions, relations ignored) or "relations" (relation-aware, as a
    query ranks by default), the lexemes weighed against `vocabulary` (settings.contrast).
    subset [T, I'] limits each text to the listed images (columns in that order), which is how
    single-image benchmarks (ARO) are scored. A text that counts or negates (texts.queries) is
    scored as such a query, its presence rule from `calibration` (search/count.py)."""
    n = len(texts.global_vectors)
    every = np.arange(images.regions.n_images)
    columns = np.asarray(subset) if subset is not None else np.broadcast_to(every, (n, len(every)))
    s = replace(settings, relation_weight=settings.relation_weight if mode == "relations" else 0.0)
    out = _plain_scores(texts, images, settings, mode, subset, vocabulary, columns)
    for t, query in texts.queries.items():
        if mode == "global":
            out[t] = np.asarray(images.global_vectors[columns[t]], np.float32) @ query.global_vector
            continue
        contrast = (
            None
            if vocabulary is None
            else vocabulary.for_lexemes(query.embedded_texts, query.lexeme_vectors, s.contrast)
        )
        rule = presence_for(calibration, query, s, [])
        plain = replace(images.regions, bias=None)
        scored = score_candidates(plain, images.regions, images.global_vectors, columns[t], query, s, contrast, rule)
        out[t] = fused_scores(scored, s)
    return out


def _plain_scores(
    texts: TextVectors,
    images: ImageVectors,
    settings: SearchConfig,
    mode: str,
    subset: Any,
    vocabulary: Vocabulary | None,
    columns: np.ndarray,
) -> np.ndarray:
    """query_scores of texts that neither count nor negate (their rows are all scored here)."""
    contrast = text_contrast(texts, settings, vocabulary)
    if subset is None and mode != "relations":  # every lexeme of every text in one batched pass
        g = texts.global_vectors @ images.global_vectors.T
        if mode == "global":
            return g
        return fused_table(g, texts.lexemes, texts.owners, images, settings, contrast)[0]
    n = len(texts.global_vectors)
    s = replace(settings, relation_weight=settings.relation_weight if mode == "relations" else 0.0)
    out = np.empty(columns.shape, np.float32)
    for t in range(n):
        own = texts.owners == t
        query = Query(
            text="",
            global_vector=texts.global_vectors[t],
            lexeme_texts=[text for text, mine in zip(texts.lexeme_texts, own, strict=True) if mine],
            lexeme_vectors=texts.lexemes[own] if mode != "global" else texts.lexemes[:0],
            relations=texts.relations[t] if s.relation_weight else [],
            negative_global=texts.lexemes[:0],
            negative_regions=texts.lexemes[:0],
        )
        rivals = None if contrast is None or mode == "global" else contrast.columns(own)
        scored = score_candidates(images.regions, images.regions, images.global_vectors, columns[t], query, s, rivals)
        out[t] = fused_scores(scored, s)
    return out


def text_contrast(texts: TextVectors, settings: SearchConfig, vocabulary: Vocabulary | None) -> Contrast | None:
    """The contrast of every lexeme of `texts` (rows: texts.lexemes), as a query weighs its own."""
    return None if vocabulary is None else vocabulary.for_lexemes(texts.lexeme_texts, texts.lexemes, settings.contrast)


def bench_calibration(encoder: Any, images: ImageVectors) -> Any:
    """The calibration of a benchmark's images (search.calibration), as indexing computes an
    index's, from the vectors as an index stores them (float16)."""
    from harmosearch.search.calibration import calibrate

    def encode(texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(e.global_vector.numpy(), e.lexeme_vectors.numpy()) for e in encoder.encode_queries(texts)]

    regions = images.regions
    vectors = (images.global_vectors, regions.vectors)
    return calibrate(*(np.asarray(v, dtype=np.float16) for v in vectors), regions.start, encode)


def as_an_index(
    encoder: Any, config: Config, bench: BenchSet, images: ImageVectors, known: tuple[Any, Any] | None = None
) -> tuple[Config, ImageVectors, Any, Any]:
    """What a benchmark ranks with, as an index of its images ranks: the settings with the
    regions weighed by the trust measured on these images (regions/trust.py) and the amounts in
    cosines of their calibration's unit (search.calibration.in_cosines), the images' windows
    penalised by that amount; also the trust and the calibration. `config` gives the amounts in
    units, as the config file does; the tasks (bench.tasks.Run) take the returned settings as
    given. `known`: the (trust, calibration) of these very images, measured for another task of
    the same run, which are then not measured again."""
    from harmosearch.regions.trust import weighed
    from harmosearch.search.calibration import in_cosines

    if known is None:
        trust = bench_trust(encoder, bench, images, (config.search.trust_low, config.search.trust_high))
        calibration = bench_calibration(encoder, images)
    else:
        trust, calibration = known
    search = in_cosines(weighed(config.search, trust), calibration)
    images = replace(images, regions=images.regions.penalising_windows(search.window_penalty))
    return replace(config, search=search), images, trust, calibration


def bench_vocabulary(encoder: Any, settings: SearchConfig) -> Vocabulary | None:
    """search.vocabulary embedded by `encoder`, as an index embeds it, kept in the encoder's
    cache as an index keeps it (None when contrast is 0 or the vocabulary is empty)."""
    if settings.contrast == 0:
        return None
    return load_vocabulary(encoder, settings.vocabulary, getattr(encoder, "cache_dir", None))


def phrase_vectors(encoder: Any, phrases: list[str], templates: tuple[str, ...] = PROMPTS) -> np.ndarray:
    """A prompt-ensembled vector per phrase, embedded the way queries embed lexemes: in token
    space the phrase's own tokens inside each prompt are pooled; in prompt mode the EOT feature."""
    import torch.nn.functional as F

    from harmosearch.model.encoder import pool_spans
    from harmosearch.model.lexemes import span_of

    out = []
    for phrase in phrases:
        texts = [t.format(phrase) for t in templates]
        if encoder.config.lexeme_mode == "prompt":
            vec = encoder.encode_texts(texts).mean(0)
        else:
            _, per_token = encoder.encode_tokens(encoder.tokenize(texts))
            target = encoder.parse(phrase).words
            pooled = [
                pool_spans(tok, [span_of(encoder.parse(text), target)], encoder.config.lexeme_pool)[0]
                for text, tok in zip(texts, per_token, strict=True)
            ]
            vec = sum(pooled) / len(pooled)
        out.append(F.normalize(vec.float(), dim=0).numpy())
    return np.stack(out).astype(np.float32)


def bench_trust(encoder: Any, bench: BenchSet, images: ImageVectors, ramp: tuple[float, float] | None = None) -> Any:
    """The region trust of a benchmark's images (regions/trust.py), measured as an index measures
    its own: its sampled pictures read as they were encoded (a set of crops, cropped); with the
    ramp an index would stop at, without it on every sampled picture."""
    from harmosearch.indexing.encode import crop_part
    from harmosearch.regions.trust import measure_trust
    from harmosearch.search.pictures import decode

    def picture(i: int) -> Any:
        image, width, height = decode(bench.images[i], float("nan"))
        if bench.crops is not None and bench.crops[i] is not None:
            return crop_part(image, width, height, bench.crops[i])
        return image, width, height

    r = images.regions
    return measure_trust(encoder, picture, r.n_images, r.vectors, r.boxes, r.start, ramp=ramp)
