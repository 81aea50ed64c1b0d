"""The warm path of `harmosearch query`: the discovery file, finding a live server, stale files,
and searching through the server with nothing heavy imported."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from harmosearch.config import load_config
from harmosearch.errors import ConfigError, QueryError
from harmosearch.indexing import build_index
from harmosearch.search import Index
from harmosearch.serve.client import DISCOVERY, Remote, find_server, index_url, remote_search
from harmosearch.serve.server import WarmServer

from .conftest import TEST_MODEL, run_cli_noting_imports
from .forked import HARMOSEARCH, run_command

CONFIG = load_config(
    overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0, "regions.max_regions": 12}
)
HEAVY = ("torch", "open_clip", "faiss", "pyarrow", "numpy")
PAGE_FIELDS = ("image_id", "width", "height")


@pytest.fixture()
def index(photos, tmp_path, test_encoder):
    build_index(photos, tmp_path / "index", CONFIG, encoder=test_encoder)
    return Index(tmp_path / "index", CONFIG, encoder=test_encoder)


def as_library(body):
    """The client's answer less the page's fields and the warnings: SearchResponse.to_dict()."""
    results = [{k: v for k, v in r.items() if k not in PAGE_FIELDS} for r in body["results"]]
    return {
        "query": body["query"],
        "lexemes": body["lexemes"],
        "confident_match": body["confident_match"],
        "results": results,
    }


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_discovery(index, **fields):
    record = {"pid": os.getpid(), "url": "http://127.0.0.1:9", "index": "index", "generation": 1, **fields}
    (index.path / DISCOVERY).write_text(json.dumps(record))


def test_a_running_server_is_found_and_answers_as_in_process(index, tmp_path):
    assert find_server(index.path) is None
    with WarmServer({"photos": index}, port=0, thumbnails=tmp_path / "thumbs") as server:
        record = json.loads((index.path / DISCOVERY).read_text())
        token = server.access.token
        assert record == {"pid": os.getpid(), "url": server.url, "index": "photos", "generation": 1, "token": token}
        assert (index.path / DISCOVERY).stat().st_mode & 0o777 == 0o600  # the token is the owner's
        found = find_server(index.path, timeout=30)  # a loaded machine may answer slowly
        assert found == Remote(index_url(server.url, "photos"), token)
        assert found.url == f"{server.url}/api/indexes/photos"
        cases = [
            ("red circle", {}),
            ("a blue star above a white ring", {"k": 3, "alpha": 0.2}),
            ("green cross", {"global_only": True, "negatives": ("red circle",), "min_score": -1.0}),
            ("x" * 1200, {"k": 2}),
            ("a red circle left of a blue star", {"k": 2, "refine": True}),  # boxes searched again
        ]
        for text, options in cases:
            body = remote_search(found, text, **options)
            expected = index.search(text, **options)
            assert as_library(body) == expected.to_dict()
            assert body["warnings"] == expected.warnings
        assert remote_search(found, "red circle", k=None, alpha=None) == remote_search(found, "red circle")
        with pytest.raises(QueryError, match="empty query"):
            remote_search(found, "   ")
        with pytest.raises(QueryError, match=r"alpha must (lie in|be a finite number)"):
            remote_search(found, "red circle", alpha=float("-inf"))
        # An option this server does not know: no answer, so the caller searches in-process.
        assert remote_search(found, "red circle", colour_of_the_sky="blue") is None
        assert remote_search(Remote(index_url(server.url, "nothing"), token), "red circle") is None
    assert not (index.path / DISCOVERY).exists()
    assert find_server(index.path) is None
    assert remote_search(found, "red circle") is None  # the server is gone


def test_stale_discovery_files_are_ignored_and_removed(index, tmp_path):
    write_discovery(index, pid=dead_pid())
    assert find_server(index.path) is None
    assert not (index.path / DISCOVERY).exists()

    write_discovery(index, url=f"http://127.0.0.1:{free_port()}")  # a live pid, but nothing listens
    assert find_server(index.path) is None
    assert not (index.path / DISCOVERY).exists()

    (index.path / DISCOVERY).write_text("{not json")
    assert find_server(index.path) is None
    assert not (index.path / DISCOVERY).exists()

    with WarmServer({"index": index}, port=0, thumbnails=tmp_path / "thumbs") as server:
        # Another process's file naming this address: whoever answers there is not that server.
        write_discovery(index, pid=os.getppid(), url=server.url)
        assert find_server(index.path) is None
        assert not (index.path / DISCOVERY).exists()


def test_a_server_too_busy_to_answer_is_passed_over_but_not_forgotten(index):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listening:  # accepts connections, never replies
        write_discovery(index, url=f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert find_server(index.path, timeout=0.2) is None
        assert (index.path / DISCOVERY).exists()  # its pid lives: it may answer the next query


def test_a_port_in_use_is_a_one_line_error(index, tmp_path):
    with WarmServer({"index": index}, port=0, thumbnails=tmp_path / "thumbs") as server:
        port = int(server.url.rsplit(":", 1)[1])
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port} .*pick another --port"):
            WarmServer({"index": index}, port=port, thumbnails=tmp_path / "thumbs")


def test_entering_a_warm_server_waits_for_its_discovery_file(index, tmp_path, monkeypatch):
    """uvicorn reports itself started before the discovery file is written; the `with` block
    must not begin in between (a slow disk made find_server miss a server that was up)."""
    announce = WarmServer._announce

    def slow_announce(self):
        time.sleep(0.5)
        announce(self)

    monkeypatch.setattr(WarmServer, "_announce", slow_announce)
    with WarmServer({"index": index}, port=0, thumbnails=tmp_path / "thumbs") as server:
        assert (index.path / DISCOVERY).exists()
        assert find_server(index.path, timeout=30).url == index_url(server.url, "index")


def test_a_server_for_an_older_generation_is_ignored(index, photos, test_encoder, tmp_path):
    with WarmServer({"index": index}, port=0, thumbnails=tmp_path / "thumbs") as server:
        assert find_server(index.path, timeout=30).url == index_url(server.url, "index")
        Image.new("RGB", (64, 48), (200, 20, 20)).save(photos / "new.png")
        build_index(photos, index.path, CONFIG, encoder=test_encoder)  # generation 2 on disk
        assert find_server(index.path) is None
        assert (index.path / DISCOVERY).exists()  # the server lives; it only serves generation 1
    assert not (index.path / DISCOVERY).exists()


def test_the_client_path_imports_nothing_heavy(index, tmp_path):
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from harmosearch.serve.client import find_server, remote_search\n"
        "body = remote_search(find_server(Path(sys.argv[1]), timeout=30), 'red circle', k=4)\n"
        f"print(json.dumps({{'body': body, 'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))\n"
    )
    with WarmServer({"index": index}, port=0, thumbnails=tmp_path / "thumbs"):
        result = subprocess.run(
            [sys.executable, "-c", probe, str(index.path)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["heavy"] == []
    assert as_library(out["body"]) == index.search("red circle", k=4).to_dict()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_signalled_and_withdraws_its_discovery_file(index, tmp_path, stop):
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harmosearch.serve.server import serve\n"
        "serve([Path(sys.argv[1])], port=0, thumbnails=Path(sys.argv[2]),\n"
        "      on_ready=lambda url, indexes: print(url, sorted(indexes), flush=True))\n"
    )
    server = run_command(script, [str(index.path), str(tmp_path / "thumbs")])  # a process of its own
    try:
        url, names = server.stdout.readline().split(" ", 1)
        assert names.strip() == "['index']"
        deadline = time.monotonic() + 30
        while (found := find_server(index.path)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert found.url == index_url(url, "index")
        assert json.loads((index.path / DISCOVERY).read_text())["pid"] == server.pid
        assert as_library(remote_search(found, "red circle")) == index.search("red circle").to_dict()
        server.send_signal(stop)
        server.wait(timeout=30)
    finally:
        server.kill()
        server.wait()
    assert server.returncode == (0 if stop == signal.SIGINT else -signal.SIGTERM), server.stderr.read()
    assert not (index.path / DISCOVERY).exists()
    assert find_server(index.path) is None


def test_cli_query_is_answered_by_the_running_server_without_heavy_imports(index, tmp_path):
    """`harmosearch query` with a server for its index: the same JSON as in-process, from a
    process that never imports torch, open_clip, faiss, pyarrow or numpy; without the server it
    searches in-process and prints the same."""
    args = ["query", "red circle left of a blue star", "--index", str(tmp_path / "index"), "-k", "4", "--json"]
    expected = index.search("red circle left of a blue star", k=4).to_dict()
    with WarmServer({"index": index}, port=0, thumbnails=tmp_path / "thumbs"):
        warm, loaded = run_cli_noting_imports(args, HEAVY)
    assert warm.returncode == 0, warm.stderr
    assert loaded == []
    assert json.loads(warm.stdout) == expected
    cold = run_command(HARMOSEARCH, args)
    stdout, stderr = cold.communicate(timeout=120)
    assert cold.returncode == 0, stderr
    assert json.loads(stdout) == expected


def test_serve_command_serves_until_sigterm(index, tmp_path):
    process = run_command(HARMOSEARCH, ["serve", "--index", str(tmp_path / "index"), "--port", "0"])
    try:
        line = process.stdout.readline()
        assert line.startswith("serving index at http://127.0.0.1:"), (line, process.stderr.read())
        url = line.split(" at ")[1].split("/ ")[0]
        deadline = time.monotonic() + 60  # the discovery file appears once the socket accepts
        while find_server(tmp_path / "index") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert find_server(tmp_path / "index").url == index_url(url, "index")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode in (0, 143) and "Traceback" not in process.stderr.read()
    assert not (tmp_path / "index" / DISCOVERY).exists()
