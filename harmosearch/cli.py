"""The command line. The only module that prints and exits.

Heavy libraries (torch, open_clip, faiss, pyarrow) are imported inside the commands that
need them, so `harmosearch --help` answers at once.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
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
out = Console()
err = Console(stderr=True)


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


def _weights(text: str | None) -> dict[str, float]:
    """"lrc=0.5,gr=2" or "0.5,2" (w_lrc, w_gr) -> {"train.w_lrc": 0.5, "train.w_gr": 2.0}."""
    if not text:
        return {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    named = {}
    for i, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if not sep:
            key, value = ("lrc", "gr")[i] if i < 2 else "?", part
        if key not in ("lrc", "gr"):
            raise typer.BadParameter(f"unknown weight {key!r}; use lrc=W,gr=W", param_hint="--weights")
        try:
            named[f"train.w_{key}"] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number", param_hint="--weights") from None
    return named


@app.command()
@interruptible
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Training set: synth folder, COCO root or Flickr30k Entities root.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints/, final/, metrics.jsonl, loss_curve.png.")],
    model: Annotated[str | None, typer.Option("--model", help="Starting model spec (default: harmo-tiny).")] = None,
    losses: Annotated[str | None, typer.Option("--losses", help="Loss terms to use, e.g. gc,lrc,gr.")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Term weights: lrc=1,gr=1.")] = None,
    gr_variant: Annotated[str | None, typer.Option("--gr-variant", help="GR variant: caption or crop.")] = None,
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
    config = resolve(ctx, **{
        "encoder.model": model, "encoder.device": device, "train.losses": losses, "train.gr_variant": gr_variant,
        "train.epochs": epochs, "train.max_steps": max_steps, "train.batch_size": batch_size, "train.lr": lr,
        "train.seed": seed, "train.checkpoint_every": checkpoint_every, "train.workers": workers,
        **_weights(weights),
    })
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from harmosearch.train.loop import train as run_training

    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[terms]}"))
    with Progress(*columns, console=err) as bar:
        task = bar.add_task("train", total=None, terms="")

        def on_step(m: dict[str, Any]) -> None:
            terms = "  ".join(f"{k} {m[k]:.3f}" for k in ("total", "gc", "lrc", "gr") if k in m)
            bar.update(task, completed=m["step"], total=m["total_steps"],
                       terms=f"{terms}  {m['samples_per_s']:.0f} samples/s")

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
    except HarmosearchError as exc:
        if "--debug" in args:
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
