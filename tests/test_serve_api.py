"""The HTTP API of `harmosearch serve`: same answers as the library, one-line 4xx for bad
requests, files only by id and only from inside the photo folder, concurrency."""

import http.client
import io
import json
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from harmosearch.config import load_config
from harmosearch.indexing import build_index
from harmosearch.search import Index
from harmosearch.serve.app import STATIC, THUMBNAIL_SIDE, create_app
from harmosearch.serve.server import WarmServer

from .conftest import TEST_MODEL

CONFIG = load_config(
    overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0, "regions.max_regions": 12}
)
PAGE_FIELDS = ("image_id", "width", "height")


@pytest.fixture(scope="module")
def served(scenes, test_encoder, tmp_path_factory):
    """An index over the scenes plus a symlink that leads out of the photo folder."""
    root = tmp_path_factory.mktemp("serve-api")
    photos = root / "photos"
    shutil.copytree(scenes / "images", photos)
    Image.new("RGB", (300, 200), (10, 200, 60)).save(root / "outside.png")
    (photos / "zz_escape.png").symlink_to(root / "outside.png")
    build_index(photos, root / "index", CONFIG, encoder=test_encoder)
    index = Index(root / "index", CONFIG, encoder=test_encoder)
    return index, root / "thumbnails"


@pytest.fixture(scope="module")
def client(served):
    index, thumbnails = served
    # Named by address: the app answers no other name (tests/test_serve_access.py).
    with TestClient(create_app({"scenes": index}, thumbnails), base_url="http://127.0.0.1") as test_client:
        yield test_client


def library_part(body):
    """The API's search answer less what it adds for the page: SearchResponse.to_dict()."""
    return {
        "query": body["query"],
        "lexemes": body["lexemes"],
        "confident_match": body["confident_match"],
        "results": [{k: v for k, v in r.items() if k not in PAGE_FIELDS} for r in body["results"]],
    }


def test_openapi_schema_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/api/health",
        "/api/indexes",
        "/api/indexes/{name}",
        "/api/indexes/{name}/search",
        "/api/indexes/{name}/similar",
        "/api/indexes/{name}/region",
        "/api/indexes/{name}/images/{image_id}",
        "/api/indexes/{name}/thumbnails/{image_id}",
    } <= paths
    query = schema["components"]["schemas"]["TextQuery"]
    assert set(query["properties"]) == {
        "text",
        "k",
        "alpha",
        "global_only",
        "negatives",
        "min_score",
        "after",
        "before",
        "under",
        "sort",
        "relations",
        "relation_weight",
        "refine",
    }
    assert query["additionalProperties"] is False
    assert "Ranking" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_page_and_its_assets_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "/static/style.css" in page.text
    for asset in sorted(STATIC.iterdir()):
        served_text = client.get("/" if asset.name == "index.html" else f"/static/{asset.name}").text
        assert served_text == asset.read_text()
        assert not re.search(r"https?:|//[a-z]|url\(|@import", served_text), asset.name  # nothing from elsewhere


def test_indexes_and_info(client, served):
    index, _ = served
    assert client.get("/api/indexes").json() == [
        {"name": "scenes", "images": 13, "regions": index.reader.n_regions, "model": TEST_MODEL, "generation": 1}
    ]
    info = client.get("/api/indexes/scenes").json()
    assert info["name"] == "scenes" and info["images"] == 13 and info["model"]["spec"] == TEST_MODEL
    assert info["config"]["search"]["alpha"] == CONFIG.search.alpha and info["size_bytes"] > 0
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["indexes"] == {"scenes": 1}


@pytest.mark.parametrize(
    "options",
    [
        {"text": "red circle"},
        {"text": "a small blue star to the left of a green ring", "k": 4, "alpha": 0.2},
        {"text": "yellow square", "global_only": True, "k": 13},
        {"text": "white cross", "negatives": ["red circle", "black star"], "min_score": -0.5},
    ],
)
def test_search_answers_as_the_library(client, served, options):
    index, _ = served
    response = client.post("/api/indexes/scenes/search", json=options)
    assert response.status_code == 200
    body = response.json()
    text = options.pop("text")
    options["negatives"] = tuple(options.get("negatives", ()))
    expected = index.search(text, **options)
    assert library_part(body) == expected.to_dict()
    assert body["warnings"] == expected.warnings
    for item, result in zip(body["results"], expected.results, strict=True):
        assert (item["image_id"], item["width"], item["height"]) == (result.image_id, result.width, result.height)
        assert index.reader.images["path"][item["image_id"]] == item["path"]


