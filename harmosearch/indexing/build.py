"""`build_index`: create or update an index, from the settings it keeps to the committed
generation with its calibration."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.config import Config, load_config
from harmosearch.errors import DataError, IndexStoreError
from harmosearch.folders import check_folder
from harmosearch.indexes import MANIFEST
from harmosearch.indexing.assemble import assemble
from harmosearch.indexing.boxes import boxes_digest, load_user_boxes
from harmosearch.indexing.dense_choice import CHOICE_KEY
from harmosearch.indexing.encode import Progress
from harmosearch.indexing.engines.local import encode_locally
from harmosearch.indexing.plan import Plan, moved_from, plan_update, up_to_date
from harmosearch.indexing.report import IndexReport
from harmosearch.media.scan import FileEntry, scan
from harmosearch.store import (
    IndexData,
    IndexLock,
    IndexReader,
    check_index_type,
    claim_staging,
    clear_staging,
    staged_pictures,
    video_counts,
    write_generation,
)

# What an update takes from the index it updates, unless the caller set it.
KEPT_ON_UPDATE = ("encoder.model", "encoder.dense_mode", "encoder.resize", "regions", "media", "index.index_type")


def default_index_path(photos: Path, config: Config) -> Path:
    """indexes/<photo folder name> under config.paths.indexes."""
    name = Path(photos).resolve().name or "photos"
    return config.paths.indexes_dir / name


def build_index(
    photos: Path,
    index: Path | None = None,
    config: Config | None = None,
    encoder: Any = None,
    boxes_file: Path | None = None,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> IndexReport:
    """Create or update the index at `index` (default: indexes/<folder name>) from the images
    under `photos`."""
    started = time.perf_counter()
    config = config or load_config()
    photos = Path(photos)
    index = Path(index) if index is not None else default_index_path(photos, config)
    check_folder(index, "--index", IndexStoreError)  # before the photos are scanned
    if config.index.engine == "ray" and config.ray.address:  # told before the model loads
        from harmosearch.indexing.engines.ray import check_reachable

        check_reachable(config.ray.address)
    entries, skipped = scan(photos, config.index.include_hidden, config.index.exclude)
    user_boxes = load_user_boxes(boxes_file)
    report = IndexReport(index=index, skipped=skipped)
    with IndexLock(index):
        old = None if rebuild else _previous(index)
        config, choice = _kept_dense_mode(config, old) if old is not None else (config, None)
        config, encoder = _settings(config, old, encoder, index)
        if old is None:
            config, encoder, choice = _dense_mode(config, encoder, entries)
        report.model, report.made_with = encoder.identity.spec, encoder.identity.made_with
        report.moved_from = moved_from(old, photos)
        # A moved folder is matched by content alone: equal names, sizes and times in another
        # folder are no proof of equal pictures.
        plan = plan_update(entries, old, user_boxes, report, progress, by_path=not report.moved_from)
        if report.moved_from:
            report.moved = sum(rows is not None for _, _, rows, _ in plan.rows)
        if old is not None and not report.moved_from and up_to_date(plan, old, report, config):
            report.images, report.regions = old.n_images, old.n_regions
            report.videos, report.frames = old.manifest["counts"]["videos"], old.manifest["counts"]["frames"]
        else:
            _encode_and_commit(photos, index, config, encoder, plan, old, user_boxes, report, progress, choice)
    report.seconds = time.perf_counter() - started
    return report


def _previous(index: Path) -> Any:
    return IndexReader(index, load_indexes=False) if (index / MANIFEST).is_file() else None


def _settings(config: Config, old: Any, encoder: Any, index: Path) -> tuple[Config, Any]:
    """The settings an update keeps from its index, the loaded encoder, and a clear error when the
    caller asks for a model or region settings other than the index's own."""
    from harmosearch.indexing.inference import check_same_path, kept_settings, load_like_index, recorded
    from harmosearch.model.encoder import EncoderIdentity, load_encoder
    from harmosearch.model.loading import canonical_spec

    stored, old_proposals = _as_built(old.manifest) if old is not None else ({}, None)
    if old is not None:
        config = kept_settings(config.over(stored, KEPT_ON_UPDATE), old.manifest["encoder"])
    config = replace(config, encoder=replace(config.encoder, model=canonical_spec(config.encoder.model)))
    encoder = encoder or (load_encoder(config) if old is None else load_like_index(config, index))
    requested = config.index.index_type  # a bad one is told before how the index differs
    if requested != "auto" and (old is None or old.manifest["config"]["index"]["index_type"] != requested):
        check_index_type(requested, encoder.identity.embed_dim)  # before anything is encoded
    if old is not None:
        check_same_path(index, old.manifest["encoder"], encoder)
        built_with = EncoderIdentity.from_dict(old.manifest["encoder"])
        differs = built_with.mismatch(encoder.identity)
        wanted = config.to_json()
        regions_differ = stored["regions"] != wanted["regions"]
        # At high detail the proposals also depend on the version's constants (pixel segments).
        older_proposals = not regions_differ and old_proposals != _proposals(config)
        if differs or regions_differ or older_proposals or stored.get("media") != wanted["media"]:
            what = (
                f"model {built_with.spec!r}"
                if differs
                else "other region settings"
                if regions_differ
                else "the region proposals of an older harmosearch"
                if older_proposals
                else "other video frame settings"
            )
            raise IndexStoreError(
                f"index {index} was built with {what}; re-run with --rebuild to re-encode everything "
                f"with {encoder.identity.spec!r}"
            )
    return recorded(config, encoder), encoder


