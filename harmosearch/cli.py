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
    n: Annotated[int | None, typer.Option("--n", help="Number of scenes [default: 100].")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed [default: 0].")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Image side in pixels [default: 224].")] = None,
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
