"""The command line: parses, calls the library, prints. The only module that prints and exits.

Heavy libraries (torch, open_clip, faiss, pyarrow) are imported inside the commands that
need them, so `harmosearch --help` answers at once.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from harmosearch.config import (
    DEFAULT_MODEL,
    GLOBAL_ONLY_REGIONS,
    SHAPES_MODEL,
    Config,
    load_config,
    parse_weights,
    shapes_model_unless_named,
)
from harmosearch.errors import ConfigError, HarmosearchError
from harmosearch.folders import check_output_file, kind

if TYPE_CHECKING:
    from harmosearch.search import Index, SearchResponse

app = typer.Typer(
    name="harmosearch",
    help="Region-aware image search with HarmoCLIP: find photos by what is in them, and where.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Markup off: queries, paths and library messages are shown as given, brackets included.
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)
# Control characters in a message (a file name holding a newline or a terminal escape) are
# shown escaped, so every message stays one line and cannot drive the terminal.
ESCAPED = {c: repr(chr(c))[1:-1] for c in (*range(32), 127) if c != ord("\t")}


def line(text: object) -> str:
    return str(text).translate(ESCAPED)


def checked_path(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A path whose state cannot even be read (a name too long for the file system, a link loop,
    a folder above it that cannot be entered) is an error naming the option, before any work."""
    if value is not None:
        found = kind(value)
        if found not in ("folder", "file", "missing"):
            name = max(param.opts, key=len) if param.param_type_name == "option" else param.metavar or param.name
            raise ConfigError(f"{name} {value}: {found}")
    return value


def checked_paths(param: typer.CallbackParam, values: list[Path] | None) -> list[Path] | None:
    """checked_path for an option given several times."""
    for value in values or ():
        checked_path(param, value)
    return values