def test_similar_and_region_answer_as_the_library(client, served):
    index, _ = served
    body = client.post("/api/indexes/scenes/similar", json={"image_id": 4, "k": 5}).json()
    assert library_part(body) == index.similar(4, k=5).to_dict()
    request = {"image_id": 2, "box": [20, 30, 150.5, 160], "k": 6, "alpha": 0.25}
    body = client.post("/api/indexes/scenes/region", json=request).json()
    assert library_part(body) == index.search_region(2, (20, 30, 150.5, 160), k=6, alpha=0.25).to_dict()
    assert body["lexemes"] == ["region"] and len(body["results"]) == 6


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("search", {"text": "red circle", "k": 0}, 400, "k must be at least 1, got 0"),
        ("search", {"text": "red circle", "k": "ten"}, 422, "k: Input should be a valid integer"),
        ("search", {"text": "red circle", "alpha": 1.5}, 400, "alpha must lie in [0, 1], got 1.5"),
        ("search", {"text": "red circle", "colour_of_the_sky": "blue"}, 422, "unknown option 'colour_of_the_sky'"),
        ("search", {"text": "  "}, 400, "empty query"),
        ("search", {"text": "red", "negatives": "car"}, 422, "negatives: Input should be a valid list"),
        ("similar", {"image_id": 99}, 400, "no image 99 in"),
        ("similar", {"image_id": -1}, 400, "no image -1 in"),
        ("similar", {"image_id": 1.5}, 422, "image_id: Input should be a valid integer"),
        ("region", {"image_id": 0, "box": [0, 0, 9, 9], "alpha": -0.1}, 400, "alpha must lie in [0, 1]"),
        ("similar", {}, 422, "image_id: Field required"),
        ("region", {"image_id": 0, "box": [1, 2, 3]}, 422, "box.3: Field required"),
        ("region", {"image_id": 0, "box": [50, 50, 10, 80]}, 400, "holds no pixels of image 0"),
        ("region", {"image_id": 0, "box": [500, 500, 600, 600]}, 400, "holds no pixels of image 0"),
    ],
)
def test_bad_parameters_get_4xx_with_one_line(client, path, body, status, message):
    response = client.post(f"/api/indexes/scenes/{path}", json=body)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    assert message in detail


def test_bad_requests_outside_the_body(client):
    cases = [
        (
            client.post(
                "/api/indexes/scenes/search", content=b"{not json", headers={"content-type": "application/json"}
            ),
            422,
            "not valid JSON",
        ),
        (client.post("/api/indexes/holiday/search", json={"text": "red"}), 404, "no index named 'holiday'"),
        (client.get("/api/indexes/holiday"), 404, "this server has scenes"),
        (client.get("/api/indexes/scenes/images/13"), 404, "no image 13 in index 'scenes'"),
        (client.get("/api/indexes/scenes/images/-1"), 422, "image_id: Input should be greater than or equal to 0"),
        (client.get("/api/indexes/scenes/thumbnails/x"), 422, "image_id: Input should be a valid integer"),
        (client.get("/api/nothing"), 404, "Not Found"),
    ]
    for response, status, message in cases:
        assert response.status_code == status
        assert message in response.json()["detail"] and "\n" not in response.json()["detail"]


