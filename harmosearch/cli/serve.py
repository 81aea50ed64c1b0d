"""harmosearch serve: indexes over HTTP with the model kept loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from harmosearch.cli.core import out, resolve
from harmosearch.cli.options import DeviceOption, ModelOption, checked_paths


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
