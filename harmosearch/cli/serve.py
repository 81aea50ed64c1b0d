"""harmosearch serve: indexes over HTTP with the model kept loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from harmosearch.cli.core import err, out, resolve
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
    allow_hosts: Annotated[
        list[str] | None, typer.Option("--allow-host", help="Also answer to this host name (repeatable).")
    ] = None,
    allow_origins: Annotated[
        list[str] | None,
        typer.Option("--allow-origin", help="Let pages of this origin call the API, as http://host:port (repeatable)."),
    ] = None,
    require_token: Annotated[
        bool, typer.Option("--require-token", help="Ask for the token on loopback too (always beyond it).")
    ] = False,
) -> None:
    """Serve indexes over HTTP with the model kept loaded: a JSON API and a page of results with
    boxes; `harmosearch query` uses a running server for its index."""
    config = resolve(ctx, **{"encoder.model": model})
    from harmosearch.serve.access import is_loopback
    from harmosearch.serve.server import serve as run

    def ready(page: str, indexes: dict[str, Any]) -> None:
        out.print(f"serving {', '.join(indexes)} at {page} (Ctrl-C stops)")
        if not is_loopback(host):
            reach = f"warning: bound to {host or 'every address'}, other machines can reach this server"
            err.print(f"{reach}; each request needs its token, as in {page} (elsewhere, with this machine's address)")

    access = {"allow_hosts": tuple(allow_hosts or ()), "allow_origins": tuple(allow_origins or ())}
    run(index_paths or [], host, port, model, config, device, on_ready=ready, require_token=require_token, **access)
