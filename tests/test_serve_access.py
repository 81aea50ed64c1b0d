"""Whom `harmosearch serve` answers, against real servers on this machine: only its own Host
names (no DNS rebinding), only its own pages' Origin, the token when bound beyond loopback, small
bodies and bounded queries, security headers, and answers that name no folder of the server.
Every route of the app's own table is tried, so a route added later cannot skip the checks."""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image
from starlette.routing import Mount, Route

from harmosearch.config import load_config
from harmosearch.errors import ConfigError
from harmosearch.indexing import build_index
from harmosearch.limits import MAX_K, MAX_NEGATIVES, MAX_QUERY_CHARS
from harmosearch.search import Index
from harmosearch.serve.access import TOKEN_FILE, Access, server_token
from harmosearch.serve.app import Served
from harmosearch.serve.client import DISCOVERY
from harmosearch.serve.guard import COOKIE, MAX_BODY_BYTES
from harmosearch.serve.server import WarmServer

from .conftest import TEST_MODEL, run_cli_noting_imports
from .forked import HARMOSEARCH, run_command

CONFIG = load_config(
    overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0, "regions.max_regions": 12}
)
HEAVY = ("torch", "open_clip", "faiss", "pyarrow", "numpy")
# What each POST route is asked; a POST route missing here fails the walk, so it gets one.
BODIES = {
    "/api/indexes/scenes/search": {"text": "red circle", "k": 2},
    "/api/indexes/scenes/similar": {"image_id": 0, "k": 2},
    "/api/indexes/scenes/region": {"image_id": 0, "box": [0, 0, 60, 60], "k": 2},
}
FOREIGN_HOSTS = ["attacker.example", "localhost.attacker.example", "127.0.0.1.nip.io", "[::1", "::1", "", "a b"]
# An absolute path: "/" and a name, where no word, "~", "." or URL goes on before it.
ABSOLUTE = re.compile(r"(?<![\w.~:/…-])/\w")


@pytest.fixture(scope="module")
def index(scenes, test_encoder, tmp_path_factory):
    """The scenes, plus a symlink out of the photo folder and a photo deleted since indexing."""
    root = tmp_path_factory.mktemp("serve-access")
    photos = root / "photos"
    shutil.copytree(scenes / "images", photos)
    Image.new("RGB", (300, 200), (10, 200, 60)).save(root / "outside.png")
    (photos / "zz_escape.png").symlink_to(root / "outside.png")
    Image.new("RGB", (64, 48), (200, 20, 20)).save(photos / "zz_gone.png")
    build_index(photos, root / "index", CONFIG, encoder=test_encoder)
    (photos / "zz_gone.png").unlink()
    return Index(root / "index", CONFIG, encoder=test_encoder)


def copy_of(index, folder, encoder):
    """The same index in another folder (the same photos), for a server of its own: each server
    announces itself in its indexes' folders."""
    shutil.copytree(index.path, folder, ignore=shutil.ignore_patterns(DISCOVERY))
    return Index(folder, CONFIG, encoder=encoder)


@pytest.fixture(scope="module")
def loopback(index, tmp_path_factory):
    with WarmServer({"scenes": index}, port=0, thumbnails=tmp_path_factory.mktemp("thumbs")) as server:
        yield server


@pytest.fixture(scope="module")
def everywhere(index, test_encoder, tmp_path_factory):
    """Bound to every interface (so the token is required), reached at 127.0.0.1."""
    root = tmp_path_factory.mktemp("everywhere")
    served = {"scenes": copy_of(index, root / "index", test_encoder)}
    with WarmServer(served, host="0.0.0.0", port=0, thumbnails=root / "thumbs") as server:
        yield server


def ask(server, method, target, body=None, headers=None, raw=None):
    """One request exactly as given: any Host (None: none at all), Origin or body."""
    port = int(server.url.rsplit(":", 1)[1])
    headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    if data is not None:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}
    for name, value in headers.items():
        if value is not None:
            connection.putheader(name, value)
    connection.endheaders(data)
    response = connection.getresponse()
    answer = response.status, response.headers, response.read()
    connection.close()
    return answer


