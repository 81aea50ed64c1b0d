"""A warm server against the in-process API, and what a warm `harmosearch query` costs.

    python benchmarks/serve.py [--index PATH] [--rounds 5] [--runs 7] [--screenshot docs/serve.png]

Without --index, the demo scenes are drawn and indexed with the bundled model in a temporary
folder (as `harmosearch demo` does). A server (`harmosearch.serve.server.serve`) runs in its own
process on that index. Then:

- warm latency of the 48 colour-shape phrases and 8 two-lexeme queries, p50/p95 in ms:
  `Index.search` in this process, against the same search through the server, both by the
  CLI's client (`remote_search`: a new connection per query) and over one kept-alive
  connection (as the page sends them); every query runs each way in turn. The in-process
  search runs in a worker thread, as the server runs it, so that the difference is what HTTP
  adds; it is also timed on the main thread (on this shared machine, torch's OpenMP threads
  were at times over 20 times slower there than in a worker thread);
- wall time of a fresh `python -c` running only the client path (`find_server`, `remote_search`,
  printing the JSON), against a cold in-process query (`open_index`, `search`, printing) and
  against `harmosearch query --json` without a server; and the client path after importing
  `harmosearch.cli`, which the warm path of `harmosearch query` pays before it can use it.

--screenshot also writes a picture of the page with results (headless Debian chromium).
Results are appended to benchmarks/results/serve.jsonl.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.serve.client import find_server, remote_search

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
QUERIES = [f"{c} {s}" for c in COLOURS for s in SHAPES] + [
    f"{a} {s} to the left of a {b} {t}"
    for a, s, b, t in zip(COLOURS, SHAPES * 2, COLOURS[::-1], SHAPES[::-1] * 2, strict=False)
]
SHOT_QUERY = "yellow star next to a green circle"


def demo_index(folder: Path) -> Path:
    from harmosearch.config import load_config
    from harmosearch.demo import run_demo

    run_demo(folder, load_config(), queries=())
    return folder / "index"


def start_server(index: Path, thumbnails: Path) -> tuple[subprocess.Popen, str]:
    script = (
        "import sys\nfrom pathlib import Path\nfrom harmosearch.serve.server import serve\n"
        "serve([Path(sys.argv[1])], port=0, thumbnails=Path(sys.argv[2]))\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script, str(index), str(thumbnails)])
    deadline = time.monotonic() + 120
    while (url := find_server(index)) is None:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.1)
    return server, url


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in seconds)
    return {"p50": statistics.median(ms), "p95": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))], "n": len(ms)}


def timed(call, *args, **kwargs) -> float:
    start = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - start


def warm_latency(index_path: Path, url: str, rounds: int) -> dict[str, dict[str, float]]:
    import harmosearch

    index = harmosearch.open_index(index_path)
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    target = "/" + url.removeprefix("http://").split("/", 1)[1] + "/search"
    kept = http.client.HTTPConnection(host, int(port), timeout=60)

    def kept_alive(text: str) -> None:
        kept.request("POST", target, json.dumps({"text": text}), {"Content-Type": "application/json"})
        reply = kept.getresponse()
        json.loads(reply.read())

    worker = ThreadPoolExecutor(1)

    def in_worker(text: str) -> None:
        worker.submit(index.search, text).result()

    for text in QUERIES[:8]:  # warm-up: first forwards, thread pools, connection
        index.search(text)
        in_worker(text)
        remote_search(url, text)
        kept_alive(text)
    times: dict[str, list[float]] = {
        "in-process": [],
        "in-process, main thread": [],
        "http, client": [],
        "http, kept alive": [],
    }
    paired: list[float] = []
    for _ in range(rounds):
        for text in QUERIES:
            local = timed(in_worker, text)
            remote = timed(remote_search, url, text)
            times["in-process"].append(local)
            times["http, client"].append(remote)
            times["http, kept alive"].append(timed(kept_alive, text))
            times["in-process, main thread"].append(timed(index.search, text))
            paired.append(remote - local)
    kept.close()
    worker.shutdown()
    out = {name: percentiles(values) for name, values in times.items()}
    out["http added (paired)"] = percentiles(paired)
    return out


def wall(command: list[str], runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": runs}


def cold_paths(index: Path, runs: int) -> dict[str, dict[str, float]]:
    client = (
        "import json, sys\nfrom pathlib import Path\n"
        "from harmosearch.serve.client import find_server, remote_search\n"
        "print(json.dumps(remote_search(find_server(Path(sys.argv[1])), sys.argv[2])))\n"
    )
    cli_then_client = "import harmosearch.cli\n" + client
    in_process = (
        "import json, sys\nimport harmosearch\n"
        "print(json.dumps(harmosearch.open_index(sys.argv[1]).search(sys.argv[2]).to_dict()))\n"
    )
    python = sys.executable
    return {
        "python -c pass": wall([python, "-c", "pass"], runs),
        "client path (find_server + remote_search + print)": wall(
            [python, "-c", client, str(index), "red circle"], runs
        ),
        "import harmosearch.cli, then the client path": wall(
            [python, "-c", cli_then_client, str(index), "red circle"], runs
        ),
        "cold in-process (open_index + search + print)": wall(
            [python, "-c", in_process, str(index), "red circle"], max(3, runs // 2)
        ),
        "harmosearch query --json, no server": wall(
            [python, "-m", "harmosearch", "query", "red circle", "--index", str(index), "--json"], max(3, runs // 2)
        ),
    }


def screenshot(url: str, out: Path) -> None:
    """The page with the results of SHOT_QUERY, 1200 x 760, as a 256-colour PNG."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    server_root = url.split("/api/")[0]
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as tmp:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.goto(f"{server_root}/")
        page.wait_for_function("document.getElementById('status').textContent.includes('images')")
        page.fill("#q", SHOT_QUERY)
        page.press("#q", "Enter")
        page.wait_for_selector(".card")
        page.wait_for_function(
            "[...document.querySelectorAll('.card img')].filter((i) => i.getBoundingClientRect().top < 760)"
            ".every((i) => i.complete && i.naturalWidth > 0)"
        )
        raw = Path(tmp) / "page.png"
        page.screenshot(path=raw)
        browser.close()
        Image.open(raw).convert("RGB").quantize(256).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="index to serve (default: the demo scenes, built here)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the queries for warm latency")
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per cold-path measurement")
    parser.add_argument("--screenshot", type=Path, help="write a picture of the page with results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = (args.index or demo_index(Path(tmp) / "demo")).resolve()
        server, url = start_server(index, Path(tmp) / "thumbnails")
        try:
            warm = warm_latency(index, url, args.rounds)
            cold = cold_paths(index, args.runs)
            if args.screenshot:
                screenshot(url, args.screenshot)
        finally:
            server.terminate()
            server.wait()
    for name, numbers in warm.items():
        print(f"{name:24s} p50 {numbers['p50']:7.2f} ms  p95 {numbers['p95']:7.2f} ms  ({numbers['n']} queries)")
    for name, numbers in cold.items():
        print(f"{name:52s} {numbers['median_s']:6.3f} s median, {numbers['min_s']:6.3f} s best of {numbers['runs']}")
    path = append_result(
        "serve", {"index": str(index), "rounds": args.rounds, "queries": len(QUERIES), "warm_ms": warm, "cold": cold}
    )
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
