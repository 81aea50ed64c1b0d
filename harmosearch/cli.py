"""The command line: parses, calls the library, prints. The only module that prints and exits.

Heavy libraries (torch, open_clip, faiss, pyarrow) are imported inside the commands that
need them, so `harmosearch --help` answers at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from harmosearch.config import GLOBAL_ONLY_REGIONS, Config, load_config, parse_weights
from harmosearch.errors import HarmosearchError

app = typer.Typer(
    name="harmosearch",
    help="Region-aware image search with HarmoCLIP: find photos by what is in them, and where.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# Options shared by several commands, declared once.
ModelOption = Annotated[str | None, typer.Option("--model", help="Model spec (default: harmo-tiny).")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
IndexOption = Annotated[Path | None, typer.Option("--index", help="Index folder (default: the newest under indexes/).")]
BatchOption = Annotated[int | None, typer.Option("--batch-size", help="Images per forward pass.")]
WorkersOption = Annotated[int | None, typer.Option("--workers", help="Worker processes.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemctl stop, docker stop, job runners), handled like Ctrl-C."""


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file overriding the default configuration.")
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
    `rate_of` stage also shows images/s."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        tasks: dict[str, tuple[Any, float]] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = (bar.add_task(stage, total=total, rate=""), time.perf_counter())
            task, started = tasks[stage]
            rate = f"{done / max(time.perf_counter() - started, 1e-9):.1f} images/s" if stage == rate_of else ""
            bar.update(task, completed=done, total=total, rate=rate)

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
    out_dir: Annotated[Path, typer.Argument(help="Folder to write images/ and annotations.json into.")],
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
    workers: Annotated[int, typer.Option("--workers", help="Processes used to draw.", min=1)] = 1,
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
    photos: Annotated[Path, typer.Argument(help="Folder of photos, searched recursively.")],
    index_path: Annotated[
        Path | None, typer.Option("--index", help="Index folder (default: indexes/<folder name>).")
    ] = None,
    model: ModelOption = None,
    global_only: Annotated[
        bool,
        typer.Option("--global-only", help="Store only the whole-image region (plain CLIP search, smallest index)."),
    ] = False,
    boxes: Annotated[
        Path | None, typer.Option("--boxes", help="JSON of path -> [[x0, y0, x1, y1], ...] or COCO annotations.")
    ] = None,
    index_type: Annotated[
        str | None, typer.Option("--index-type", help="FAISS index_factory string (default: by size).")
    ] = None,
    include_hidden: Annotated[
        bool, typer.Option("--include-hidden", help="Also index hidden files and folders.")
    ] = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Re-encode everything (e.g. after changing model).")
    ] = False,
    device: DeviceOption = None,
    batch_size: BatchOption = None,
    workers: WorkersOption = None,
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
            "index.include_hidden": include_hidden or None,
        },
    )
    if global_only:
        config = config.with_values(GLOBAL_ONLY_REGIONS)
    from harmosearch.indexing import build_index

    with progress_bars() as progress:
        report = build_index(photos, index_path, config, boxes_file=boxes, rebuild=rebuild, progress=progress)
    for path, reason in report.skipped:
        err.print(f"skipped {path}: {reason}", highlight=False, markup=False)
    if not report.committed:
        out.print(f"{report.index}: up to date, nothing to encode ({report.images} images, {report.regions} regions)")
        return
    out.print(
        f"{report.index}: {report.images} images, {report.regions} regions "
        f"(added {report.added}, changed {report.changed}, renamed {report.renamed}, removed {report.removed}, "
        f"unchanged {report.unchanged}; encoded {report.encoded} at {report.images_per_s:.1f} images/s"
        + (f", {report.resumed} taken from an interrupted run" if report.resumed else "")
        + f"; skipped {len(report.skipped)})",
        highlight=False,
    )