def every_route(app):
    """(method, target, body) for each route of the app's own table, and the paths seen."""
    requests = []
    for route in app.routes:
        if isinstance(route, Mount):  # the page's files
            requests.append(("GET", f"{route.path}/app.js", None))
            continue
        assert isinstance(route, Route), f"{route!r}: a kind of route this test does not know how to try"
        target = route.path.format(name="scenes", image_id=0)
        for method in sorted(route.methods - {"HEAD"}):
            requests.append((method, target, BODIES[target] if method == "POST" else None))
    targets = {target for _, target, _ in requests}
    assert {"/", "/docs", "/openapi.json", "/static/app.js", *BODIES} <= targets
    assert {
        "/api/health",
        "/api/indexes",
        "/api/indexes/scenes/images/0",
        "/api/indexes/scenes/thumbnails/0",
    } <= targets
    return requests


def test_hosts_origins_and_tokens_are_read_strictly(tmp_path):
    access = Access.of("127.0.0.1", "", hosts=("Photos.LAN.",), origins=("https://photos.lan",))
    assert not access.require_token
    for host in ["127.0.0.1", "127.0.0.1:8000", "10.0.0.7:1", "[::1]:8000", "[fe80::1]", "localhost:8", "LOCALHOST."]:
        assert access.host_allowed(host), host
    assert access.host_allowed("photos.lan:8000") and access.host_allowed("PHOTOS.lan")
    for host in [*FOREIGN_HOSTS, "127.1", "0x7f.0.0.1", "localhost:x", "[::1]x", "photos.lan.attacker.example"]:
        assert not access.host_allowed(host), host
    assert access.origin("http://127.0.0.1:8000", "http", "127.0.0.1:8000") == "own"
    assert access.origin("http://localhost", "http", "localhost:80") == "own"
    assert access.origin("https://photos.lan:443", "http", "127.0.0.1:8000") == "allowed"
    for origin in ["http://localhost:8000", "https://127.0.0.1:8000", "http://127.0.0.1:8001", "null", "file://"]:
        assert access.origin(origin, "http", "127.0.0.1:8000") is None, origin
    assert Access.of("0.0.0.0", "t" * 43).require_token and Access.of("::", "t" * 43).require_token
    assert Access.of("localhost", "t" * 43, require_token=True).require_token
    assert not Access.of("::1", "").require_token
    with pytest.raises(ConfigError, match=r"--allow-origin http://photos\.lan/app: give a scheme, host and port"):
        Access.of("127.0.0.1", "", origins=("http://photos.lan/app",))
    token = Access("t" * 43, require_token=True)
    assert token.token_matches("t" * 43) and not token.token_matches("t" * 42) and not token.token_matches(None)
    assert not token.token_matches("ť" * 43)  # not ASCII: refused, not an error


def test_the_token_is_made_once_and_kept_for_the_user_alone(tmp_path, everywhere):
    state = tmp_path / "state"
    token = server_token(state)
    assert (state / TOKEN_FILE).stat().st_mode & 0o777 == 0o600
    assert server_token(state) == token and len(token) >= 40  # a restart keeps it
    assert server_token(tmp_path / "other") != token
    (state / TOKEN_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="can be read by other users"):
        server_token(state)
    (state / TOKEN_FILE).write_text("short")
    (state / TOKEN_FILE).chmod(0o600)
    with pytest.raises(ConfigError, match="holds no token; remove it"):
        server_token(state)
    # The servers of these tests keep theirs in HARMOSEARCH_STATE (conftest), each index's
    # discovery file carries it, and both are the user's alone.
    kept = server_token(load_config().paths.state_dir)
    assert everywhere.access.token == kept
    discovery = everywhere.indexes["scenes"].path / DISCOVERY
    assert discovery.stat().st_mode & 0o777 == 0o600
    assert json.loads(discovery.read_text())["token"] == kept