def _kept_dense_mode(config: Config, old: Any) -> tuple[Config, dict[str, Any] | None]:
    """What an update keeps of its index's dense map, decided here alone: where the caller asks
    for auto, the mode the index was built in (auto chose it then; an index never mixes vectors
    made two ways), for the settings the encoder is loaded and checked with; and the index's
    record of auto's choice (None where it was built in a named mode), for the new manifest."""
    if config.encoder.dense_mode == "auto":
        kept = old.manifest["config"]["encoder"]["dense_mode"]
        config = replace(config, encoder=replace(config.encoder, dense_mode=kept))
    return config, old.manifest.get(CHOICE_KEY)


def _dense_mode(config: Config, encoder: Any, entries: list[FileEntry]) -> tuple[Config, Any, dict[str, Any] | None]:
    """The settings and encoder with a new index's dense map chosen where encoder.dense_mode is
    auto (indexing.dense_choice), and auto's record for the manifest."""
    from harmosearch.indexing.dense_choice import choose_dense_mode, sampled_pictures

    if config.encoder.dense_mode != "auto":
        return config, encoder, None
    choice = choose_dense_mode(encoder, sampled_pictures(entries), config.regions)
    config = replace(config, encoder=replace(config.encoder, dense_mode=choice["chosen"]))
    return config, encoder.with_dense_mode(choice["chosen"]), choice


