"""The page of `harmosearch serve`, driven end to end in a real headless browser: Debian's
chromium under Playwright, against a real uvicorn server on a free local port that asks for its
token, which the page takes once from the address the server prints.

The browser is part of the test environment (.ci/run installs it): without /usr/bin/chromium
these tests fail, saying so. A run that cannot have it says so itself: -m "not browser"."""

import json
import secrets
import shutil
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from harmosearch.config import load_config
from harmosearch.indexing import build_index
from harmosearch.search import Index
from harmosearch.serve.access import Access
from harmosearch.serve.guard import COOKIE
from harmosearch.serve.server import WarmServer

from .conftest import TEST_MODEL

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download is not reachable here; the system chromium, offline.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
CONFIG = load_config(
    overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0, "regions.max_regions": 12}
)
PIXEL = 1.0  # tolerance, in screen pixels, for where a box is drawn

pytestmark = pytest.mark.browser


def require_chromium(path: Path = CHROMIUM) -> None:
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: install Debian's chromium (apt-get install chromium, as .ci/run does), "
            "or leave the browser tests out with -m 'not browser'",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def server(scenes, test_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-browser")
    photos = root / "photos"
    shutil.copytree(scenes / "images", photos)
    wide = Image.new("RGB", (320, 180), (90, 120, 150))  # not square: x and y scale differently
    ImageDraw.Draw(wide).ellipse((200, 40, 280, 120), fill=(220, 30, 30))
    wide.save(photos / "wide.png")
    build_index(photos, root / "index", CONFIG, encoder=test_encoder)
    index = Index(root / "index", CONFIG, encoder=test_encoder)
    access = Access(secrets.token_urlsafe(32), require_token=True)
    with WarmServer({"scenes": index}, port=0, thumbnails=root / "thumbnails", access=access) as warm:
        yield warm


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def watched(page, server):
    """Every page error, console error and request to another site, noted in `page.problems`."""
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on(
        "request",
        lambda r: r.url.startswith((server.url, "data:")) or problems.append(f"request elsewhere: {r.url}"),
    )
    page.problems = problems


@pytest.fixture()
def page(browser, server):
    # Playwright's wait_for_function evaluates its text in the page, which the page's
    # Content-Security-Policy forbids (no 'unsafe-eval'); the page itself is checked under it in
    # test_the_page_works_under_its_content_security_policy.
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    watched(page, server)
    page.goto(server.page)
    assert page.url == f"{server.url}/"  # the token is out of the address bar (and history)
    page.wait_for_function("document.getElementById('status').textContent.includes('images')")
    yield page
    context.close()
    assert page.problems == []


def api(server, kind, body):
    request = urllib.request.Request(
        f"{server.url}/api/indexes/scenes/{kind}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.access.token}"},
    )
    with urllib.request.urlopen(request) as reply:
        return json.loads(reply.read())


DRAWN = """
(selector) => [...document.querySelectorAll(selector)].map((card) => {
  const frame = card.querySelector('.frame').getBoundingClientRect();
  return {
    imageId: Number(card.dataset.imageId),
    frame: [frame.left, frame.top, frame.width, frame.height],
    boxes: [...card.querySelectorAll('.box')].map((box) => {
      const r = box.getBoundingClientRect();
      return {rect: [r.left, r.top, r.right, r.bottom], colour: getComputedStyle(box).borderTopColor};
    }),
  };
})
"""


def expected_rect(frame, result, box):
    left, top, width, height = frame
    sx, sy = width / result["width"], height / result["height"]
    return [left + box[0] * sx, top + box[1] * sy, left + box[2] * sx, top + box[3] * sy]


def assert_drawn_as_answered(drawn, answer):
    """Every result's lexeme boxes sit where the API put them, scaled to the displayed picture."""
    assert [d["imageId"] for d in drawn] == [r["image_id"] for r in answer["results"]]
    for d, result in zip(drawn, answer["results"], strict=True):
        assert len(d["boxes"]) == len(result["lexemes"])
        assert d["frame"][2] / d["frame"][3] == pytest.approx(result["width"] / result["height"], abs=0.02)
        for shown, match in zip(d["boxes"], result["lexemes"], strict=True):
            assert shown["rect"] == pytest.approx(expected_rect(d["frame"], result, match["box"]), abs=PIXEL)
    colours = [[box["colour"] for box in d["boxes"]] for d in drawn]
    if answer["lexemes"]:
        assert len({tuple(c) for c in colours}) == 1  # each lexeme keeps its colour in every result
        assert len(set(colours[0])) == len(answer["lexemes"])


