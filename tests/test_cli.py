import json
import os
import subprocess
import sys

from .conftest import run_cli_noting_imports

HEAVY = ("torch", "open_clip", "faiss", "pyarrow")


def run(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "harmosearch", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_help_does_not_import_heavy_modules():
    for args in (["--help"], ["synth", "--help"]):
        result, loaded = run_cli_noting_imports(args, HEAVY)
        assert "Usage" in result.stdout
        assert loaded == [], result.stderr[-300:]  # its time: benchmarks, never a timed assertion


def test_help_lists_each_command_with_its_whole_summary():
    """Plain help: the command list wraps each command's first paragraph, which Click would cut
    at the terminal's width with "..."."""
    from harmosearch.cli import COMMANDS

    listed = " ".join(run("--help", env={**os.environ, "COLUMNS": "80"}).stdout.split("Commands:")[1].split())
    for command in COMMANDS:
        summary = " ".join(command.__doc__.split("\n\n")[0].split())
        assert f"{command.__name__} {summary}" in listed
    assert "..." not in listed


def test_library_errors_are_one_line_with_exit_code_2(tmp_path):
    result = run("synth", str(tmp_path / "s"), "--n", "-3")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: synth.n must lie in [0, 1000000], got -3"
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_reported(tmp_path):
    result = run("--config", str(tmp_path / "nope.toml"), "synth", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "config file not found" in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run("--debug", "synth", str(tmp_path / "s"), "--n", "-3")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_usage_errors_exit_2(tmp_path):
    result = run("synth")
    assert result.returncode == 2
    result = run("no-such-command")
    assert result.returncode == 2


def test_synth_command_writes_scenes_and_config_file_applies(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[synth]\nn = 3\nsize = 96\n")
    result = run("--config", str(toml), "synth", str(tmp_path / "s"), "--seed", "5")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "s" / "annotations.json").read_text())
    assert len(data["images"]) == 3
    assert data["images"][0]["width"] == 96
    assert data["info"]["seed"] == 5


def test_info_says_how_many_regions_a_picture_keeps_and_when_the_default_keeps_more():
    from harmosearch.cli.info import regions_line

    def facts(cap, detail="normal", share=None):
        proposals = None if share is None else {"high": [1.5, 3.0, [0.2, 0.15], share]}
        return {"regions": 500, "config": {"regions": {"max_regions": cap, "detail": detail}}, "proposals": proposals}

    hint = "today's default keeps {}: `harmosearch index PHOTOS --rebuild` re-encodes at it"
    assert regions_line(facts(96)) == "500 (at most 96 per picture, normal detail); " + hint.format(128)
    assert regions_line(facts(128)) == regions_line(facts(200)).replace("200", "128")
    assert "default" not in regions_line(facts(128)) and "default" not in regions_line(facts(1))  # global-only
    assert regions_line(facts(96, "high", 2)) == "500 (at most 192 per picture, high detail)"  # kept twice then
    assert regions_line(facts(96, "high")) == "500 (at most 192 per picture, high detail)"  # before it was recorded
    assert regions_line(facts(64, "high", 1.5)).endswith(hint.format(192))  # 96 kept
    assert regions_line(facts(128, "high", 1.5)) == "500 (at most 192 per picture, high detail)"