def test_originals_and_thumbnails_by_id(client, served):
    index, thumbnails = served
    for image_id in (0, 7):
        original = client.get(f"/api/indexes/scenes/images/{image_id}")
        assert original.status_code == 200 and original.headers["content-type"] == "image/png"
        assert original.content == index.image_file(image_id).read_bytes()
        small = client.get(f"/api/indexes/scenes/thumbnails/{image_id}")
        assert small.status_code == 200 and small.headers["content-type"] == "image/jpeg"
        picture = Image.open(io.BytesIO(small.content))
        assert picture.format == "JPEG" and max(picture.size) <= THUMBNAIL_SIDE
        assert picture.size == Image.open(index.image_file(image_id)).size  # scenes are below the side
    cached = sorted(thumbnails.rglob("*.jpg"))
    assert len(cached) == 2
    sha = str(index.reader.images["sha256"][7])
    assert any(path.name == f"{sha}.jpg" for path in cached)
    stamps = [path.stat().st_mtime_ns for path in cached]
    assert client.get("/api/indexes/scenes/thumbnails/7").status_code == 200
    assert [path.stat().st_mtime_ns for path in cached] == stamps  # made once


def test_a_symlink_out_of_the_photo_folder_is_refused(client, served):
    index, thumbnails = served
    escape = list(index.reader.images["path"]).index("zz_escape.png")
    for kind in ("images", "thumbnails"):
        response = client.get(f"/api/indexes/scenes/{kind}/{escape}")
        assert response.status_code == 403
        assert "outside the photo folder" in response.json()["detail"]
    assert not any(thumbnails.rglob(f"{index.reader.images['sha256'][escape]}.jpg"))
    response = client.post("/api/indexes/scenes/region", json={"image_id": escape, "box": [0, 0, 50, 50]})
    assert response.status_code == 400 and "outside the photo folder" in response.json()["detail"]


@pytest.fixture(scope="module")
def server(served):
    index, thumbnails = served
    with WarmServer({"scenes": index}, port=0, thumbnails=thumbnails) as warm:
        yield warm


def raw_get(server, target):
    """GET exactly this request target, without a client normalising '..' away."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("GET", target, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_traversal_attempts_get_nothing_but_4xx(server):
    secret = b"root:"
    targets = [
        "/static/../../../../etc/passwd",
        "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/api/indexes/scenes/images/..%2f..%2f..%2fetc%2fpasswd",
        "/api/indexes/scenes/images/0/../../../../etc/passwd",
        "/api/indexes/..%2f..%2f..%2fetc/images/0",
        "/api/indexes/scenes/thumbnails/%2e%2e",
        "/static/%2fetc%2fpasswd",
        "//etc/passwd",
    ]
    for target in targets:
        status, body = raw_get(server, target)
        assert 400 <= status < 500, target
        assert secret not in body, target


def test_fifty_concurrent_searches_answer_as_sequential_ones(server, served):
    index, _ = served
    colours = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
    shapes = ("circle", "square", "triangle", "star", "cross", "ring")
    queries = [f"{c} {s}" for c in colours for s in shapes] + ["red circle above a blue star", "stripes"]
    queries[1::7] = [f"{q} next to a white star" for q in queries[1::7]]
    assert len(queries) == 50

    def ask(text):
        host, port = server.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request(
            "POST",
            "/api/indexes/scenes/search",
            json.dumps({"text": text, "k": 5}),
            {"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())

    sequential = [ask(q) for q in queries]
    start = threading.Barrier(len(queries))

    def together(text):
        start.wait()
        return ask(text)

    with ThreadPoolExecutor(50) as pool:
        concurrent = list(pool.map(together, queries))
    assert concurrent == sequential
    for text, body in zip(queries, sequential, strict=True):
        assert library_part(body) == index.search(text, k=5).to_dict()


def test_a_slow_search_does_not_block_other_requests(server, served, monkeypatch):
    index, _ = served
    release = threading.Event()

    def slow_search(*args, **kwargs):
        release.wait(10)
        return Index.search(index, *args, **kwargs)

    monkeypatch.setattr(index, "search", slow_search)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(lambda: raw_post(server, "/api/indexes/scenes/search", {"text": "red circle"}))
        time.sleep(0.2)  # the search is now waiting in its worker thread
        started = time.perf_counter()
        status, body = raw_get(server, "/api/health")
        waited = time.perf_counter() - started
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert not pending.done()
        release.set()
        assert pending.result(timeout=30)[0] == 200
    assert waited < 5  # answered while the search still ran (it held for up to 10 s)


def raw_post(server, target, body):
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", target, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())