def test_every_route_checks_host_and_origin(loopback):
    port = loopback.url.rsplit(":", 1)[1]
    for method, target, body in every_route(loopback.app):
        assert ask(loopback, method, target, body)[0] == 200, target
        for host in [f"attacker.example:{port}", "attacker.example", *FOREIGN_HOSTS]:
            status, headers, answer = ask(loopback, method, target, body, {"Host": host})
            assert status == 400, (target, host)
            assert "answers to its IP addresses and localhost only" in json.loads(answer)["detail"]
            assert headers["X-Frame-Options"] == "DENY"
        # uvicorn refuses a request without Host when it reads the headers and closes the
        # connection, so it is asked without a body: a body sent after the refusal meets a closed
        # socket, and on a loaded machine the reset could come before the answer is read.
        assert ask(loopback, method, target, None, {"Host": None})[0] == 400
        for origin in ["http://attacker.example", f"http://localhost:{port}", "null"]:
            status, headers, answer = ask(loopback, method, target, body, {"Origin": origin})
            assert status == 403 and "other sites' pages are refused" in json.loads(answer)["detail"], (target, origin)
            assert "Access-Control-Allow-Origin" not in headers
        own = ask(loopback, method, target, body, {"Origin": f"http://127.0.0.1:{port}"})
        assert own[0] == 200 and "Access-Control-Allow-Origin" not in own[1]
        by_name = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
        assert ask(loopback, method, target, body, by_name)[0] == 200
    two_hosts = ask(loopback, "GET", "/api/health", headers={"host": "attacker.example", "Host": f"127.0.0.1:{port}"})
    assert two_hosts[0] == 400


def test_every_route_asks_for_the_token_beyond_loopback(everywhere):
    token = everywhere.access.token
    for method, target, body in every_route(everywhere.app):
        for credentials in [{}, {"Authorization": f"Bearer {token[:-1]}"}, {"Cookie": f"{COOKIE}={token}x"}]:
            status, headers, answer = ask(everywhere, method, target, body, credentials)
            assert status == 401 and "asks for its token" in json.loads(answer)["detail"], (target, credentials)
            assert headers["WWW-Authenticate"] == "Bearer"
        assert ask(everywhere, method, target, body, {"Authorization": f"Bearer {token}"})[0] == 200, target
        assert ask(everywhere, method, target, body, {"Cookie": f"other=1; {COOKIE}={token}"})[0] == 200, target
        with_token = {"Authorization": f"Bearer {token}"}
        assert ask(everywhere, method, target, body, {**with_token, "Host": "attacker.example"})[0] == 400
        assert ask(everywhere, method, target, body, {**with_token, "Origin": "http://attacker.example"})[0] == 403