def _as_built(manifest: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """An index's config and proposal constants as this version names them, for the settings an
    older version did not record: regions.detail (normal before it existed) and
    regions.pixel_segments (the scales then kept among the high detail's constants; none at
    normal detail, where the dense map's segments were the only ones)."""
    stored = manifest["config"]
    regions = {"detail": "normal", **stored["regions"]}
    proposals = manifest.get("proposals")
    if "pixel_segments" not in regions:
        pixels = list((proposals or {}).get("pixels") or [])
        scales: list[Any] = []
        if len(pixels) == 7:  # [side, scales, sigma, min size, min box, max fraction, replace]
            scales = list(pixels.pop(1))
            proposals = {**proposals, "pixels": pixels}
        regions["pixel_segments"] = scales
    regions, proposals = _older_high_cap(regions, proposals)
    return {**stored, "regions": regions}, proposals


def _older_high_cap(regions: dict[str, Any], proposals: Any) -> tuple[dict[str, Any], Any]:
    """Read a high-detail index built when high detail kept twice regions.max_regions (the last
    of its "high" constants: 2) as the cap that keeps as many regions under today's share: its
    regions are the same, so an update keeps them instead of asking for --rebuild. Where no
    whole cap keeps as many (twice a cap of 3k + 2), it is left as built and told to rebuild."""
    from harmosearch.regions.proposals import HIGH_DETAIL_REGIONS, high_detail_cap

    high = list((proposals or {}).get("high") or [])
    if len(high) != 4 or high[3] != 2 or HIGH_DETAIL_REGIONS == 2:
        return regions, proposals
    kept = regions["max_regions"] * 2
    cap = math.floor(kept / HIGH_DETAIL_REGIONS)
    if high_detail_cap(cap) != kept:
        return regions, proposals
    return {**regions, "max_regions": cap}, {**proposals, "high": [*high[:3], HIGH_DETAIL_REGIONS]}


def _proposals(config: Config) -> Any:
    """What an index's manifest records of how its regions were proposed beyond the regions
    config (regions.proposal_constants), as JSON reads it back; None at normal detail."""
    from harmosearch.regions.proposals import proposal_constants

    return json.loads(json.dumps(proposal_constants(config.regions.detail)))


def _encode_and_commit(
    photos: Path,
    index: Path,
    config: Config,
    encoder: Any,
    plan: Plan,
    old: Any,
    user_boxes: dict[str, list[list[float]]],
    report: IndexReport,
    progress: Progress | None,
    choice: dict[str, Any] | None = None,
) -> None:
    """Encode what is new (resuming staged work), then write the next generation (with auto's
    choice of dense map, `choice`, where it made one)."""
    # Staged pictures are kept only for the same model, region settings and proposal constants.
    made_by = {"encoder": encoder.identity.to_dict(), "regions": config.to_json()["regions"]}
    stage = claim_staging(index, {**made_by, **({"proposals": p} if (p := _proposals(config)) is not None else {})})
    staged = staged_pictures(stage)
    to_encode = plan.to_encode
    report.resumed = sum(1 for _, sha in to_encode if sha in staged)
    first: dict[str, FileEntry] = {}  # copies of one new file are encoded once
    for entry, sha in to_encode:
        if sha not in staged:
            first.setdefault(sha, entry)
    pending = [(entry, sha) for sha, entry in first.items()]
    failed = _encode(pending, encoder, config, user_boxes, stage, progress)
    report.skipped += [(e.path, failed[s]) for e, s in to_encode if s in failed]
    plan.rows = [row for row in plan.rows if not (row[2] is None and row[1] in failed)]
    report.encoded = len(pending) - len(failed)
    data = assemble(plan, old, staged_pictures(stage), encoder.identity.embed_dim, stage)
    report.images, report.regions = data.n_images, data.n_regions
    counts = video_counts(data.images)
    report.videos, report.frames = counts["videos"], counts["frames"]
    calibration = _calibration(data, encoder)
    trust = _trust(data, photos, encoder, old, (config.search.trust_low, config.search.trust_high), progress)
    stats = {key: getattr(report, key) for key in ("added", "changed", "removed", "renamed", "unchanged", "encoded")}
    write_generation(
        index,
        data,
        encoder.identity.to_dict(),
        config.to_dict(),
        config.index.index_type,
        photos,
        old.manifest if old is not None else None,
        {**stats, "skipped": len(report.skipped)},
        {
            "boxes_digest": boxes_digest(user_boxes),
            "boxed_paths": sorted(user_boxes),
            **({"calibration": calibration} if calibration is not None else {}),
            "region_trust": trust,
            **({CHOICE_KEY: choice} if choice is not None else {}),
            **({"proposals": proposals} if (proposals := _proposals(config)) is not None else {}),
        },
    )
    clear_staging(index)
    report.committed = True


def _encode(
    pending: list[tuple[FileEntry, str]],
    encoder: Any,
    config: Config,
    user_boxes: dict[str, list[list[float]]],
    stage: Path,
    progress: Progress | None,
) -> dict[str, str]:
    """Encode `pending` (one file per content hash) on the engine index.engine names, staging
    what it encodes; returns hash -> reason for the files that could not be decoded."""
    boxed = [(e.absolute, sha, user_boxes.get(e.path)) for e, sha in pending]
    if config.index.engine == "ray":
        from harmosearch.indexing.engines.ray import encode_on_ray

        return encode_on_ray(boxed, encoder.identity, config, stage, progress)
    return encode_locally(boxed, encoder, config, stage, progress)


def _trust(
    data: IndexData, photos: Path, encoder: Any, old: Any, ramp: tuple[float, float], progress: Progress | None
) -> dict[str, Any] | None:
    """The new generation's region trust (harmosearch.regions.trust), as the manifest keeps it:
    an update keeps the one its index measured, a build (or an update of an index made before
    trust was measured) measures it on a sample of the images, grown until the weight it gives
    on `ramp` (search.trust_low, trust_high) is sure (reported to `progress` as the stage
    "region trust", in pictures); None when nothing could be sampled."""
    from harmosearch.regions.trust import measure_trust, measured_the_current_way, stored_trust
    from harmosearch.search.pictures import decode

    if old is not None and measured_the_current_way(old.manifest.get("region_trust")):
        return stored_trust(old.manifest).to_dict()
    counts = np.bincount(data.regions["image_id"].astype(np.int64), minlength=data.n_images)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    boxes = np.stack([data.regions[c] for c in ("x0", "y0", "x1", "y1")], axis=1).astype(np.float32)

    def picture(i: int) -> Any:
        at = data.images["frame_time"][i]
        try:
            return decode(photos / str(data.images["path"][i]), float("nan") if at is None else float(at))
        except (OSError, ValueError, DataError):  # gone or unreadable since it was encoded: not sampled
            return None

    trust = measure_trust(  # boxes [R, 4], also when R is 0: np.stack along axis 1
        encoder, picture, data.n_images, data.region_vectors, boxes, start, ramp=ramp, progress=progress
    )
    return trust.to_dict() if trust is not None else None


def _calibration(data: IndexData, encoder: Any) -> dict[str, Any] | None:
    """The calibration of the new generation (see harmosearch.search.calibration), from its vectors as
    stored (float16), as the manifest keeps it; None for an empty index."""
    from harmosearch.search.calibration import cached_bank_encoder, calibrate

    if data.n_images == 0:
        return None
    counts = np.bincount(data.regions["image_id"].astype(np.int64), minlength=data.n_images)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # float16 as stored (the vectors already are: asarray copies nothing)
    return calibrate(
        np.asarray(data.global_vectors, dtype=np.float16),
        np.asarray(data.region_vectors, dtype=np.float16),
        start,
        cached_bank_encoder(encoder),
    ).to_dict()
