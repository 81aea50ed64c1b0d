"""Running the server: load indexes once, serve them with uvicorn, and announce the server in
each index folder (see `client` for the discovery file) for exactly as long as it answers.

The discovery file holds the server's token, so it is readable by its owner alone (0600)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harmosearch.config import Config
from harmosearch.errors import ConfigError
from harmosearch.search import Index
from harmosearch.serve.access import Access, server_token
from harmosearch.serve.client import DISCOVERY

log = logging.getLogger(__name__)


def load_indexes(
    paths: list[Path], model: str | None = None, config: Config | None = None, device: str | None = None
) -> dict[str, Index]:
    """Open each index under a unique name (its folder's name, then name-2, ...), loading every
    distinct model once. `model` overrides the indexes' own (it must be the one they were built
    with); `config` supplies the search settings."""
    from harmosearch.config import config_from_dict
    from harmosearch.model.encoder import load_encoder
    from harmosearch.store import read_manifest

    encoders: dict[Any, Any] = {}
    indexes: dict[str, Index] = {}
    seen: set[Path] = set()
    for path in paths:
        real = Path(path).resolve()
        if real in seen:
            continue
        seen.add(real)
        built = config_from_dict(read_manifest(real)["config"]).encoder
        wanted = replace(built, model=model) if model else built
        if wanted not in encoders:
            encoders[wanted] = load_encoder(wanted, device=device)
        name, n = real.name or "index", 1
        while name in indexes:
            n += 1
            name = f"{real.name}-{n}"
        indexes[name] = Index(real, config, encoder=encoders[wanted])
    return indexes


class WarmServer:
    """uvicorn serving these indexes on a socket bound at construction (port 0: any free port).

    `run()` serves until SIGINT or SIGTERM; `with WarmServer(...) as s:` serves from a thread
    until the block ends. Discovery files are written once the socket accepts connections and
    removed before it closes. `access` says whom it answers (default: the user's token, required
    when bound beyond loopback).
    """

    def __init__(
        self,
        indexes: dict[str, Index],
        host: str = "127.0.0.1",
        port: int = 8000,
        thumbnails: Path | None = None,
        access: Access | None = None,
    ) -> None:
        _require_web()
        import uvicorn

        from harmosearch.config import load_config
        from harmosearch.serve.app import create_app

        self.indexes = indexes
        self.access = access or Access.of(host, server_token(load_config().paths.state_dir))
        try:
            self.socket = socket.create_server((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None
        bound_host, bound_port = self.socket.getsockname()[:2]
        self.url = f"http://{_url_host(bound_host)}:{bound_port}"
        self.app = create_app(indexes, thumbnails or load_config().paths.cache_dir / "thumbnails", self.access)
        # log_config=None: uvicorn must not reconfigure the process's logging.
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5
        )
        self._uvicorn = _uvicorn_server(config, self._announce, self._withdraw)
        self._thread: threading.Thread | None = None
        # Set once the discovery files are written: uvicorn's `started` comes true before that.
        self._announced = threading.Event()

    @property
    def page(self) -> str:
        """The page's address, with the token when the server asks for it."""
        return f"{self.url}/?token={self.access.token}" if self.access.require_token else f"{self.url}/"

    def run(self) -> None:
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._withdraw()
            self.socket.close()

    def __enter__(self) -> WarmServer:
        self._thread = threading.Thread(target=self.run, name="harmosearch-serve", daemon=True)
        self._thread.start()
        while not self._announced.wait(0.01):
            if not self._thread.is_alive():
                raise RuntimeError("the server thread stopped while starting")
        return self

    def __exit__(self, *exc: object) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join()

    def _discovery(self, name: str) -> dict[str, Any]:
        index = self.indexes[name]
        return {
            "pid": os.getpid(),
            "url": self.url,
            "index": name,
            "generation": index.reader.manifest["generation"],
            "token": self.access.token,
        }

    def _announce(self) -> None:
        for name, index in self.indexes.items():
            file = index.path / DISCOVERY
            partial = file.with_name(f".{DISCOVERY}.{os.getpid()}")
            try:
                partial.unlink(missing_ok=True)  # left by a crash, perhaps with other permissions
                with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                    out.write(json.dumps(self._discovery(name)))
                os.replace(partial, file)
            except OSError as exc:
                log.warning("cannot write %s (%s): `harmosearch query` will not find this server", file, exc.strerror)
        self._announced.set()

    def _withdraw(self) -> None:
        for name, index in self.indexes.items():
            file = index.path / DISCOVERY
            try:
                if json.loads(file.read_text(encoding="utf-8")) == self._discovery(name):
                    file.unlink()
            except (OSError, ValueError):
                pass  # gone already, or another server's by now


def serve(
    index_paths: list[Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | None = None,
    config: Config | None = None,
    device: str | None = None,
    thumbnails: Path | None = None,
    on_ready: Callable[[str, dict[str, Index]], None] | None = None,
    allow_hosts: tuple[str, ...] = (),
    allow_origins: tuple[str, ...] = (),
    require_token: bool = False,
) -> None:
    """`harmosearch serve`: load the indexes (the newest under indexes/ when none is given) and
    serve them until SIGINT or SIGTERM. on_ready(page, indexes) is called once they are loaded
    and the socket is bound, before the first request is taken; `page` is the page's address,
    with ?token= when the token is required (bound beyond loopback, or require_token). The
    server answers to its IP addresses, localhost and `allow_hosts`; pages of `allow_origins`
    may call it (CORS)."""
    from harmosearch.config import load_config
    from harmosearch.indexes import latest_index

    _require_web()
    config = config or load_config()
    access = Access.of(host, server_token(config.paths.state_dir), require_token, allow_hosts, allow_origins)
    indexes = load_indexes(index_paths or [latest_index(config.paths.indexes_dir)], model, config, device)
    server = WarmServer(indexes, host, port, thumbnails or config.paths.cache_dir / "thumbnails", access)
    if on_ready is not None:
        on_ready(server.page, indexes)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a server in a terminal is meant to stop
        server.run()


def _uvicorn_server(config: Any, on_started: Callable[[], None], on_stopping: Callable[[], None]) -> Any:
    """A uvicorn.Server that calls back once it accepts connections and before it closes them."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                on_started()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            on_stopping()
            await super().shutdown(sockets=sockets)

    return Server(config)


def _require_web() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigError(f"harmosearch serve needs {exc.name}: pip install 'harmosearch[web]'") from None


def _url_host(host: str) -> str:
    """The address a local client reaches a server bound to `host` at."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