def test_text_search_draws_each_lexemes_box_where_the_api_says(page, server, tmp_path):
    page.fill("#q", "red circle next to a blue square")
    with page.expect_response("**/api/indexes/scenes/search") as reply:
        page.press("#q", "Enter")
    answer = reply.value.json()
    sent = json.loads(reply.value.request.post_data)
    assert sent == {
        "text": "red circle next to a blue square",
        "k": 50,
        "alpha": 0.5,
        "global_only": False,
        "refine": False,  # the index's search.refine
    }
    assert answer == api(server, "search", sent)
    assert answer["lexemes"] == ["red circle", "blue square"] and len(answer["results"]) == 13
    page.wait_for_function("document.querySelectorAll('.card').length === 13")
    assert_drawn_as_answered(page.evaluate(DRAWN, ".card"), answer)
    legend = page.inner_text("#legend")
    assert "red circle" in legend and "blue square" in legend
    assert "13 results" in page.inner_text("#status")
    first = answer["results"][0]["relations"][0]
    shown = page.inner_text(".card .relation")  # each card names the relation and its score
    assert shown == f"red circle near blue square {first['score']:.2f}"
    page.wait_for_function("document.querySelector('.card img').naturalWidth > 0")  # a real thumbnail
    assert "q=red+circle" in page.url
    page.screenshot(path=tmp_path / "results.png")
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_global_only_and_alpha_reach_the_api(page, server):
    page.fill("#q", "yellow star")
    page.locator("#alpha").fill("0.2")
    assert page.inner_text("#alpha-value") == "0.20"
    page.check("#global-only")
    with page.expect_response("**/search") as reply:
        page.click("button[type=submit]")
    sent = json.loads(reply.value.request.post_data)
    assert sent["alpha"] == 0.2 and sent["global_only"] is True
    page.wait_for_function("document.querySelectorAll('.card').length === 13")
    drawn = page.evaluate(DRAWN, ".card")
    assert all(d["boxes"] == [] for d in drawn)
    assert_drawn_as_answered(drawn, reply.value.json())


def test_look_again_asks_for_refined_results_and_draws_their_boxes(page, server):
    page.fill("#q", "red circle")
    page.check("#refine")
    with page.expect_response("**/search") as reply:
        page.click("button[type=submit]")
    sent = json.loads(reply.value.request.post_data)
    assert sent["refine"] is True
    answer = reply.value.json()
    assert answer == api(server, "search", sent) != api(server, "search", {**sent, "refine": False})
    page.wait_for_function(f"document.querySelectorAll('.card').length === {len(answer['results'])}")
    assert_drawn_as_answered(page.evaluate(DRAWN, ".card"), answer)


def test_viewer_shows_boxes_steps_with_arrows_and_closes_with_escape(page):
    page.fill("#q", "red circle")
    page.press("#q", "Enter")
    page.wait_for_selector(".card")
    answer = page.evaluate("state.results")
    page.focus(".card")
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer:not([hidden])")
    page.wait_for_function("document.getElementById('full').complete")
    stage = page.locator("#stage").bounding_box()
    boxes = page.locator("#stage .box").all()
    first = answer[0]
    assert len(boxes) == 1 and "red circle" in boxes[0].inner_text()
    frame = [stage["x"], stage["y"], stage["width"], stage["height"]]
    rect = boxes[0].bounding_box()
    shown = [rect["x"], rect["y"], rect["x"] + rect["width"], rect["y"] + rect["height"]]
    assert shown == pytest.approx(expected_rect(frame, first, first["lexemes"][0]["box"]), abs=PIXEL)
    assert page.inner_text("#viewer-title").startswith(f"#1 of {len(answer)}")
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#viewer-title").startswith("#2 of")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")  # stays on the first
    assert page.inner_text("#viewer-title").startswith("#1 of")
    page.keyboard.press("Escape")
    assert page.locator("#viewer").is_hidden()
    assert page.evaluate("document.activeElement.dataset.position") == "0"


