"""`harmosearch demo` (set-up command 1 of the README) runs end to end with the bundled model."""

import subprocess
import sys

import pytest

from harmosearch.config import load_config
from harmosearch.demo import QUERIES, run_demo, slug
from harmosearch.encoder import bundled_models

pytestmark = pytest.mark.skipif("harmo-tiny" not in bundled_models(), reason="bundled model not built")


def test_demo_command_indexes_queries_and_draws(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "harmosearch", "demo", str(tmp_path / "demo"), "--n", "24"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "indexed 24 scenes" in result.stdout and "harmo-tiny" in result.stdout
    for query in QUERIES:
        assert repr(query) in result.stdout  # its results table
        sheet = tmp_path / "demo" / "results" / slug(query) / "contact_sheet.png"
        assert sheet.stat().st_size > 1000
    assert "Traceback" not in result.stderr


def test_demo_progress_counts_every_scene(tmp_path):
    seen = []
    config = load_config(overrides={"encoder.device": "cpu", "index.workers": 0})
    responses, report = run_demo(tmp_path, config, n=6, queries=("red circle",), progress=lambda *a: seen.append(a))
    drawn = [done for stage, done, total in seen if stage == "drawing scenes"]
    assert drawn == list(range(1, 7)) and report.images == 6
    assert len(responses) == 1 and 1 <= len(responses[0].results) <= 5
