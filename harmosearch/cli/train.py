"""harmosearch train: fine-tune an open_clip model with HarmoCLIP's losses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from harmosearch.cli.core import err, interruptible, out, resolve
from harmosearch.cli.options import BatchOption, DeviceOption, WorkersOption, checked_path
from harmosearch.config import SHAPES_MODEL, parse_weights, shapes_model_unless_named


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
    from harmosearch.train.distributed import launched_rank
    from harmosearch.train.loop import train as run_training
    from harmosearch.train.loop import training_data

    samples = training_data(data, config)  # errors in the data show before any progress bar
    main_process = launched_rank() == 0  # under torchrun, rank 0 speaks for all
    with _training_bar(shown=main_process) as on_step:
        result = run_training(config, data, out_dir, on_step=on_step, resume=not fresh, samples=samples)
    if not main_process:
        return
    if result.resumed_from:
        out.print(f"resumed from step {result.resumed_from}")
    out.print(f"trained {result.steps} steps; model: {result.final} (use it with --model {result.final})")
    out.print(f"metrics: {out_dir / 'metrics.jsonl'}, loss curve: {out_dir / 'loss_curve.png'}")


@contextlib.contextmanager
def _training_bar(shown: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """An on_step(metrics) callback drawing one bar on stderr with the loss terms and the speed;
    drawn on a terminal only, and only where `shown` (the process that speaks for all)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[terms]}"),
    )
    bar = Progress(*columns, console=err, disable=not (err.is_terminal and shown))
    task = bar.add_task("train", total=None, terms="")

    def on_step(m: dict[str, Any]) -> None:
        bar.start()  # at the first step, so that an error while loading the model shows alone
        terms = "  ".join(f"{k} {m[k]:.3f}" for k in ("total", "gc", "lrc", "gr", "tight") if k in m)
        bar.update(
            task, completed=m["step"], total=m["total_steps"], terms=f"{terms}  {m['samples_per_s']:.0f} samples/s"
        )

    try:
        yield on_step
    finally:
        bar.stop()