def test_the_page_takes_its_token_once_and_sets_a_strict_cookie(everywhere):
    token = everywhere.access.token
    assert everywhere.page == f"{everywhere.url}/?token={token}"
    status, headers, _ = ask(everywhere, "GET", f"/?token={token}")
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={token};")
    assert {"HttpOnly", "SameSite=strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    assert "Secure" not in cookie  # plain http on this machine: a Secure cookie would never come back
    assert ask(everywhere, "GET", f"/?token={token[:-1]}")[0] == 401
    assert ask(everywhere, "GET", f"/api/indexes?token={token}")[0] == 401  # the address carries it to the page only
    behind_tls = ask(everywhere, "GET", f"/?token={token}", headers={"X-Forwarded-Proto": "https"})[1]
    assert "Secure" in behind_tls["Set-Cookie"]  # uvicorn trusts the proxy headers of 127.0.0.1


def test_cors_only_for_the_origin_let_in(index, tmp_path):
    access = Access.of("127.0.0.1", "", origins=("http://photos.lan:9000",))
    with WarmServer({"scenes": index}, port=0, thumbnails=tmp_path / "thumbs", access=access) as server:
        let_in = {"Origin": "http://photos.lan:9000"}
        preflight = {
            **let_in,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        status, headers, _ = ask(server, "OPTIONS", "/api/indexes/scenes/search", headers=preflight)
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "http://photos.lan:9000"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        status, headers, _ = ask(
            server, "POST", "/api/indexes/scenes/search", BODIES["/api/indexes/scenes/search"], let_in
        )
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://photos.lan:9000"
        assert headers["Vary"] == "Origin"
        for origin in ["http://photos.lan:9001", "https://photos.lan:9000", "http://attacker.example"]:
            status, headers, _ = ask(
                server, "OPTIONS", "/api/indexes/scenes/search", headers={**preflight, "Origin": origin}
            )
            assert status == 403 and "Access-Control-Allow-Origin" not in headers


def test_security_headers_on_the_page_its_files_and_refusals(loopback):
    for target, host in [("/", None), ("/static/app.js", None), ("/static/style.css", None), ("/", "evil.example")]:
        _, headers, _ = ask(loopback, "GET", target, headers={"Host": host} if host else None)
        policy = headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
    _, headers, _ = ask(loopback, "GET", "/docs")
    assert headers["Content-Security-Policy"] == "frame-ancestors 'none'"  # Swagger UI comes from a CDN
    _, headers, _ = ask(loopback, "GET", "/api/indexes/scenes/images/0")
    assert headers.get_all("X-Content-Type-Options") == ["nosniff"]  # set once, not twice


def test_answers_name_no_folder_of_the_server(loopback, index):
    gone = list(index.reader.images["path"]).index("zz_gone.png")
    escape = list(index.reader.images["path"]).index("zz_escape.png")
    refusals = [
        ("POST", "/api/indexes/scenes/similar", {"image_id": -1}, 400),
        ("POST", "/api/indexes/scenes/similar", {"image_id": 99}, 400),
        ("POST", "/api/indexes/scenes/region", {"image_id": 0, "box": [50, 50, 10, 80.5]}, 400),
        ("POST", "/api/indexes/scenes/search", {"text": "red", "under": [str(index.photos_root.parent)]}, 400),
        ("GET", f"/api/indexes/scenes/images/{gone}", None, 404),
        ("GET", f"/api/indexes/scenes/thumbnails/{gone}", None, 404),
        ("GET", f"/api/indexes/scenes/images/{escape}", None, 403),
        ("POST", "/api/indexes/scenes/region", {"image_id": escape, "box": [0, 0, 9, 9]}, 400),
    ]
    details = []
    for method, target, body, expected in refusals:
        status, _, answer = ask(loopback, method, target, body)
        detail = json.loads(answer)["detail"]
        assert status == expected, (target, body, detail)
        assert not ABSOLUTE.search(detail) and "np." not in detail, detail
        details.append(detail)
    assert details[0] == "no image -1 in this index: image ids run from 0 to 13"
    assert details[2] == "box [50, 50, 10, 80.5] holds no pixels of image 0 (224x224)"
    assert details[5] == f"image {gone} (zz_gone.png) is no longer in the photo folder; re-run harmosearch index"
    info = ask(loopback, "GET", "/api/indexes/scenes")[2].decode()
    assert "photos_root" not in json.loads(info) and not ABSOLUTE.search(info)
    served = Served({"scenes": index}, index.path.parent / "thumbnails")
    warning = f"the photo folder {index.photos_root} no longer exists; run: harmosearch index NEW --index {index.path}"
    assert (
        served.scrub(warning)
        == "the photo folder …/photos no longer exists; run: harmosearch index NEW --index …/index"
    )
    assert (
        served.scrub("model '/srv/my models/run 1/final.pt' (no such file)")
        == "model '…/my models/run 1/final.pt' (no such file)"
    )


def test_oversized_requests_and_queries_get_a_4xx(loopback):
    search = "/api/indexes/scenes/search"
    padded = json.dumps({"text": "red circle", "under": ["x" * MAX_BODY_BYTES]}).encode()
    status, _, answer = ask(loopback, "POST", search, raw=padded)
    assert status == 413 and "over 64 KiB" in json.loads(answer)["detail"]
    # A length it never sends: refused at once, not waited for.
    claimed = ask(loopback, "POST", search, raw=b"{}", headers={"Content-Length": str(10**9)})
    assert claimed[0] == 413
    chunks = (padded[i : i + 4096] for i in range(0, len(padded), 4096))
    port = int(loopback.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", search, chunks, {"Content-Type": "application/json"}, encode_chunked=True)
    assert connection.getresponse().status == 413  # no length given: counted as it comes
    connection.close()
    cases = [
        ({"text": "x" * (MAX_QUERY_CHARS + 1)}, 422, f"text: String should have at most {MAX_QUERY_CHARS} characters"),
        ({"text": "red", "negatives": ["y" * (MAX_QUERY_CHARS + 1)]}, 422, "negatives.0: String should have at most"),
        ({"text": "red", "negatives": ["blue"] * (MAX_NEGATIVES + 1)}, 400, f"at most {MAX_NEGATIVES} --not phrases"),
        ({"text": "red", "k": 10**9}, 400, f"k must be at most {MAX_K}, got 1000000000"),
        ({"text": "red", "k": MAX_K}, 200, None),
        ({"text": "x" * MAX_QUERY_CHARS, "negatives": ["blue"] * MAX_NEGATIVES, "k": 1}, 200, None),
    ]
    for body, expected, message in cases:
        status, _, answer = ask(loopback, "POST", search, body)
        assert status == expected, (body, answer[:200])
        assert message is None or message in json.loads(answer)["detail"]
    status, _, answer = ask(loopback, "POST", "/api/indexes/scenes/similar", {"image_id": 0, "k": MAX_K + 1})
    assert status == 400 and f"k must be at most {MAX_K}" in json.loads(answer)["detail"]


def test_cli_query_goes_through_a_server_that_asks_for_its_token(everywhere, index):
    served = everywhere.indexes["scenes"].path
    args = ["query", "red circle left of a blue star", "--index", str(served), "-k", "4", "--json"]
    warm, loaded = run_cli_noting_imports(args, HEAVY)
    assert warm.returncode == 0, warm.stderr
    assert loaded == []  # answered by the server: nothing heavy imported
    assert json.loads(warm.stdout) == index.search("red circle left of a blue star", k=4).to_dict()
    too_many = [sys.executable, "-m", "harmosearch", *args[:-3], "-k", str(MAX_K + 1)]
    refused = subprocess.run(too_many, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2  # refused by the server, as the library refuses it
    assert refused.stderr == f"error: k must be at most {MAX_K}, got {MAX_K + 1}\n"


def test_serve_on_every_interface_warns_and_prints_the_address_with_its_token(index, test_encoder, tmp_path):
    own = copy_of(index, tmp_path / "index", test_encoder).path
    # Processes of their own (tests/forked.py).
    bad = run_command(HARMOSEARCH, ["serve", "--index", str(own), "--allow-origin", "photos.lan"])
    _, stderr = bad.communicate(timeout=60)
    assert bad.returncode == 2 and "--allow-origin photos.lan: give a scheme, host and port" in stderr
    command = ["serve", "--index", str(own), "--host", "0.0.0.0", "--port", "0"]
    env = {**os.environ, "HARMOSEARCH_STATE": str(tmp_path / "state")}
    process = run_command(HARMOSEARCH, command, env)
    try:
        line = process.stdout.readline()
        token = server_token(tmp_path / "state")
        assert re.fullmatch(rf"serving index at http://127\.0\.0\.1:\d+/\?token={token} \(Ctrl-C stops\)\n", line), line
        warning = process.stderr.readline()
        assert warning.startswith("warning: bound to 0.0.0.0, other machines can reach this server")
        assert f"/?token={token}" in warning and warning.count("\n") == 1
        deadline = time.monotonic() + 60  # the discovery file appears once the socket accepts
        while not (own / DISCOVERY).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = int(line.split("/?")[0].rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", f"/?token={token}")  # the printed address opens the page
        assert connection.getresponse().status == 303
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode in (0, 143) and not (own / DISCOVERY).exists()
