"""The Ray engine on a local Ray with 2 CPUs: the index equals the local engine's, updates
included, and an actor killed mid-run is restarted by Ray without losing a shard."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harmosearch.indexing import build_index
from harmosearch.store import read_manifest, verify

from .test_indexing import CONFIG, assert_same_index

ray = pytest.importorskip("ray", reason="the Ray engine needs ray: pip install 'harmosearch[dist]'")

RAY = CONFIG.with_values({"index.engine": "ray", "ray.workers": 2, "ray.shard_size": 3})


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the tests of this module; the engine uses it as it finds it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_cli_engine_ray_starts_a_local_ray_and_builds_the_local_index(photos, tmp_path, test_encoder):
    """`harmosearch index --engine ray` without --address starts its own Ray (in a process of its
    own, as a user runs it) and writes the same index as the local engine. It runs before the
    module's shared Ray starts, so that its Ray is the only one."""
    settings = tmp_path / "harmosearch.toml"
    settings.write_text("[regions]\nmax_regions = 12\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "harmosearch", "--config", str(settings), "index", str(photos)]
    options = ["--index", str(tmp_path / "cli"), "--model", CONFIG.encoder.model, "--device", "cpu"]
    options += ["--batch-size", "1", "--engine", "ray", "--num-workers", "1"]
    done = subprocess.run(command + options, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "12 images" in done.stdout and "encoded 12" in done.stdout
    build_index(photos, tmp_path / "local", CONFIG, encoder=test_encoder)
    assert_same_index(tmp_path / "cli", tmp_path / "local")
    assert read_manifest(tmp_path / "cli")["config"]["index"]["engine"] == "ray"


def test_a_killed_actor_is_restarted_and_updates_equal_the_local_engine(photos, tmp_path, test_encoder, local_ray):
    """The first build loses an actor after its first shard finishes (its process dies as on a lost
    node): Ray restarts it and retries the shard it held, and every file ends in the index exactly
    once. The update that follows, on one actor, keeps, renames, adds and removes rows as the
    local engine does. (One test, so that the module starts Ray's actors twice rather than three
    times: an actor's start, which imports torch and loads the model, is most of its time.)"""
    killed = []

    def kill_one_actor(stage, done, total):
        if killed or stage != "encoding" or done == 0:
            return
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        name = next(n for n in names if n.startswith("harmosearch-encoder-"))
        ray.kill(ray.get_actor(name), no_restart=False)
        killed.append(name)

    ray_report = build_index(photos, tmp_path / "ray", RAY, encoder=test_encoder, progress=kill_one_actor)
    local_report = build_index(photos, tmp_path / "local", CONFIG, encoder=test_encoder)
    assert killed and not ray_report.skipped
    assert ray_report.encoded == local_report.encoded == 12 and ray_report.images == 12
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    assert not (tmp_path / "ray" / ".staging").exists() and verify(tmp_path / "ray") == []

    from PIL import Image

    (photos / "000000.png").unlink()
    (photos / "000001.png").rename(photos / "renamed.png")
    Image.new("RGB", (50, 40), (200, 10, 10)).save(photos / "brand_new.png")
    Image.new("RGB", (30, 60), (10, 10, 200)).save(photos / "another.png")
    (photos / "broken.jpg").write_bytes(b"not an image")
    ray_update = build_index(photos, tmp_path / "ray", RAY.with_values({"ray.workers": 1}), encoder=test_encoder)
    local_update = build_index(photos, tmp_path / "local", CONFIG, encoder=test_encoder)
    assert ray_update.encoded == local_update.encoded == 2
    counts = ("removed", "renamed", "added", "changed", "unchanged")
    assert [getattr(ray_update, c) for c in counts] == [getattr(local_update, c) for c in counts] == [1, 1, 3, 0, 10]
    assert [p for p, _ in ray_update.skipped] == [p for p, _ in local_update.skipped] == ["broken.jpg"]
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    assert read_manifest(tmp_path / "ray")["generation"] == 2


def test_staged_shards_of_an_interrupted_run_are_resumed_by_either_engine(photos, tmp_path, test_encoder, local_ray):
    """Shards staged by Ray before a failure are not encoded again by the next run, even a local one.
    One actor encodes both shards (an actor's start is most of this test's time)."""
    from harmosearch.indexing.engines.ray import encode_on_ray, make_shards
    from harmosearch.media.scan import scan
    from harmosearch.store import claim_staging, sha256_file, staged_pictures

    entries, _ = scan(photos, False, ())
    first_half = [(e.absolute, sha256_file(e.absolute), None) for e in entries[:6]]
    # Claimed as an update claims it before handing files to Ray.
    stage = claim_staging(
        tmp_path / "idx", {"encoder": test_encoder.identity.to_dict(), "regions": CONFIG.to_json()["regions"]}
    )
    assert encode_on_ray(first_half, test_encoder.identity, RAY.with_values({"ray.workers": 1}), stage, None) == {}
    assert len(list(stage.glob("chunk_*.npz"))) == len(make_shards(first_half, 3)) == 2
    assert set(staged_pictures(stage)) == {sha for _, sha, _ in first_half}
    report = build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    assert (report.resumed, report.encoded, report.images) == (6, 6, 12)
    build_index(photos, tmp_path / "fresh", CONFIG, encoder=test_encoder)
    assert_same_index(tmp_path / "idx", tmp_path / "fresh")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:1", "cannot reach the Ray cluster at --address 127.0.0.1:1: "),
        ("ray://127.0.0.1:1", "cannot reach the Ray cluster at --address ray://127.0.0.1:1: "),
        ("no port", "bad --address 'no port': give host:port of a Ray head"),
        ("host:99999", "bad --address 'host:99999': give host:port of a Ray head"),
    ],
)
def test_an_address_without_a_ray_head_is_refused_at_once(photos, tmp_path, address, message):
    """Ray would retry a head that does not answer for minutes; the engine says so in seconds,
    before any model loads (the one named here does not exist: its error would come first)."""
    args = ["index", str(photos), "--index", str(tmp_path / "idx"), "--model", "no-such-model"]
    result = subprocess.run(
        [sys.executable, "-m", "harmosearch", *args, "--engine", "ray", "--address", address],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"error: {message}"), result.stderr[-2000:]
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


class _Actor:
    """Stands for a Ray actor handle: check.remote answers at once (a fake `ray.get` passes it on)."""

    def __init__(self, identity):
        self.check = type("Remote", (), {"remote": staticmethod(lambda photo: ("", identity.to_dict()))})


def test_a_worker_that_would_make_vectors_another_way_is_refused_with_the_setting_to_name(test_encoder):
    from dataclasses import replace

    from harmosearch.errors import EngineError
    from harmosearch.indexing.engines.ray import _check_actors

    driver = replace(test_encoder.identity, precision="int8", runtime="onnxruntime")
    same = type("FakeRay", (), {"get": staticmethod(lambda answers: answers)})
    _check_actors(same, [_Actor(driver), _Actor(driver)], "photo.png", driver)
    other_cpu = replace(driver, precision="fp32", runtime="torch")  # a node whose runtimes make fp32
    with pytest.raises(EngineError, match=r'precision = "int8", runtime = "onnxruntime"'):
        _check_actors(same, [_Actor(driver), _Actor(other_cpu)], "photo.png", driver)
    other_weights = replace(driver, weights="0" * 16)
    with pytest.raises(EngineError, match="install the same harmosearch and model files"):
        _check_actors(same, [_Actor(other_weights)], "photo.png", driver)
