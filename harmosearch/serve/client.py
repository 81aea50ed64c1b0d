"""The CLI's side of a warm server: find one serving an index, and search through it.

Only the standard library is used here. A `harmosearch query` answered by a running server must
never import torch, open_clip, faiss or pyarrow: those imports alone take seconds.

While a server runs it keeps a discovery file, `server.json`, in each index folder it serves:

    {"pid": 4242, "url": "http://127.0.0.1:8000", "index": "holiday", "generation": 3, "token": "..."}

It is readable by its owner alone: its token is what the server asks of every request when
bound beyond loopback, and the client sends it with each (`Authorization: Bearer`). It is
removed when the server stops. A file left by a server that died (its pid is gone, its address
refuses connections or answers as another server) is removed by `find_server`; a server that
serves an older generation of the index than the one on disk, or is too busy to answer within
the timeout, is passed over (its file stays: it is alive).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmosearch.errors import QueryError
from harmosearch.indexes import generation_of
from harmosearch.limits import cut_query

DISCOVERY = "server.json"
# Servers are local: a proxy configured in the environment must not see these requests.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_BUSY = object()  # what _get_json answers when the address accepted but did not reply in time


@dataclass(frozen=True)
class Remote:
    """One index on a running server: its API address (an `index_url`) and the server's token."""

    url: str
    token: str = ""

    def request(self, url: str, body: dict[str, Any] | None = None) -> urllib.request.Request:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if body is None:
            return urllib.request.Request(url, headers=headers)
        data = json.dumps(body).encode("utf-8")
        return urllib.request.Request(url, data, {**headers, "Content-Type": "application/json"}, method="POST")


def index_url(server_url: str, index_name: str) -> str:
    """The API address of one index on a server."""
    return f"{server_url.rstrip('/')}/api/indexes/{urllib.parse.quote(index_name, safe='')}"


def find_server(index_path: Path, timeout: float = 1.0) -> Remote | None:
    """The running server for this index, or None when none is running, or it serves another
    generation of the index. Stale files are removed."""
    file = Path(index_path) / DISCOVERY
    try:
        text = file.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        record = json.loads(text)
        pid, url, name, generation = record["pid"], record["url"], record["index"], record["generation"]
        remote = Remote(index_url(url, name), str(record.get("token", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        _remove_if_unchanged(file, text)
        return None
    health = _get_json(remote.request(f"{url}/api/health"), timeout) if _alive(pid) else None
    if health is _BUSY:
        return None
    if not isinstance(health, dict) or health.get("pid") != pid or name not in health.get("indexes", {}):
        _remove_if_unchanged(file, text)
        return None
    if generation != generation_of(Path(index_path)) or health["indexes"][name] != generation:
        return None
    return remote


def remote_search(index: Remote, text: str, timeout: float = 60.0, **options: Any) -> dict[str, Any] | None:
    """Search an index through its server (`index` as `find_server` returns it).

    options are those of `Index.search` (k, alpha, global_only, negatives, min_score, relations,
    relation_weight, refine); None
    means the server's default. Returns `SearchResponse.to_dict()` plus "warnings" and, for
    each result, "image_id", "width" and "height". Raises QueryError for a query the server
    refuses (the message `Index.search` would give); returns None when the server cannot
    answer (gone, or too old to know an option), so that the caller searches in-process. A
    text over MAX_QUERY_CHARS, which the server refuses, is cut here as `Index.search` cuts it.
    """
    text, cut = cut_query(text)
    body = {"text": text, **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items() if v is not None}}
    try:
        with _OPENER.open(index.request(f"{index.url}/search", body), timeout=timeout) as reply:
            answer = json.loads(reply.read())
            if cut:
                answer["warnings"] = [cut, *answer.get("warnings", [])]
            return answer
    except urllib.error.HTTPError as exc:
        if exc.code == 400:
            raise QueryError(_detail(exc)) from None
        return None
    except (OSError, ValueError):  # URLError, refused connections and timeouts are OSErrors
        return None


def _get_json(request: urllib.request.Request, timeout: float) -> Any:
    """The JSON a GET answers; None when nothing answers there (or not JSON); _BUSY on a timeout."""
    try:
        with _OPENER.open(request, timeout=timeout) as reply:
            return json.loads(reply.read())
    except TimeoutError:
        return _BUSY
    except urllib.error.URLError as exc:
        return _BUSY if isinstance(exc.reason, TimeoutError) else None
    except (OSError, ValueError):
        return None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove_if_unchanged(file: Path, text: str) -> None:
    """Remove a stale discovery file, unless a new server has just replaced it."""
    try:
        if file.read_text(encoding="utf-8") == text:
            file.unlink()
    except OSError:
        pass


def _detail(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["detail"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"the server refused the query (HTTP {error.code})"
