"""The typer app and what every command shares: the console streams, messages kept to one line,
the resolved config, progress bars, Ctrl-C and SIGTERM, and `main`, which turns library errors
into one line on stderr."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from harmosearch.cli.options import ConfigOption, DebugOption
from harmosearch.config import Config, load_config
from harmosearch.errors import HarmosearchError

app = typer.Typer(
    name="harmosearch",
    help="Region-aware image search with HarmoCLIP: find photos by what is in them, and where.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help and usage errors: Typer's rich panels import rich's Markdown and Traceback
    # renderers, a third of --help's time (benchmarks/startup.py).
    rich_markup_mode=None,
)
# Markup off: queries, paths and library messages are shown as given, brackets included.
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)
# Control characters in a message (a file name holding a newline or a terminal escape) are
# shown escaped, so every message stays one line and cannot drive the terminal.
ESCAPED = {c: repr(chr(c))[1:-1] for c in (*range(32), 127) if c != ord("\t")}


def line(text: object) -> str:
    return str(text).translate(ESCAPED)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemctl stop, docker stop, job runners), handled like Ctrl-C."""


@app.callback()
def root(ctx: typer.Context, config: ConfigOption = None, debug: DebugOption = False) -> None:
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
