"""The command line. The only module that prints and exits.

Heavy libraries (torch, open_clip, faiss, pyarrow) are imported inside the commands that
need them, so `harmosearch --help` answers at once.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from harmosearch.config import Config, load_config
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


@dataclass(frozen=True)
class State:
    config_file: Path | None
    debug: bool


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file overriding the default configuration.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    ctx.obj = State(config, debug)


def resolve(ctx: typer.Context, **overrides: Any) -> Config:
    """Defaults < --config TOML < flags given on this command line (None = not given)."""
    state: State = ctx.obj
    return load_config(state.config_file, overrides)


@contextlib.contextmanager
def stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress(stage, done, total) callback drawing one rich bar per stage on stderr."""
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        ids: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in ids:
                ids[stage] = bar.add_task(stage, total=total)
            bar.update(ids[stage], completed=done)

        yield progress


def interruptible(func: Callable[..., None]) -> Callable[..., None]:
    """Ctrl-C inside a command: say so in one line and exit 130 (work on disk stays consistent)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except KeyboardInterrupt:
            err.print("interrupted; what was written so far is consistent, and a re-run resumes it")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@interruptible
def synth(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Folder to write images/ and annotations.json into.")],
    n: Annotated[int | None, typer.Option("--n", help="Number of scenes (default: 100).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default: 0).")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Image side in pixels (default: 224).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes used to draw.")] = 1,
) -> None:
    """Generate synthetic scenes (coloured shapes with boxes, phrases and captions)."""
    config = resolve(ctx, **{"synth.n": n, "synth.seed": seed, "synth.size": size})
    from rich.progress import Progress

    from harmosearch.synth import generate

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("drawing scenes", total=config.synth.n)
        data = generate(out_dir, config.synth, workers=workers, progress=lambda k: bar.advance(task, k))
    out.print(
        f"wrote {len(data['images'])} scenes, {len(data['annotations'])} objects and "
        f"{len(data['captions'])} captions to {out_dir}"
    )


def absolute_model_path(spec: str | None) -> str | None:
    """Model specs naming a local folder are stored absolute, so the index works from any folder."""
    if spec is None:
        return None
    prefix = "local-dir:" if spec.startswith("local-dir:") else ""
    path = Path(spec.removeprefix(prefix)).expanduser()
    return f"{prefix}{path.resolve()}" if path.exists() else spec


@app.command()
@interruptible
def index(
    ctx: typer.Context,
    photos: Annotated[Path, typer.Argument(help="Folder of photos, searched recursively.")],
    index_path: Annotated[
        Path | None, typer.Option("--index", help="Index folder (default: indexes/<folder name>).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model spec (default: harmo-tiny).")] = None,
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
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Worker processes: they decode, and on CPU also encode.")
    ] = None,
) -> None:
    """Index a photo folder: one global vector and many region vectors per image; re-runs update."""
    overrides: dict[str, Any] = {
        "encoder.model": absolute_model_path(model),
        "encoder.device": device,
        "encoder.batch_size": batch_size,
        "index.index_type": index_type,
        "index.workers": workers,
        "index.include_hidden": include_hidden or None,
        "index.global_only": global_only or None,
    }
    if global_only:
        overrides["regions.max_regions"] = 1
        overrides["regions.scales"] = "1.0"
        overrides["regions.segments"] = ""
    from harmosearch.indexing import build_index, default_index_path

    target = index_path or default_index_path(photos)
    if model is None and not rebuild and (target / "manifest.json").is_file():
        # Updating an index: keep the model (and region settings) it was built with.
        from harmosearch.store import read_manifest

        built = read_manifest(target)["config"]
        overrides["encoder.model"] = built["encoder"]["model"]
        for key, value in built["regions"].items():
            overrides.setdefault(f"regions.{key}", value)
    config = resolve(ctx, **overrides)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    started = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            import time

            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, rate="")
                started[stage] = time.perf_counter()
            rate = done / max(time.perf_counter() - started[stage], 1e-9)
            bar.update(
                tasks[stage], completed=done, total=total, rate=f"{rate:.1f} images/s" if stage == "encoding" else ""
            )

        report = build_index(photos, target, config, boxes_file=boxes, rebuild=rebuild, progress=progress)
    for path, reason in report.skipped:
        err.print(f"skipped {path}: {reason}", highlight=False, markup=False)
    if not report.committed:
        out.print(f"{target}: up to date, nothing to encode ({report.images} images, {report.regions} regions)")
        return
    out.print(
        f"{target}: {report.images} images, {report.regions} regions "
        f"(added {report.added}, changed {report.changed}, renamed {report.renamed}, removed {report.removed}, "
        f"unchanged {report.unchanged}; encoded {report.encoded} at {report.images_per_s:.1f} images/s"
        + (f", {report.resumed} taken from an interrupted run" if report.resumed else "")
        + f"; skipped {len(report.skipped)})"
    )


@app.command()
def query(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help='What to look for, e.g. "red umbrella near bench".')] = "",
    index_path: Annotated[
        Path | None, typer.Option("--index", help="Index folder (default: the newest under indexes/).")
    ] = None,
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    save_annotated: Annotated[
        Path | None, typer.Option("--save-annotated", help="Write annotated results and a contact sheet here.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
) -> None:
    """Search an index: lexemes are matched to regions and fused with the global score."""
    import json

    config = resolve(ctx, **{"search.k": k, "search.alpha": alpha, "search.min_score": min_score})
    from harmosearch.search import open_index

    idx = open_index(index_path, config, device=device)
    response = idx.search(text, global_only=global_only, image=image, negatives=tuple(negatives or ()))
    for warning in response.warnings:
        err.print(f"warning: {warning}", highlight=False)
    if as_json:
        print(json.dumps(response.to_dict(), ensure_ascii=False))
    else:
        _print_results(response, idx.path)
    if save_annotated is not None:
        from harmosearch.annotate import save_annotated as save

        written = save(response, save_annotated)
        err.print(f"wrote {len(written)} annotated images to {save_annotated}")


def _print_results(response: Any, index_path: Path) -> None:
    from rich.table import Table

    title = f"{response.query!r} in {index_path}"
    if response.lexemes:
        title += "  lexemes: " + ", ".join(response.lexemes)
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("score", justify="right")
    table.add_column("global", justify="right")
    for lexeme in response.lexemes:
        table.add_column(f"{lexeme}: score (box)")
    for r in response.results:
        cells = [f"{m.score:.3f} ({m.box[0]:.0f},{m.box[1]:.0f},{m.box[2]:.0f},{m.box[3]:.0f})" for m in r.lexemes]
        table.add_row(str(r.rank), r.path, f"{r.score:.3f}", f"{r.global_score:.3f}", *cells)
    if not response.results:
        out.print(f"no results for {response.query!r}")
        return
    out.print(table)


@app.command()
def info(
    index_path: Annotated[
        Path | None, typer.Argument(help="Index folder (default: the newest under indexes/).")
    ] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check checksums and row alignment of every file.")] = False,
) -> None:
    """Show what an index holds: counts, model, configuration, size on disk."""
    import json

    from rich.table import Table

    from harmosearch.indexing import default_index_root
    from harmosearch.search import latest_index
    from harmosearch.store import read_manifest, size_on_disk
    from harmosearch.store import verify as verify_index

    path = index_path or latest_index(default_index_root())
    manifest = read_manifest(path)
    table = Table(title=f"index {path}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    enc = manifest["encoder"]
    rows = [
        ("photos", manifest["photos_root"]),
        ("images", str(manifest["counts"]["images"])),
        ("regions", str(manifest["counts"]["regions"])),
        (
            "model",
            f"{enc['spec']} (weights {enc['weights']}, dim {enc['embed_dim']}, "
            f"{enc['image_size']} px, grid {enc['grid']})",
        ),
        ("faiss", f"global {manifest['index_types']['global']}, regions {manifest['index_types']['regions']}"),
        ("created", manifest["created"]),
        ("updated", manifest["updated"]),
        ("generation", str(manifest["generation"])),
        ("size on disk", f"{size_on_disk(path) / 1e6:.2f} MB"),
        (
            "last update",
            ", ".join(f"{k} {v}" for k, v in manifest.get("last_update", {}).items() if isinstance(v, int)),
        ),
        ("config", json.dumps(manifest["config"], default=list)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    if verify:
        problems = verify_index(path)
        if problems:
            for problem in problems:
                err.print(f"[bold red]problem:[/] {problem}", highlight=False)
            raise typer.Exit(2)
        out.print("verify: every file matches its checksum and all tables are row-aligned")


@app.command()
@interruptible
def bench(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset", help="flickr30k, mscoco, synthetic or a folder.")] = "synthetic",
    task: Annotated[
        list[str] | None, typer.Option("--task", help="retrieval, boxcls, grounding, search (repeatable).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the dataset's files are.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model spec (default: harmo-tiny).")] = None,
    mode: Annotated[str, typer.Option("--mode", help="Retrieval ranking: global, fused or both.")] = "both",
    n: Annotated[int, typer.Option("--n", help="Scenes for --dataset synthetic.")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    save_scores: Annotated[Path | None, typer.Option("--save-scores", help="Write score matrices (.npy) here.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
) -> None:
    """Benchmark a model: recall@1/5/10 both ways, box classification, phrase grounding, phrase search."""
    import json

    if mode not in ("global", "fused", "both"):
        raise typer.BadParameter("use global, fused or both", param_hint="--mode")
    tasks = tuple(task or ["retrieval", "boxcls", "grounding", "search"])
    if dataset in ("flickr30k",) and task is None:
        tasks = ("retrieval",)
    config = resolve(ctx, **{"encoder.model": model, "encoder.device": device})
    from harmosearch.bench import run_bench

    with stage_progress() as progress:
        result = run_bench(config, dataset, tasks, data_dir, mode, n, progress=progress, save_scores=save_scores)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_bench(result)


def _print_bench(result: dict[str, Any]) -> None:
    from rich.table import Table

    model = result["model"]["spec"]
    for task, numbers in result["tasks"].items():
        table = Table(title=f"{task} on {numbers['dataset']} with {model}", title_justify="left")
        if task == "retrieval":
            table.add_column("ranking")
            keys = ["t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10"]
            for key in keys:
                table.add_column(key.replace("t2i_", "t→i ").replace("i2t_", "i→t "), justify="right")
            for mode, values in numbers["modes"].items():
                table.add_row(mode, *(f"{100 * values[k]:.1f}" for k in keys))
        elif task == "boxcls":
            for column in ("Top-1", "Top-5", "Top-1 per class", "Top-5 per class", "boxes"):
                table.add_column(column, justify="right")
            table.add_row(
                *(f"{100 * numbers[k]:.1f}" for k in ("top1", "top5", "top1_per_class", "top5_per_class")),
                str(numbers["boxes"]),
            )
        elif task == "search":
            for column in ("P@5", "hit@5", "box IoU ≥ 0.5", "phrases"):
                table.add_column(column, justify="right")
            table.add_row(*(f"{100 * numbers[k]:.1f}" for k in ("P@5", "hit@5", "box@0.5")), str(numbers["phrases"]))
        else:
            for column in ("accuracy (IoU ≥ 0.5)", "proposal ceiling", "phrases"):
                table.add_column(column, justify="right")
            table.add_row(
                f"{100 * numbers['accuracy']:.1f}", f"{100 * numbers['proposal_ceiling']:.1f}", str(numbers["phrases"])
            )
        out.print(table)
    out.print(f"total {result['seconds']:.1f} s")


@app.command()
@interruptible
def demo(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Where to put scenes/, index/ and results/.")] = Path("samples/demo"),
    n: Annotated[int, typer.Option("--n", help="Number of scenes to draw.")] = 120,
    model: Annotated[str | None, typer.Option("--model", help="Model spec (default: harmo-tiny).")] = None,
) -> None:
    """Draw synthetic scenes, index them with the bundled model, run compositional queries."""
    config = resolve(ctx, **{"encoder.model": model})
    from harmosearch.demo import run_demo, slug

    with stage_progress() as progress:
        responses, report = run_demo(folder, config, n, progress=progress)
    out.print(
        f"indexed {report.images} scenes ({report.regions} regions) with {config.encoder.model} into {folder / 'index'}"
    )
    for response in responses:
        _print_results(response, folder / "index")
        out.print(f"annotated: {folder / 'results' / slug(response.query) / 'contact_sheet.png'}\n")
    out.print(f'try your own: harmosearch query "red circle above a blue star" --index {folder / "index"}')


def _weights(text: str | None) -> dict[str, float]:
    """ "lrc=0.5,gr=2" or "0.5,2" (w_lrc, w_gr) -> {"train.w_lrc": 0.5, "train.w_gr": 2.0}."""
    if not text:
        return {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    named = {}
    for i, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if not sep:
            key, value = ("lrc", "gr")[i] if i < 2 else "?", part
        if key not in ("lrc", "gr", "tight"):
            raise typer.BadParameter(f"unknown weight {key!r}; use lrc=W,gr=W,tight=W", param_hint="--weights")
        try:
            named[f"train.w_{key}"] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number", param_hint="--weights") from None
    return named


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
    weights: Annotated[str | None, typer.Option("--weights", help="Term weights: lrc=1,gr=1.")] = None,
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
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="DataLoader worker processes.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore checkpoints in --out and start over.")] = False,
) -> None:
    """Fine-tune an open_clip model with HarmoCLIP's losses (GC + LRC + GR); resumes from --out."""
    config = resolve(
        ctx,
        **{
            "encoder.model": model,
            "encoder.device": device,
            "train.losses": losses,
            "train.gr_variant": gr_variant,
            "train.lexeme_source": lexeme_source,
            "train.match": match,
            "encoder.lexeme_mode": lexeme_mode,
            "train.epochs": epochs,
            "train.max_steps": max_steps,
            "train.batch_size": batch_size,
            "train.lr": lr,
            "train.seed": seed,
            "train.checkpoint_every": checkpoint_every,
            "train.workers": workers,
            **_weights(weights),
        },
    )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from harmosearch.train.loop import train as run_training

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
            terms = "  ".join(f"{k} {m[k]:.3f}" for k in ("total", "gc", "lrc", "gr") if k in m)
            bar.update(
                task, completed=m["step"], total=m["total_steps"], terms=f"{terms}  {m['samples_per_s']:.0f} samples/s"
            )

        result = run_training(config, data, out_dir, on_step=on_step, resume=not fresh)
    if result.resumed_from:
        out.print(f"resumed from step {result.resumed_from}")
    out.print(f"trained {result.steps} steps; model: {result.final} (use it with --model {result.final})")
    out.print(f"metrics: {out_dir / 'metrics.jsonl'}, loss curve: {out_dir / 'loss_curve.png'}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: library errors become one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="harmosearch", standalone_mode=True)
    except KeyboardInterrupt:  # before a command started (argument parsing, imports)
        err.print("interrupted")
        sys.exit(130)
    except HarmosearchError as exc:
        if "--debug" in args:
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
