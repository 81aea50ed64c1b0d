"""`harmosearch demo` (set-up command 1 of the README) runs end to end with the bundled model."""

from harmosearch.config import load_config
from harmosearch.demo import QUERIES, run_demo, slug, twin_queries

from .forked import HARMOSEARCH, run_command


def test_demo_command_indexes_queries_and_draws(tmp_path):
    demo = run_command(HARMOSEARCH, ["demo", str(tmp_path / "demo"), "--n", "24"])  # a process of its own
    stdout, stderr = demo.communicate(timeout=600)
    assert demo.returncode == 0, stderr
    assert "indexed 28 scenes" in stdout and "harmo-mix" in stdout  # 24 + 2 twin pairs
    twins = twin_queries(tmp_path / "demo" / "scenes" / "images" / "twins")
    assert len(twins) == 2
    for query in QUERIES + twins:
        assert repr(query) in stdout  # its results table
        sheet = tmp_path / "demo" / "results" / slug(query) / "contact_sheet.png"
        assert sheet.stat().st_size > 1000
    assert "Traceback" not in stderr


def test_demo_progress_counts_every_scene(tmp_path):
    seen = []
    config = load_config(overrides={"encoder.device": "cpu", "index.workers": 0})
    responses, report = run_demo(tmp_path, config, n=6, queries=("red circle",), progress=lambda *a: seen.append(a))
    drawn = [done for stage, done, total in seen if stage == "drawing scenes"]
    assert drawn == list(range(1, 7)) and report.images == 10  # 6 scenes and 2 twin pairs
    assert len(responses) == 3 and 1 <= len(responses[0].results) <= 5
    for twin in responses[1:]:  # each twin caption finds its own image first, its twin after it
        first, *rest = [r.path for r in twin.results]
        assert first.startswith("twins/") and any(p.startswith("twins/") for p in rest)