@app.command()
def query(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help='What to look for, e.g. "red umbrella near bench".')] = "",
    index_path: IndexOption = None,
    k: Annotated[int | None, typer.Option("-k", "--top", help="Number of results (default: 10).")] = None,
    alpha: Annotated[
        float | None, typer.Option("--alpha", help="Weight of the global score in [0, 1] (default: 0.5).")
    ] = None,
    global_only: Annotated[bool, typer.Option("--global-only", help="Plain CLIP ranking, no regions.")] = False,
    image: Annotated[Path | None, typer.Option("--image", help="Use an image file as (part of) the query.")] = None,
    negatives: Annotated[
        list[str] | None, typer.Option("--not", help="Push down images showing this (repeatable).")
    ] = None,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Drop results scoring below this.")] = None,
    relation_weight: Annotated[
        float | None,
        typer.Option("--relation-weight", help="Weight of relations such as 'left of' or 'near' (default: 0.5)."),
    ] = None,
    no_relations: Annotated[
        bool, typer.Option("--no-relations", help="Ignore relations: rank the lexemes independently.")
    ] = False,
    as_json: JsonOption = False,
    save_annotated: Annotated[
        Path | None, typer.Option("--save-annotated", help="Write annotated results and a contact sheet here.")
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
            "search.min_score": min_score,
            "search.relation_weight": relation_weight,
        },
    )
    options = {
        "global_only": global_only,
        "negatives": tuple(negatives or ()),
        "relations": not no_relations,
        "k": k,
        "alpha": alpha,
        "min_score": min_score,
        "relation_weight": relation_weight,
    }
    # A server searches with its own settings: only plain command-line options travel to it.
    warm = image is None and save_annotated is None and device is None and ctx.obj is None
    body = _warm_search(index_path, config, text, options) if warm else None
    response = None
    if body is None:
        from harmosearch.search import open_index

        idx = open_index(index_path, config, device=device)
        response = idx.search(
            text,
            image=image,
            **{k: v for k, v in options.items() if k not in ("k", "alpha", "min_score", "relation_weight")},
        )
        body = {**response.to_dict(), "index": str(idx.path), "warnings": response.warnings}
    for warning in body.get("warnings", []):
        err.print(f"warning: {warning}", highlight=False)
    if as_json:
        print(json.dumps({k: body[k] for k in ("query", "lexemes", "results")}, ensure_ascii=False))
    else:
        _print_results(body)
    if save_annotated is not None and response is not None:
        from harmosearch.annotate import save_annotated as save

        written = save(response, save_annotated)
        err.print(f"wrote {len(written)} annotated images to {save_annotated}")


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

    if not body["results"]:
        out.print(f"no results for {body['query']!r}")
        return
    title = f"{body['query']!r} in {body['index']}"
    if body["lexemes"]:
        title += "  lexemes: " + ", ".join(body["lexemes"])
    table = Table(title=title, title_justify="left")
    for name, justify in (("#", "right"), ("path", "left"), ("score", "right"), ("global", "right")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for lexeme in body["lexemes"]:
        table.add_column(f"{lexeme}: score (box)")
    for relation in body["results"][0]["relations"]:
        what = f"{'not ' if relation['negated'] else ''}{relation['relation']}"
        table.add_column(f"{relation['subject']} {what} {relation['object']}", justify="right")
    for r in body["results"]:
        cells = [f"{m['score']:.3f} ({','.join(f'{v:.0f}' for v in m['box'])})" for m in r["lexemes"]]
        cells += [f"{relation['score']:.2f}" for relation in r["relations"]]
        table.add_row(str(r["rank"]), r["path"], f"{r['score']:.3f}", f"{r['global_score']:.3f}", *cells)
    out.print(table)


@app.command()
def info(
    ctx: typer.Context,
    index_path: Annotated[
        Path | None, typer.Argument(help="Index folder (default: the newest under indexes/).")
    ] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check checksums and row alignment of every file.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show what an index holds: counts, model, configuration, size on disk."""
    import json

    from harmosearch.indexes import latest_index
    from harmosearch.store import describe
    from harmosearch.store import verify as verify_index

    path = index_path or latest_index(resolve(ctx).paths.indexes_dir)
    facts = describe(path)
    problems = verify_index(path) if verify else []
    if as_json:
        print(json.dumps({**facts, **({"problems": problems} if verify else {})}, default=list))
    else:
        _print_info(facts)
    if not facts["photos_found"]:
        err.print(
            f"warning: the photo folder {facts['photos']} no longer exists; if it moved, run "
            f"harmosearch index NEW_PLACE --index {path}",
            highlight=False,
        )
    for problem in problems:
        err.print(f"[bold red]problem:[/] {problem}", highlight=False)
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
    rows = [
        ("photos", facts["photos"]),
        ("images", str(facts["images"])),
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
        ("size on disk", f"{facts['bytes'] / 1e6:.2f} MB"),
        ("last update", ", ".join(f"{k} {v}" for k, v in facts["last_update"].items())),
        ("config", json.dumps(facts["config"], default=list)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


@app.command()
@interruptible
def bench(
    ctx: typer.Context,
    dataset: Annotated[
        str, typer.Option("--dataset", help="flickr30k, mscoco, synthetic, aro-relation, aro-attribution or a folder.")
    ] = "synthetic",
    task: Annotated[
        list[str] | None,
        typer.Option("--task", help="retrieval, boxcls, grounding, search, compositional (repeatable)."),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the dataset's files are.")] = None,
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
    save_scores: Annotated[Path | None, typer.Option("--save-scores", help="Write score matrices (.npy) here.")] = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Append the result, with this command, to a JSONL file.")
    ] = None,
    device: DeviceOption = None,
) -> None:
    """Benchmark a model: recall@1/5/10 both ways, box classification, grounding, phrase search, compositional pairs."""
    import json

    config = resolve(ctx, **{"encoder.model": model, "encoder.device": device})
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
        elif task == "retrieval":
            table.add_column("ranking")
            for key in RECALLS:
                table.add_column(key.replace("t2i_", "t→i ").replace("i2t_", "i→t "), justify="right")
            for mode, values in numbers["modes"].items():
                table.add_row(mode, *(f"{100 * values[k]:.1f}" for k in RECALLS))
        else:
            columns = BENCH_COLUMNS[task]
            for title, _ in columns:
                table.add_column(title, justify="right")
            count = next(k for k in ("boxes", "phrases") if k in numbers)
            table.add_column(count, justify="right")
            table.add_row(*(f"{100 * numbers[key]:.1f}" for _, key in columns), str(numbers[count]))
        out.print(table)
    out.print(f"total {result['seconds']:.1f} s")


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
        groups = {"": values} if aro else {kind: v for kind, v in values.items() if kind != "all"}
        for kind, figures in groups.items():
            cells = [f"{100 * figures[key]:.1f}" for _, key in columns]
            table.add_row(mode, *([] if aro else [kind]), *cells)


@app.command()
@interruptible
def demo(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Where to put scenes/, index/ and results/.")] = Path("samples/demo"),
    n: Annotated[int, typer.Option("--n", help="Number of scenes to draw.", min=1)] = 120,
    model: ModelOption = None,
) -> None:
    """Draw synthetic scenes, index them with the bundled model, run compositional queries."""
    config = resolve(ctx, **{"encoder.model": model})
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
        list[Path] | None, typer.Option("--index", help="Index folder to serve (repeatable; default: the newest).")
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
        Path, typer.Option("--data", help="Training set: synth folder, COCO root or Flickr30k Entities root.")
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Run folder: checkpoints/, final/, metrics.jsonl, loss_curve.png.")
    ],
    model: Annotated[str | None, typer.Option("--model", help="Starting model spec (default: harmo-tiny).")] = None,
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from harmosearch.train.loop import train as run_training
    from harmosearch.train.loop import training_data

    samples = training_data(data, config)  # errors in the data show before any progress bar
    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[terms]}"),
    )
    with Progress(*columns, console=err) as bar:
        task = bar.add_task("train", total=None, terms="")

        def on_step(m: dict[str, Any]) -> None:
            terms = "  ".join(f"{k} {m[k]:.3f}" for k in ("total", "gc", "lrc", "gr", "tight") if k in m)
            bar.update(
                task, completed=m["step"], total=m["total_steps"], terms=f"{terms}  {m['samples_per_s']:.0f} samples/s"
            )

        result = run_training(config, data, out_dir, on_step=on_step, resume=not fresh, samples=samples)
    if result.resumed_from:
        out.print(f"resumed from step {result.resumed_from}")
    out.print(f"trained {result.steps} steps; model: {result.final} (use it with --model {result.final})")
    out.print(f"metrics: {out_dir / 'metrics.jsonl'}, loss curve: {out_dir / 'loss_curve.png'}")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: library errors become one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        command.main(args=args, prog_name="harmosearch", standalone_mode=True)
    except KeyboardInterrupt as exc:  # before a command started (argument parsing, imports)
        err.print("terminated" if isinstance(exc, Terminated) else "interrupted")
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    except HarmosearchError as exc:
        if "--debug" in args:
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
