"""harmosearch index: build or update an index of a photo folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from harmosearch.cli.core import err, interruptible, line, out, plural, progress_bars, resolve
from harmosearch.cli.options import BatchOption, DetailOption, DeviceOption, WorkersOption, checked_path
from harmosearch.config import DEFAULT_MODEL, GLOBAL_ONLY_REGIONS

if TYPE_CHECKING:
    from harmosearch.indexing import IndexReport


@interruptible
def index(
    ctx: typer.Context,
    photos: Annotated[
        Path,
        typer.Argument(
            metavar="PHOTOS", help="Folder of photos and videos, searched recursively.", callback=checked_path
        ),
    ],
    index_path: Annotated[
        Path | None,
        typer.Option("--index", help="Index folder (default: indexes/<folder name>).", callback=checked_path),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help=f"Model spec (default: {DEFAULT_MODEL}, or the index's own when updating)."),
    ] = None,
    global_only: Annotated[
        bool,
        typer.Option("--global-only", help="Store only the whole-image region (plain CLIP search, smallest index)."),
    ] = False,
    boxes: Annotated[
        Path | None,
        typer.Option(
            "--boxes", help="JSON of path -> [[x0, y0, x1, y1], ...] or COCO annotations.", callback=checked_path
        ),
    ] = None,
    index_type: Annotated[
        str | None, typer.Option("--index-type", help="FAISS index_factory string (default: by size).")
    ] = None,
    include_hidden: Annotated[
        bool, typer.Option("--include-hidden", help="Also index hidden files and folders.")
    ] = False,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Skip files and folders matching this gitignore pattern (repeatable)."),
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Re-encode everything (e.g. after changing model).")
    ] = False,
    detail: DetailOption = None,
    device: DeviceOption = None,
    batch_size: BatchOption = None,
    workers: WorkersOption = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="local (this machine) or ray (Ray actors; harmosearch[dist]).")
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster to use (default: start a local Ray).")
    ] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers", help="Ray actors, one model each.")] = None,
    gpus_per_worker: Annotated[
        float | None, typer.Option("--gpus-per-worker", help="GPUs per Ray actor (0.5: two share one).")
    ] = None,
) -> None:
    """Index a photo folder: one global vector and many region vectors per image; re-runs update."""
    config = resolve(
        ctx,
        **{
            "encoder.model": model,
            "encoder.device": device,
            "encoder.batch_size": batch_size,
            "index.index_type": index_type,
            "index.workers": workers,
            "index.engine": engine,
            "ray.address": address,
            "ray.workers": num_workers,
            "ray.gpus_per_worker": gpus_per_worker,
            "index.include_hidden": include_hidden or None,
            "index.exclude": tuple(exclude) if exclude else None,
            "regions.detail": detail,
        },
    )
    if global_only:
        config = config.with_values(GLOBAL_ONLY_REGIONS)
    from harmosearch.indexing import build_index

    with progress_bars() as progress:
        report = build_index(photos, index_path, config, boxes_file=boxes, rebuild=rebuild, progress=progress)
    _print_skipped(report.skipped)
    _print_report(report, photos)


def _print_report(report: IndexReport, photos: Path) -> None:
    """What the run did to the index: nothing to encode, or the photos moved, and the counts."""
    held = f"{report.images} images" + (
        f" ({report.frames} of them frames of {plural(report.videos, 'video')})" if report.videos else ""
    )
    if not report.committed:
        out.print(f"{report.index}: up to date, nothing to encode ({held}, {report.regions} regions)", highlight=False)
        return
    if report.moved_from:
        out.print(
            f"{report.index}: the photos moved from {report.moved_from} to {photos.resolve()}; "
            f"moved {report.moved} (recognised by content, not encoded again)",
            highlight=False,
        )
    out.print(
        f"{report.index}: {held}, {report.regions} regions "
        f"(added {report.added}, changed {report.changed}, renamed {report.renamed}, removed {report.removed}, "
        f"unchanged {report.unchanged}; encoded {report.encoded} at {report.images_per_s:.1f} images/s"
        + (f" in {report.made_with}" if report.made_with else "")
        + (f", {report.resumed} taken from an interrupted run" if report.resumed else "")
        + f"; skipped {len(report.skipped)})",
        highlight=False,
    )


GROUPED_SKIPS = 3  # more files than this skipped for one reason are listed on one line


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    """One line per skipped file; many files skipped for the same reason (videos without PyAV,
    say) share one line."""
    by_reason: dict[str, list[str]] = {}
    for path, reason in skipped:
        by_reason.setdefault(reason, []).append(path)
    for reason, paths in by_reason.items():
        if len(paths) > GROUPED_SKIPS:
            shown = ", ".join(paths[:GROUPED_SKIPS])
            err.print(line(f"skipped {len(paths)} files ({shown}, ...): {reason}"), highlight=False)
        else:
            for path in paths:
                err.print(line(f"skipped {path}: {reason}"), highlight=False)