def test_dragging_a_box_searches_by_that_region(page, server, tmp_path):
    page.fill("#q", "red circle")
    page.press("#q", "Enter")
    page.wait_for_selector(".card")
    wide = page.evaluate("state.results.findIndex((r) => r.path === 'wide.png')")
    wide_id = page.evaluate(f"state.results[{wide}].image_id")
    page.click(f'.card[data-position="{wide}"]')
    page.wait_for_selector("#viewer:not([hidden])")
    stage = page.locator("#stage").bounding_box()
    start = (stage["x"] + 0.55 * stage["width"], stage["y"] + 0.15 * stage["height"])
    end = (stage["x"] + 0.92 * stage["width"], stage["y"] + 0.75 * stage["height"])
    with page.expect_response("**/api/indexes/scenes/region") as reply:
        page.mouse.move(*start)
        page.mouse.down()
        page.mouse.move(*end, steps=8)
        page.mouse.up()
    sent = json.loads(reply.value.request.post_data)
    answer = reply.value.json()
    assert sent["image_id"] == wide_id and sent["k"] == 50
    assert sent["box"] == pytest.approx([0.55 * 320, 0.15 * 180, 0.92 * 320, 0.75 * 180], abs=320 / stage["width"])
    assert answer == api(server, "region", sent)
    assert answer["lexemes"] == ["region"] and len(answer["results"]) == 12  # every image but the one dragged on
    assert wide_id not in [r["image_id"] for r in answer["results"]]
    assert page.locator("#viewer").is_hidden()
    page.wait_for_function("document.querySelectorAll('.card').length === 12")
    assert_drawn_as_answered(page.evaluate(DRAWN, ".card"), answer)
    assert "region (" in page.inner_text("#status") and page.inner_text("#legend") == "region"
    page.screenshot(path=tmp_path / "region.png", full_page=True)
    assert (tmp_path / "region.png").stat().st_size > 10_000


def test_a_short_click_on_the_picture_is_not_a_region(page):
    page.fill("#q", "red circle")
    page.press("#q", "Enter")
    page.wait_for_selector(".card")
    page.click(".card")
    stage = page.locator("#stage").bounding_box()
    requests = []
    page.on("request", lambda r: "/region" in r.url and requests.append(r.url))
    page.mouse.click(stage["x"] + 50, stage["y"] + 50)
    page.mouse.move(stage["x"] + 60, stage["y"] + 60)
    page.wait_for_timeout(200)
    assert requests == [] and page.locator("#viewer").is_visible()


def test_more_like_this(page, server):
    page.fill("#q", "green triangle")
    page.press("#q", "Enter")
    page.wait_for_selector(".card")
    first = page.evaluate("state.results[0].image_id")
    page.click(".card")
    with page.expect_response("**/api/indexes/scenes/similar") as reply:
        page.click("#more")
    answer = reply.value.json()
    assert json.loads(reply.value.request.post_data) == {"image_id": first, "k": 50}
    assert answer == api(server, "similar", {"image_id": first, "k": 50})
    page.wait_for_function("document.querySelectorAll('.card').length === 12")
    drawn = page.evaluate(DRAWN, ".card")
    assert [d["imageId"] for d in drawn] == [r["image_id"] for r in answer["results"]]
    assert all(d["boxes"] == [] for d in drawn)


def test_refusals_are_shown_as_their_one_line(page):
    page.fill("#q", "   ")
    page.press("#q", "Enter")
    page.wait_for_selector("#status.error")
    assert "type what to look for" in page.inner_text("#status")
    page.evaluate("run('search', {text: 'red circle', k: 0})")  # what the API answers with a 400
    page.wait_for_function("document.getElementById('status').textContent.includes('k must be')")
    assert page.inner_text("#status") == "k must be at least 1, got 0"
    assert page.locator("#status.error").count() == 1
    page.problems.remove("console: Failed to load resource: the server responded with a status of 400 (Bad Request)")


def test_the_token_is_kept_in_a_cookie_scripts_cannot_read(page, server):
    (cookie,) = page.context.cookies()
    assert (cookie["name"], cookie["value"]) == (COOKIE, server.access.token)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.evaluate("document.cookie") == ""
    assert "token" not in page.evaluate("location.href")
    assert page.context.request.get(f"{server.url}/api/indexes").status == 200  # the cookie goes along
    page.context.clear_cookies()
    for target in ("/", "/api/indexes"):
        refused = page.context.request.get(f"{server.url}{target}")
        assert refused.status == 401 and "asks for its token" in refused.json()["detail"]


def test_the_page_works_under_its_content_security_policy(browser, server):
    """Scripts, styles and pictures from this server only, none inline: the page loads, searches
    and draws its boxes with nothing refused (a refusal is a console error)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    watched(page, server)
    violations = []
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    reply = page.goto(server.page)
    assert "default-src 'self'" in reply.request.redirected_from.response().headers["content-security-policy"]
    assert "default-src 'self'" in reply.headers["content-security-policy"]
    page.wait_for_selector("#status:has-text('images')")
    page.fill("#q", "red circle next to a blue square")
    page.press("#q", "Enter")
    page.wait_for_selector(".card .box")
    page.click(".card")
    page.wait_for_selector("#viewer:not([hidden]) #stage .box")
    context.close()
    assert violations == [] and page.problems == []