# Options shared by several commands, declared once.
ModelOption = Annotated[str | None, typer.Option("--model", help=f"Model spec (default: {SHAPES_MODEL}).")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
IndexOption = Annotated[
    Path | None,
    typer.Option("--index", help="Index folder (default: the newest under indexes/).", callback=checked_path),
]
BatchOption = Annotated[int | None, typer.Option("--batch-size", help="Images per forward pass.")]
WorkersOption = Annotated[int | None, typer.Option("--workers", help="Worker processes.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
DetailOption = Annotated[
    str | None,
    typer.Option(
        "--detail",
        help="normal (default), or high: regions pooled from a second pass at 1.5x the input size, "
        "and boxes around segments of the pixels; finds small objects, indexing takes longer (README).",
    ),
]
RefineOption = Annotated[
    bool | None,
    typer.Option(
        "--refine/--no-refine",
        help="Look at the best results again on their re-encoded pictures: boxes that fit small things, "
        "and those results reordered by how well the crop around each box matches its words "
        "(search.rerank, 20; search.crop_weight); two image encodings per refined result and one per "
        "crop (default: off).",
    ),
]
RefineScaleOption = Annotated[
    float | None,
    typer.Option(
        "--refine-scale",
        help="Boxes are searched again on the dense map at this multiple of the model's input size (default: 1.5).",
    ),
]


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemctl stop, docker stop, job runners), handled like Ctrl-C."""


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file overriding the default configuration.", callback=checked_path),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and library logs.")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.CRITICAL, force=True)
    ctx.obj = config


def resolve(ctx: typer.Context, **overrides: Any) -> Config:
    """Defaults < environment < --config TOML < flags given on this command line (None = not given)."""
    return load_config(ctx.obj, overrides)


@contextlib.contextmanager
def progress_bars(rate_of: str = "encoding") -> Iterator[Callable[[str, int, int], None]]:
    """A progress(stage, done, total) callback drawing one rich bar per stage on stderr; the
    `rate_of` stage also shows images/s. The bars start at the first report, so what is printed
    before it (a model's download progress) is not drawn over; they are drawn on a terminal
    only: in a log they would leave a stray empty line above an error."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with contextlib.ExitStack() as stack:
        bars: list[Any] = []
        tasks: dict[str, tuple[Any, float]] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if not bars:
                bar = Progress(*columns, console=err, transient=True, disable=not err.is_terminal)
                bars.append(stack.enter_context(bar))
            if stage not in tasks:
                tasks[stage] = (bars[0].add_task(stage, total=total, rate=""), time.perf_counter())
            task, started = tasks[stage]
            rate = f"{done / max(time.perf_counter() - started, 1e-9):.1f} images/s" if stage == rate_of else ""
            bars[0].update(task, completed=done, total=total, rate=rate)

        yield progress


def interruptible(func: Callable[..., None]) -> Callable[..., None]:
    """Ctrl-C or SIGTERM inside a command: say so in one line and exit 130 or 143 (work on disk
    stays consistent: index updates commit atomically and resume)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except KeyboardInterrupt as exc:
            what = "terminated" if isinstance(exc, Terminated) else "interrupted"
            err.print(f"{what}; what was written so far is consistent, and a re-run resumes it")
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None

    return wrapper


@app.command()
@interruptible
def synth(
    ctx: typer.Context,
    out_dir: Annotated[
        Path,
        typer.Argument(
            metavar="OUT_DIR", help="Folder to write images/ and annotations.json into.", callback=checked_path
        ),
    ],
    n: Annotated[int | None, typer.Option("--n", help="Number of scenes (default: 100).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default: 0).")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Image side in pixels (default: 224).")] = None,
    objects: Annotated[
        str | None,
        typer.Option(
            "--objects",
            help="mixed (default: 1-4 objects of 17-36% of the side), small (2-5 of 22-48 px in 224) "
            "or large (1-3 of 50-95 px).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes used to draw.", min=1, max=64)] = 1,
) -> None:
    """Generate synthetic scenes (coloured shapes with boxes, phrases and captions)."""
    config = resolve(ctx, **{"synth.n": n, "synth.seed": seed, "synth.size": size, "synth.objects": objects})
    from harmosearch.synth import generate

    with progress_bars() as progress:
        data = generate(
            out_dir, config.synth, workers=workers, progress=_counter(progress, "drawing scenes", config.synth.n)
        )
    out.print(
        f"wrote {len(data['images'])} scenes, {len(data['annotations'])} objects and "
        f"{len(data['captions'])} captions to {out_dir}"
    )


def _counter(progress: Callable[[str, int, int], None], stage: str, total: int) -> Callable[[int], None]:
    """A progress(advanced_by) callback that keeps the running count for a stage."""
    done = 0

    def advance(k: int) -> None:
        nonlocal done
        done += k
        progress(stage, done, total)

    return advance


@app.command()
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
    held = f"{report.images} images" + (
        f" ({report.frames} of them frames of {_count(report.videos, 'video')})" if report.videos else ""
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
        + (f", {report.resumed} taken from an interrupted run" if report.resumed else "")
        + f"; skipped {len(report.skipped)})",
        highlight=False,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


@app.command()
def query(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(metavar="TEXT", help='What to look for, e.g. "red umbrella near bench".')] = "",
    index_path: IndexOption = None,
    k: Annotated[int | None, typer.Option("-k", "--top", help="Number of results (default: 10).")] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            "--alpha", help="Weight of the global score in [0, 1] (default: 0.5, and 0.15 for a query of one lexeme)."
        ),
    ] = None,
    global_only: Annotated[bool, typer.Option("--global-only", help="Plain CLIP ranking, no regions.")] = False,
    image: Annotated[
        Path | None, typer.Option("--image", help="Use an image file as (part of) the query.", callback=checked_path)
    ] = None,
    negatives: Annotated[
        list[str] | None, typer.Option("--not", help="Push down images showing this (repeatable).")
    ] = None,
    min_score: Annotated[
        str | None,
        typer.Option("--min-score", help="Drop results scoring below this; auto: keep only confident results."),
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Taken on or after this date: 2024, 2024-07, 2024-07-15.")
    ] = None,
    before: Annotated[str | None, typer.Option("--before", help="Taken before this date (same forms).")] = None,
    under: Annotated[
        list[str] | None,
        typer.Option("--under", help="Only files in this folder, relative to the photo folder (repeatable)."),
    ] = None,
    sort: Annotated[str, typer.Option("--sort", help="Order of the k best: score, or date (newest first).")] = "score",
    relation_weight: Annotated[
        float | None,
        typer.Option("--relation-weight", help="Weight of relations such as 'left of' or 'near' (default: 0.5)."),
    ] = None,
    no_relations: Annotated[
        bool, typer.Option("--no-relations", help="Ignore relations: rank the lexemes independently.")
    ] = False,
    refine: RefineOption = None,
    refine_scale: RefineScaleOption = None,
    as_json: JsonOption = False,
    save_annotated: Annotated[
        Path | None,
        typer.Option(
            "--save-annotated", help="Write annotated results and a contact sheet here.", callback=checked_path
        ),
    ] = None,
    device: DeviceOption = None,
) -> None:
    """Search an index: lexemes are matched to regions and fused with the global score.

    When a `harmosearch serve` for the index is running, the search is sent there (the model is
    already loaded) and printed the same way."""
    import json

    config = resolve(
        ctx,
        **{
            "search.k": k,
            "search.alpha": alpha,
            "search.phrase_alpha": alpha,
            "search.min_score": min_score,
            "search.relation_weight": relation_weight,
            "search.refine": refine,
            "search.refine_scale": refine_scale,
        },
    )
    options = {
        "global_only": global_only,
        "negatives": tuple(negatives or ()),
        "relations": not no_relations,
        "after": after,
        "before": before,
        "under": tuple(under or ()),
        "sort": sort,
        "k": k,
        "alpha": alpha,
        "min_score": min_score,
        "relation_weight": relation_weight,
        "refine": refine,
    }
    # A server searches with its own settings: only plain command-line options travel to it.
    warm = image is None and save_annotated is None and device is None and ctx.obj is None and refine_scale is None
    body = _warm_search(index_path, config, text, options) if warm else None
    response = None
    if body is None:
        from harmosearch.search import open_index

        idx = open_index(index_path, config, device=device)
        response = _local_search(idx, config, text, image, options)
        body = {**response.to_dict(), "index": str(idx.path), "warnings": response.warnings}
    for warning in body.get("warnings", []):
        err.print(line(f"warning: {warning}"), highlight=False)
    if as_json:
        print(json.dumps({k: body[k] for k in ("query", "lexemes", "confident_match", "results")}, ensure_ascii=False))
    else:
        _print_results(body)
    if save_annotated is not None and response is not None:
        from harmosearch.annotate import save_annotated as save

        written = save(response, save_annotated, idx.path)
        err.print(f"wrote {len(written)} annotated images to {save_annotated}")


def _local_search(idx: Index, config: Config, text: str, image: Path | None, options: dict[str, Any]) -> SearchResponse:
    """The search in this process: k, alpha and the weights come from the resolved config, which
    already holds the command-line values; min_score only when it was given ("auto" resolved)."""
    given_min_score = options["min_score"] is not None
    return idx.search(
        text,
        image=image,
        min_score=config.search.min_score if given_min_score else None,
        **{k: v for k, v in options.items() if k not in ("k", "alpha", "min_score", "relation_weight")},
    )


def _warm_search(index_path: Path | None, config: Config, text: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """The answer of a running server for the index, or None when there is none (the caller then
    searches in-process). Imports nothing heavier than the standard library."""
    from harmosearch.indexes import latest_index
    from harmosearch.serve.client import find_server, remote_search

    path = index_path or latest_index(config.paths.indexes_dir)
    url = find_server(path)
    body = remote_search(url, text, **options) if url else None
    if body is not None:
        body["index"] = str(path)
        body["results"] = [
            {k: v for k, v in r.items() if k not in ("image_id", "width", "height")} for r in body["results"]
        ]
    return body


def _print_results(body: dict[str, Any]) -> None:
    """A results table from the JSON form of a search (in-process or from a server alike)."""
    from rich.table import Table

    if body.get("confident_match") is False:
        weak = "; the results below score like unrelated queries on this index" if body["results"] else ""
        out.print(f"no confident match for {body['query']!r}{weak}", highlight=False)
    if not body["results"]:
        if body.get("confident_match") is None:
            out.print(f"no results for {body['query']!r}")
        return
    title = f"{body['query']!r} in {body['index']}"
    if body["lexemes"]:
        title += "  lexemes: " + ", ".join(body["lexemes"])
    table = Table(title=title, title_justify="left")
    for name, justify in (("#", "right"), ("path", "left"), ("score", "right"), ("global", "right")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    calibrated = body.get("confident_match") is not None
    if calibrated:
        table.add_column("match")
    for lexeme, shown in zip(body["lexemes"], body["results"][0]["lexemes"], strict=True):
        table.add_column(f"no {lexeme}: presence" if shown.get("negated") else f"{lexeme}: score (box)")
    for relation in body["results"][0]["relations"]:
        what = f"{'not ' if relation['negated'] else ''}{relation['relation']}"
        table.add_column(f"{relation['subject']} {what} {relation['object']}", justify="right")
    from types import SimpleNamespace

    from harmosearch.annotate import shown_path

    for r in body["results"]:
        cells: list[Any] = ["confident" if r.get("confident") else Text("weak", style="dim")] if calibrated else []
        cells += [_lexeme_cell(m) for m in r["lexemes"]]
        cells += [f"{relation['score']:.2f}" for relation in r["relations"]]
        score = Text(f"{r['score']:.3f}", style="dim" if r.get("confident") is False else "")
        shown = shown_path(SimpleNamespace(path=r["path"], frame_time=r.get("frame_time")))
        table.add_row(str(r["rank"]), line(shown), score, f"{r['global_score']:.3f}", *cells)
    out.print(table)


def _lexeme_cell(match: dict[str, Any]) -> str:
    """A lexeme's score and box; with the instances counted ("x2") when the query counts it, its
    presence when the query negates it."""
    if match.get("negated"):
        return f"{match['presence']:.2f}"
    cell = f"{match['score']:.3f} ({','.join(f'{v:.0f}' for v in match['box'])})"
    return cell if match.get("count") is None else f"{cell} x{match['count']}"


@app.command()
def info(
    ctx: typer.Context,
    index_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="INDEX", help="Index folder (default: the newest under indexes/).", callback=checked_path
        ),
    ] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check checksums and row alignment of every file.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show what an index holds: counts, model, configuration, size on disk."""
    import json

    from harmosearch.indexes import latest_index
    from harmosearch.store import describe
    from harmosearch.store import verify as verify_index

    config = resolve(ctx)  # a bad --config is reported even when the index is named
    path = index_path or latest_index(config.paths.indexes_dir)
    facts = describe(path)
    problems = verify_index(path) if verify else []
    if as_json:
        print(json.dumps({**facts, **({"problems": problems} if verify else {})}, default=list))
    else:
        _print_info(facts)
    if not facts["photos_found"]:
        err.print(
            line(
                f"warning: the photo folder {facts['photos']} no longer exists; if it moved, run: "
                f"harmosearch index NEW_PLACE --index {path}"
            ),
            highlight=False,
        )
    for problem in problems:
        err.print(Text.assemble(("problem:", "bold red"), " ", line(problem)))
    if problems:
        raise typer.Exit(2)
    if verify and not as_json:
        out.print("verify: every file matches its checksum and all tables are row-aligned")


def _print_info(facts: dict[str, Any]) -> None:
    import json

    from rich.table import Table

    table = Table(title=f"index {facts['index']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    frames = f", {facts['frames']} of them frames of {_count(facts['videos'], 'video')}" if facts["videos"] else ""
    rows = [
        ("photos", facts["photos"]),
        ("images", f"{facts['images']}{frames}"),
        ("regions", str(facts["regions"])),
        (
            "model",
            f"{facts['model']} (weights {facts['weights']}, dim {facts['embed_dim']}, "
            f"{facts['image_size']} px, grid {tuple(facts['grid'])})",
        ),
        ("faiss", f"global {facts['faiss']['global']}, regions {facts['faiss']['regions']}"),
        ("created", facts["created"]),
        ("updated", facts["updated"]),
        ("generation", str(facts["generation"])),
        ("calibrated", "yes" if facts["calibrated"] else "no (update the index to compute it)"),
        ("size on disk", f"{facts['bytes'] / 1e6:.2f} MB"),
        ("last update", ", ".join(f"{k} {v}" for k, v in facts["last_update"].items())),
        ("config", json.dumps(facts["config"], default=list)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


@app.command()
def dupes(
    ctx: typer.Context,
    index_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="INDEX", help="Index folder (default: the newest under indexes/).", callback=checked_path
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Cosine of global vectors from which two photos may be near-duplicates."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List exact copies and near-duplicates (resized, re-encoded, cropped a little) among the
    indexed photos, each group with the copy to keep."""
    import json

    from harmosearch.dupes import DEFAULT_THRESHOLD, index_duplicates
    from harmosearch.errors import QueryError
    from harmosearch.search import latest_index
    from harmosearch.store import IndexReader

    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise QueryError(f"--threshold {threshold} is not a cosine in [-1, 1]")
    path = index_path or latest_index(resolve(ctx).paths.indexes_dir)
    reader = IndexReader(path, load_indexes=False)
    photos = Path(reader.manifest["photos_root"])
    if not photos.is_dir():
        err.print(
            f"warning: the photo folder {photos} no longer exists; only exact copies can be told apart",
            highlight=False,
        )
    found = index_duplicates(reader, photos, DEFAULT_THRESHOLD if threshold is None else threshold)
    if as_json:
        print(json.dumps({"index": str(path), **found.to_dict()}, ensure_ascii=False))
        return
    _print_dupes(found, path)


def _print_dupes(found: Any, index_path: Path) -> None:
    from rich.table import Table

    if not found.groups:
        out.print(f"no duplicates among the {found.stills} photos in {index_path}")
        return
    table = Table(title=f"duplicates in {index_path}", title_justify="left")
    for name, justify in (("#", "right"), ("kind", "left"), ("keep", "left"), ("copies", "left"), ("cosine", "right")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for n, group in enumerate(found.groups, start=1):
        copies = "\n".join(line(found.paths[i]) for i in group.members if i != group.keeper)
        table.add_row(str(n), group.kind, line(found.paths[group.keeper]), copies, f"{group.similarity:.3f}")
    out.print(table)
    copies = sum(len(g.members) - 1 for g in found.groups)
    out.print(
        f"{len(found.groups)} groups among {found.stills} photos; removing the {copies} copies would free "
        f"{found.removable_bytes() / 1e6:.1f} MB",
        highlight=False,
    )


@app.command()
@interruptible
def bench(
    ctx: typer.Context,
    dataset: Annotated[
        str, typer.Option("--dataset", help="flickr30k, mscoco, synthetic, aro-relation, aro-attribution or a folder.")
    ] = "synthetic",
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task", help="retrieval, boxcls, grounding, search, compositional, counting, negation (repeatable)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where the dataset's files are.", callback=checked_path)
    ] = None,
    model: ModelOption = None,
    mode: Annotated[str, typer.Option("--mode", help="Retrieval ranking: global, fused, relations or all.")] = "all",
    n: Annotated[int, typer.Option("--n", help="Scenes for --dataset synthetic.")] = 500,
    split: Annotated[
        str, typer.Option("--split", help="Synthetic set: val (for choosing settings) or test (for reporting).")
    ] = "test",
    objects: Annotated[
        str, typer.Option("--objects", help="Synthetic scenes: mixed (default), small or large objects.")
    ] = "mixed",
    as_json: JsonOption = False,
    save_scores: Annotated[
        Path | None, typer.Option("--save-scores", help="Write score matrices (.npy) here.", callback=checked_path)
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option("--record", help="Append the result, with this command, to a JSONL file.", callback=checked_path),
    ] = None,
    refine: RefineOption = None,
    refine_scale: RefineScaleOption = None,
    detail: DetailOption = None,
    device: DeviceOption = None,
) -> None:
    """Benchmark a model: recall@1/5/10 both ways, box classification, grounding, phrase search, compositional pairs."""
    import json

    config = shapes_model_unless_named(
        resolve(
            ctx,
            **{
                "encoder.model": model,
                "encoder.device": device,
                "search.refine": refine,
                "search.refine_scale": refine_scale,
                "regions.detail": detail,
            },
        )
    )
    if record is not None:
        check_output_file(record, "--record")  # before the run, not after it
    from harmosearch.bench import append_record, run_bench

    with progress_bars() as progress:
        result = run_bench(
            config,
            dataset,
            tuple(task or ()),
            data_dir,
            mode,
            n,
            progress=progress,
            save_scores=save_scores,
            split=split,
            objects=objects,
        )
    if record is not None:
        append_record(record, result, " ".join(["harmosearch", *sys.argv[1:]]))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_bench(result)


BENCH_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "boxcls": (
        ("Top-1", "top1"),
        ("Top-5", "top5"),
        ("Top-1 per class", "top1_per_class"),
        ("Top-5 per class", "top5_per_class"),
    ),
    "grounding": (("accuracy (IoU ≥ 0.5)", "accuracy"), ("proposal ceiling", "proposal_ceiling")),
    "search": (("P@5", "P@5"), ("hit@5", "hit@5"), ("box IoU ≥ 0.5", "box@0.5")),
}
RECALLS = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10")


def _print_bench(result: dict[str, Any]) -> None:
    from rich.table import Table

    model = result["model"]["spec"]
    for task, numbers in result["tasks"].items():
        table = Table(title=f"{task} on {numbers['dataset']} with {model}", title_justify="left")
        if task == "compositional":
            _compositional_rows(table, numbers)
        elif task in ("counting", "negation"):
            _mode_rows(table, numbers["modes"])
        elif task == "retrieval":
            table.add_column("ranking")
            for key in RECALLS:
                table.add_column(key.replace("t2i_", "t→i ").replace("i2t_", "i→t "), justify="right")
            for mode, values in numbers["modes"].items():
                table.add_row(mode, *(f"{100 * values[k]:.1f}" if k in values else "" for k in RECALLS))
        else:
            columns = BENCH_COLUMNS[task]
            for title, _ in columns:
                table.add_column(title, justify="right")
            count = next(k for k in ("boxes", "phrases") if k in numbers)
            table.add_column(count, justify="right")
            table.add_row(*(f"{100 * numbers[key]:.1f}" for _, key in columns), str(numbers[count]))
        out.print(table)
    out.print(f"total {result['seconds']:.1f} s")


def _mode_rows(table: Any, modes: dict[str, dict[str, float]]) -> None:
    """One row per ranking, one column per figure: shares in percent, count errors as they are."""
    keys = list(dict.fromkeys(key for values in modes.values() for key in values))
    table.add_column("ranking")
    for key in keys:
        table.add_column(key.replace("_", " "), justify="right")
    for mode, values in modes.items():
        cells = [
            ("" if k not in values else f"{values[k]:.2f}" if "mae" in k else f"{100 * values[k]:.1f}") for k in keys
        ]
        table.add_row(mode, *cells)


COMPOSITIONAL_COLUMNS = {
    "pairs": (("caption wins", "caption_wins"), ("both captions", "image_score"), ("R@1 among pairs", "r1")),
    "aro": (("accuracy", "accuracy"), ("macro accuracy", "macro_accuracy")),
}


def _compositional_rows(table: Any, numbers: dict[str, Any]) -> None:
    """One row per ranking (and kind of twin pair): the share of captions that rank their own
    image above the twin, of pairs where both do, and recall@1 among all pair images; or ARO's
    accuracies."""
    modes = {k: v for k, v in numbers.items() if isinstance(v, dict)}
    aro = "accuracy" in next(iter(modes.values()))
    columns = COMPOSITIONAL_COLUMNS["aro" if aro else "pairs"]
    table.add_column("ranking")
    if not aro:
        table.add_column("pairs")
    for title, _ in columns:
        table.add_column(title, justify="right")
    for mode, values in modes.items():
        groups = {"": values} if aro else {pairs: v for pairs, v in values.items() if pairs != "all"}
        for pairs, figures in groups.items():
            cells = [f"{100 * figures[key]:.1f}" for _, key in columns]
            table.add_row(mode, *([] if aro else [pairs]), *cells)


@app.command()
@interruptible
def demo(
    ctx: typer.Context,
    folder: Annotated[
        Path, typer.Argument(metavar="FOLDER", help="Where to put scenes/, index/ and results/.", callback=checked_path)
    ] = Path("samples/demo"),
    n: Annotated[int, typer.Option("--n", help="Number of scenes to draw.", min=1)] = 120,
    model: ModelOption = None,
) -> None:
    """Draw synthetic scenes, index them with the bundled model, run compositional queries."""
    config = resolve(ctx, **{"encoder.model": model or SHAPES_MODEL})
    from harmosearch.demo import run_demo, slug

    with progress_bars() as progress:
        responses, report = run_demo(folder, config, n, progress=progress)
    out.print(f"indexed {report.images} scenes ({report.regions} regions) with {report.model} into {folder / 'index'}")
    for response in responses:
        _print_results({**response.to_dict(), "index": str(folder / "index")})
        out.print(f"annotated: {folder / 'results' / slug(response.query) / 'contact_sheet.png'}\n")
    out.print(f'try your own: harmosearch query "red circle above a blue star" --index {folder / "index"}')


@app.command()
def serve(
    ctx: typer.Context,
    index_paths: Annotated[
        list[Path] | None,
        typer.Option(
            "--index", help="Index folder to serve (repeatable; default: the newest).", callback=checked_paths
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (default: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=0, max=65535)] = 8000,
    model: ModelOption = None,
    device: DeviceOption = None,
) -> None:
    """Serve indexes over HTTP with the model kept loaded: a JSON API and a page of results with
    boxes; `harmosearch query` uses a running server for its index."""
    config = resolve(ctx, **{"encoder.model": model})
    from harmosearch.serve.server import serve as run

    def ready(url: str, indexes: dict[str, Any]) -> None:
        out.print(f"serving {', '.join(indexes)} at {url}/ (Ctrl-C stops)")

    run(index_paths or [], host, port, model, config, device, on_ready=ready)


@app.command()
@interruptible
def train(
    ctx: typer.Context,
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="Training set: synth folder, COCO root or Flickr30k Entities root.", callback=checked_path
        ),
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Run folder: checkpoints/, final/, metrics.jsonl, loss_curve.png.", callback=checked_path
        ),
    ],
    model: Annotated[
        str | None, typer.Option("--model", help=f"Starting model spec (default: {SHAPES_MODEL}).")
    ] = None,
    losses: Annotated[str | None, typer.Option("--losses", help="Loss terms: gc, lrc, gr, tight.")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Term weights: lrc=1,gr=1,tight=1.")] = None,
    gr_variant: Annotated[str | None, typer.Option("--gr-variant", help="GR variant: caption or crop.")] = None,
    lexeme_source: Annotated[
        str | None, typer.Option("--lexeme-source", help="caption (its lexemes linked to boxes) or annotations.")
    ] = None,
    lexeme_mode: Annotated[
        str | None, typer.Option("--lexeme-mode", help="token (text token space) or prompt (own prompt).")
    ] = None,
    match: Annotated[str | None, typer.Option("--match", help="When boxes tie for a lexeme: largest or skip.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps.")] = None,
    batch_size: BatchOption = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every")] = None,
    workers: WorkersOption = None,
    device: DeviceOption = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore checkpoints in --out and start over.")] = False,
) -> None:
    """Fine-tune an open_clip model with HarmoCLIP's losses (GC + LRC + GR); resumes from --out."""
    config = resolve(
        ctx,
        **{
            "encoder.model": model,
            "encoder.device": device,
            "encoder.lexeme_mode": lexeme_mode,
            "train.losses": losses,
            "train.gr_variant": gr_variant,
            "train.lexeme_source": lexeme_source,
            "train.match": match,
            "train.epochs": epochs,
            "train.max_steps": max_steps,
            "train.batch_size": batch_size,
            "train.lr": lr,
            "train.seed": seed,
            "train.checkpoint_every": checkpoint_every,
            "train.workers": workers,
            **parse_weights(weights),
        },
    )
    config = shapes_model_unless_named(config)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from harmosearch.train.distributed import launched_rank
    from harmosearch.train.loop import train as run_training
    from harmosearch.train.loop import training_data

    samples = training_data(data, config)  # errors in the data show before any progress bar
    main_process = launched_rank() == 0  # under torchrun, rank 0 speaks for all
    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[terms]}"),
    )
    bar = Progress(*columns, console=err, disable=not (err.is_terminal and main_process))
    task = bar.add_task("train", total=None, terms="")

    def on_step(m: dict[str, Any]) -> None:
        bar.start()  # at the first step, so that an error while loading the model shows alone
        terms = "  ".join(f"{k} {m[k]:.3f}" for k in ("total", "gc", "lrc", "gr", "tight") if k in m)
        bar.update(
            task, completed=m["step"], total=m["total_steps"], terms=f"{terms}  {m['samples_per_s']:.0f} samples/s"
        )

    try:
        result = run_training(config, data, out_dir, on_step=on_step, resume=not fresh, samples=samples)
    finally:
        bar.stop()
    if not main_process:
        return
    if result.resumed_from:
        out.print(f"resumed from step {result.resumed_from}")
    out.print(f"trained {result.steps} steps; model: {result.final} (use it with --model {result.final})")
    out.print(f"metrics: {out_dir / 'metrics.jsonl'}, loss curve: {out_dir / 'loss_curve.png'}")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def _escaping_streams() -> Iterator[None]:
    """While a command runs, text the terminal's encoding cannot hold (a file name that is not
    valid UTF-8, another script under an ASCII locale) is written as backslash escapes instead
    of failing; the streams' previous settings come back afterwards."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        errors = getattr(stream, "errors", None)
        if isinstance(stream, io.TextIOWrapper) and errors != "backslashreplace":
            stream.reconfigure(errors="backslashreplace")
            changed.append((stream, errors))
    try:
        yield
    finally:
        for stream, errors in changed:
            stream.reconfigure(errors=errors)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: library errors become one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with _escaping_streams():
            command.main(args=args, prog_name="harmosearch", standalone_mode=True)
    except KeyboardInterrupt as exc:  # before a command started (argument parsing, imports)
        err.print("terminated" if isinstance(exc, Terminated) else "interrupted")
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    except HarmosearchError as exc:
        if "--debug" in args:
            raise
        err.print(Text.assemble(("error:", "bold red"), " ", line(exc)))
        sys.exit(2)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
