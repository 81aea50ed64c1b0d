"""Whom a server answers: the Host names it serves, the origins whose pages may call it, and the
token its clients show. `guard` applies these to every request.

Standard library only: the CLI imports it to word its warning before anything heavy is loaded.

The token is made once per user (secrets.token_urlsafe) and kept in the state folder
(`paths.state`, HARMOSEARCH_STATE), readable by the user alone, so that it outlives restarts:
a page that holds it and `harmosearch query` (which reads it from the discovery file) keep
working with a server started again.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from harmosearch.errors import ConfigError

TOKEN_FILE = "server-token"
LOOPBACK_NAMES = frozenset({"localhost"})
DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,}")

Origin = tuple[str, str, int]  # scheme, host, port


@dataclass(frozen=True)
class Access:
    """Who gets in. `hosts`: names served beyond IP literals and localhost (--allow-host);
    `origins`: other sites whose pages may call the API, with CORS (--allow-origin)."""

    token: str = ""
    require_token: bool = False
    hosts: frozenset[str] = frozenset()
    origins: frozenset[Origin] = frozenset()

    def __post_init__(self) -> None:
        if self.require_token and not self.token:
            raise ConfigError("a server that requires a token needs one")

    @classmethod
    def of(
        cls,
        bind: str,
        token: str,
        require_token: bool = False,
        hosts: tuple[str, ...] = (),
        origins: tuple[str, ...] = (),
    ) -> Access:
        """The access of a server bound to `bind`: beyond loopback, the token is always required."""
        allowed = set()
        for origin in origins:
            parsed = parse_origin(origin)
            if parsed is None:
                raise ConfigError(f"--allow-origin {origin}: give a scheme, host and port, as http://photos.lan:8000")
            allowed.add(parsed)
        names = frozenset(_name(host) for host in hosts)
        return cls(token, require_token or not is_loopback(bind), names, frozenset(allowed))

    def host_allowed(self, header: str) -> bool:
        """Whether a Host header names this server: an IP address (a DNS-rebinding page has a
        name of its own, never a literal address), localhost, or a name given with --allow-host."""
        host = split_host(header)
        if host is None:
            return False
        return _is_ip(host[0]) or host[0] in LOOPBACK_NAMES or host[0] in self.hosts

    def origin(self, origin: str, scheme: str, host_header: str) -> Literal["own", "allowed"] | None:
        """Whose page sent a request: this server's own (same scheme, host and port as the Host
        header), one let in with --allow-origin, or another (None)."""
        parsed, host = parse_origin(origin), split_host(host_header)
        if parsed is None:
            return None
        if host is not None and parsed == (scheme, host[0], host[1] or DEFAULT_PORTS.get(scheme, 0)):
            return "own"
        return "allowed" if parsed in self.origins else None

    def token_matches(self, given: str | None) -> bool:
        """Whether `given` is the token, compared in constant time."""
        return bool(self.token) and given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def is_loopback(bind: str) -> bool:
    """Whether a server bound to this address is reachable from this machine alone."""
    host = bind.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" and names: all interfaces, or whatever the name leads to


def split_host(header: str) -> tuple[str, int | None] | None:
    """A Host header's host (lower case, without brackets or a trailing dot) and port; None
    when it is malformed."""
    host, port = header.strip(), ""
    if host.startswith("["):
        host, closed, rest = host[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")) or not _is_ip(host):
            return None
        port = rest[1:]
    elif ":" in host:
        host, _, port = host.partition(":")
        if ":" in port:  # an IPv6 address without brackets
            return None
    if not host or (port and not (port.isascii() and port.isdigit())):
        return None
    return _name(host), int(port) if port else None


def parse_origin(origin: str) -> Origin | None:
    """scheme, host and port of an Origin header or --allow-origin; None for anything else
    ("null", a path, a scheme other than http and https)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username is not None:
        return None
    return parts.scheme, _name(parts.hostname), port or DEFAULT_PORTS[parts.scheme]


def server_token(state: Path) -> str:
    """The user's server token: read from `state`/server-token, made there (mode 0600) the first
    time. Two servers starting at once agree on the first one written."""
    file = state / TOKEN_FILE
    try:
        return _read_token(file)
    except FileNotFoundError:
        pass
    partial = state / f".{TOKEN_FILE}.{os.getpid()}"
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(partial, file)  # never replaces a token another server has just written
        except FileExistsError:
            pass
        finally:
            partial.unlink()
        return _read_token(file)
    except OSError as exc:
        where = f"cannot keep the server's token in {state} ({exc.strerror})"
        raise ConfigError(f"{where}; set HARMOSEARCH_STATE to a folder you can write") from None


def _read_token(file: Path) -> str:
    if file.stat().st_mode & 0o077:
        raise ConfigError(f"{file} can be read by other users: remove it (a new token is made) or chmod 600 it")
    token = file.read_text(encoding="utf-8", errors="replace").strip()
    if not _TOKEN.fullmatch(token):
        raise ConfigError(f"{file} holds no token; remove it and a new one is made")
    return token


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _name(host: str) -> str:
    return host.lower().rstrip(".")
