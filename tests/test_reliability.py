"""Hostile files, hostile queries, interruptions: the index stays valid and errors stay one line."""

import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from harmosearch.config import SynthConfig, load_config
from harmosearch.errors import HarmosearchError, QueryError
from harmosearch.indexing import build_index
from harmosearch.media.formats import open_still
from harmosearch.search import Index
from harmosearch.store import SCHEMA_VERSION, IndexReader, read_manifest, staged_pictures, verify
from harmosearch.synth import generate

from .conftest import TEST_MODEL
from .forked import HARMOSEARCH, run_command
from .test_indexing import assert_same_index

CONFIG = load_config(
    overrides={
        "encoder.model": TEST_MODEL,
        "encoder.device": "cpu",
        "index.workers": 0,
        "regions.max_regions": 8,
        "encoder.batch_size": 1,
    }
)


def make_corpus(root):
    """Every kind of file a real photo folder throws at an indexer; returns expected outcomes."""
    root.mkdir(parents=True, exist_ok=True)
    good = Image.new("RGB", (64, 48), (10, 200, 30))
    good.save(root / "good.jpg")
    (root / "zero.png").write_bytes(b"")
    good.save(root / "full.png")
    (root / "truncated.png").write_bytes((root / "full.png").read_bytes()[:60])
    (root / "full.png").unlink()
    good.save(root / "full.jpg")
    (root / "truncated.jpg").write_bytes((root / "full.jpg").read_bytes()[:200])
    (root / "full.jpg").unlink()
    good.save(root / "really_png.jpg", format="PNG")  # wrong extension, valid image
    (root / "text.jpg").write_text("this is not an image")
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).save(root / "sixteen.png")
    rotated = Image.new("RGB", (80, 40), (255, 0, 0))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    rotated.save(root / "exif_rotated.jpg", exif=exif)
    Image.new("P", (30, 30), 3).save(root / "palette.png")
    Image.new("RGBA", (30, 30), (255, 0, 0, 80)).save(root / "alpha.png")
    Image.new("1", (30, 30), 1).save(root / "bilevel.png")
    Image.new("L", (20000, 6000)).save(root / "huge.png")  # 120 MP: above the pixel limit
    (root / "loop").mkdir()
    os.symlink(root / "loop", root / "loop" / "again")  # a folder symlink loop
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    long_name = "x" * 240 + ".png"
    good.save(root / long_name)
    non_utf8 = os.fsencode(str(root)) + b"/caf\xe9.png"
    with open(non_utf8, "wb") as f:
        f.write((root / "good.jpg").read_bytes())
    indexed = {
        "good.jpg",
        "really_png.jpg",
        "cmyk.jpg",
        "sixteen.png",
        "exif_rotated.jpg",
        "palette.png",
        "alpha.png",
        "bilevel.png",
        long_name,
    }
    skipped = {"zero.png", "truncated.png", "truncated.jpg", "text.jpg", "huge.png", "dangling.jpg", "caf\ufffd.png"}
    return indexed, skipped


def test_fuzz_corpus_is_indexed_or_skipped_with_reasons(tmp_path, test_encoder):
    indexed, skipped = make_corpus(tmp_path / "photos")
    report = build_index(tmp_path / "photos", tmp_path / "idx", CONFIG, encoder=test_encoder)
    reasons = dict(report.skipped)
    assert set(reasons) == skipped
    assert all(reason and "\n" not in reason for reason in reasons.values())
    assert "pixel limit" in reasons["huge.png"] and "not valid UTF-8" in reasons["caf\ufffd.png"]
    reader = IndexReader(tmp_path / "idx")
    assert set(map(str, reader.images["path"])) == indexed
    sizes = {
        str(p): (int(w), int(h))
        for p, w, h in zip(reader.images["path"], reader.images["width"], reader.images["height"], strict=True)
    }
    assert sizes["exif_rotated.jpg"] == (40, 80)  # EXIF orientation respected
    assert verify(tmp_path / "idx") == []


def test_decoded_modes_are_rgb(tmp_path):
    indexed, _ = make_corpus(tmp_path)
    for name in indexed:
        assert open_still(tmp_path / name).image.mode == "RGB"


def test_unreadable_files_are_skipped(tmp_path, test_encoder, monkeypatch):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "photos" / "good.png")
    locked = tmp_path / "photos" / "locked.png"
    Image.new("RGB", (20, 20)).save(locked)
    os.chmod(locked, 0)
    real_access = os.access

    def access(path, mode, *args, **kwargs):  # root reads anything: the kernel's answer to other users
        denied = mode & os.R_OK and Path(os.fsdecode(path)) == locked
        return not denied and real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    report = build_index(tmp_path / "photos", tmp_path / "idx", CONFIG, encoder=test_encoder)
    assert report.skipped == [("locked.png", "permission denied")] and report.images == 1


@pytest.fixture(scope="module")
def query_index(tmp_path_factory, scenes, test_encoder):
    root = tmp_path_factory.mktemp("q")
    build_index(scenes / "images", root / "idx", CONFIG, encoder=test_encoder)
    return Index(root / "idx", encoder=test_encoder)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300), k=st.integers(-3, 30), alpha=st.floats(-1, 2, allow_nan=False))
def test_hostile_queries_give_results_or_one_line_errors(query_index, text, k, alpha):
    try:
        response = query_index.search(text, k=k, alpha=alpha)
    except QueryError as exc:
        assert "\n" not in str(exc)
        assert not text.strip() or k < 1 or not 0 <= alpha <= 1
        return
    assert k >= 1 and 0 <= alpha <= 1 and text.strip()
    assert len(response.results) <= k


@pytest.mark.parametrize("text", ["🐶🎈", "красный круг", "赤い丸", "the of and", "x" * 10_000, "a" * 77 * 3])
def test_odd_but_valid_queries(query_index, text):
    response = query_index.search(text, k=3)
    assert len(response.results) == 3
    if len(text) > 1000:
        assert any("truncated" in w for w in response.warnings)


def test_old_schema_and_damaged_files_are_reported(tmp_path, scenes, test_encoder):
    build_index(scenes / "images", tmp_path / "idx", CONFIG, encoder=test_encoder)
    manifest = read_manifest(tmp_path / "idx")
    victim = tmp_path / "idx" / manifest["files"]["region_vectors"]
    victim.write_bytes(victim.read_bytes()[:-8] + b"12345678")
    problems = verify(tmp_path / "idx")
    assert problems and "checksum mismatch" in problems[0]
    old = SCHEMA_VERSION - 1  # an index of the previous release
    text = (tmp_path / "idx" / "manifest.json").read_text()
    text = text.replace(f'"schema_version": {SCHEMA_VERSION}', f'"schema_version": {old}')
    (tmp_path / "idx" / "manifest.json").write_text(text)
    with pytest.raises(HarmosearchError, match=f"schema version {old}.*rebuild it with harmosearch index --rebuild"):
        Index(tmp_path / "idx", encoder=test_encoder)
    with pytest.raises(HarmosearchError, match="--rebuild"):
        build_index(scenes / "images", tmp_path / "idx", CONFIG, encoder=test_encoder)
    report = build_index(scenes / "images", tmp_path / "idx", CONFIG, encoder=test_encoder, rebuild=True)
    assert report.committed and read_manifest(tmp_path / "idx")["schema_version"] == SCHEMA_VERSION


# `harmosearch index` in a child with test hooks (HOOKS, JSON): engines.local.CHUNK set to "chunk"
# (when given); with "marks", the child appends a line to that file at every point of its run
# where a signal may land: "encoding D/N" after each batch, "staging NAME" once a chunk is in
# the staging folder, "commit NAME" once a file of the new generation (the manifest last) is in
# place; at the "nth" line starting with "hold" it stops there, to be signalled.
HOOKED = """
import json, os, re, time
import harmosearch.indexing as indexing
import harmosearch.indexing.engines.local as local
from harmosearch.cli import main

hooks = json.loads(os.environ["HOOKS"])
local.CHUNK = hooks["chunk"] or local.CHUNK
if "marks" in hooks:
    held = []

    def mark(line):
        with open(hooks["marks"], "a") as f:
            f.write(line + "\\n")
        if line.startswith(hooks["hold"]):
            held.append(line)
            if len(held) == hooks["nth"]:
                time.sleep(600)

    build_index, replace = indexing.build_index, os.replace

    def build_marking(*args, progress=None, **kwargs):
        def report(stage, done, total):
            if progress:
                progress(stage, done, total)
            if stage == "encoding" and done:
                mark(f"encoding {done}/{total}")

        return build_index(*args, progress=report, **kwargs)

    def replace_marking(source, target, **kwargs):
        replace(source, target, **kwargs)
        name = os.path.basename(target)
        if name.startswith("chunk_"):
            mark(f"staging {name}")
        elif name == "manifest.json" or re.search(r"[.]g[0-9]+[.]", name):
            mark(f"commit {name}")

    indexing.build_index, os.replace = build_marking, replace_marking
main()
"""


def run_index(photos, index, *extra, env=None, chunk=None, hooks=None):
    """`harmosearch index` in a child process; `chunk`: stage encoded images every `chunk` images
    instead of every indexing.engines.local.CHUNK, so that an interrupted run leaves staged work sooner;
    `hooks`: see HOOKED."""
    hooks = {"chunk": chunk, **(hooks or {})} if chunk or hooks else None
    argv = ["--config", str(index.parent / "c.toml"), "index", str(photos), "--index", str(index)]
    argv += ["--model", TEST_MODEL, "--workers", "0", "--batch-size", "1", *extra]
    # A process of its own, forked from one that has imported torch already (tests/forked.py),
    # with the default disposition of SIGINT (a shell starts background jobs with it ignored).
    env = {**os.environ, **(env or {}), **({"HOOKS": json.dumps(hooks)} if hooks else {})}
    return run_command(HARMOSEARCH if hooks is None else HOOKED, argv, env)


def read_lines(path):
    return path.read_text().splitlines() if path.exists() else []


def signal_at(photos, index, hold, nth, sent, *extra, chunk=4, pause=0.0):
    """Run `harmosearch index ... EXTRA` until it stops at the `nth` point starting with `hold`
    (see HOOKED), and send it signal `sent` `pause` seconds later (SIGKILL whatever happens);
    returns the point where it landed, the exit code, stdout and stderr."""
    marks = index.parent / "marks"
    marks.unlink(missing_ok=True)
    hooks = {"chunk": chunk, "marks": str(marks), "hold": hold, "nth": nth}
    process = run_index(photos, index, *extra, hooks=hooks)
    try:
        deadline = time.monotonic() + 120
        while len([line for line in read_lines(marks) if line.startswith(hold)]) < nth:
            assert process.poll() is None, f"the run ended before {hold!r} #{nth}: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"{hold!r} #{nth} not reached in 120 s"
            time.sleep(0.005)
        time.sleep(pause)
        process.send_signal(sent)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    return read_lines(marks)[-1], process.returncode, stdout, stderr


def change_photos(photos, renamed, added):
    """Rename `renamed` of the scenes and add `added` new pictures."""
    for name in [f"{i:06d}.png" for i in range(renamed)]:
        (photos / name).rename(photos / f"moved_{name}")
    for i in range(added):
        Image.new("RGB", (50, 50), (40 * i, 200, 0)).save(photos / f"new_{i}.png")


# The kills during a build and during an update are a class each: pytest-xdist (--dist
# loadscope) hands each class to a worker of its own, so that the two run side by side.
@pytest.mark.slow
@pytest.mark.timeout(600)  # six runs of the command, each starting Python and torch
class TestKill9DuringABuild:
    def test_kill_9_in_every_phase_never_loses_the_index(self, tmp_path, scenes, test_encoder):
        kill_9_in_every_phase(tmp_path, scenes, test_encoder, update=False)


@pytest.mark.slow
@pytest.mark.timeout(600)
class TestKill9DuringAnUpdate:
    def test_kill_9_in_every_phase_never_loses_the_index(self, tmp_path, scenes, test_encoder):
        kill_9_in_every_phase(tmp_path, scenes, test_encoder, update=True)


def kill_9_in_every_phase(tmp_path, scenes, test_encoder, update):
    """SIGKILL while encoding, once a chunk is staged, and in the commit (between the files of
    the new generation, and after the manifest swap), while the index is built or while an
    update is: after every kill the index is the last committed generation, whole, and a final
    run (in the build, an update over what the last kill left) gives the index that a run never
    interrupted gives."""
    photos = tmp_path / "photos"
    shutil.copytree(scenes / "images", photos)
    (tmp_path / "c.toml").write_text("[regions]\nmax_regions = 8\n")
    index = tmp_path / "idx"
    if update:  # 2 files renamed, 6 new: the update encodes 6 files, staged in 2 chunks
        build_index(photos, index, CONFIG, encoder=test_encoder)  # the settings of c.toml and run_index
        change_photos(photos, renamed=2, added=6)
    rng = random.Random(int(update))
    landed = []
    for hold, nth in (
        ("encoding", rng.randint(1, 3)),  # before the first chunk is staged
        ("staging", 1),
        ("encoding", 1),  # a run that resumed the staged chunk
        ("commit", rng.randint(1, 6)),  # before the manifest swap: only files no reader opens
        ("commit manifest.json", 1),  # swapped; the previous generation's files still there
    ):
        before = read_manifest(index)["generation"] if (index / "manifest.json").exists() else 0
        point, _, _, _ = signal_at(photos, index, hold, nth, signal.SIGKILL, pause=rng.uniform(0, 0.2))
        landed.append(point.split()[0])
        assert point.startswith(hold), f"the kill aimed at {hold!r} #{nth} landed at {point!r}"
        swapped = hold == "commit manifest.json"
        if (index / "manifest.json").exists():
            assert verify(index) == [], f"torn index after a kill at {point!r}"
            assert read_manifest(index)["generation"] == before + swapped, point
        else:
            assert before == 0 and not swapped, point
        written = list(index.glob(f"*.g{before + 1}.*"))
        if hold == "commit":
            assert written, f"nothing of the new generation was written before the kill at {point!r}"
        elif not swapped:
            assert not written, point
        if hold == "staging":
            assert list((index / ".staging").glob("chunk_*.npz"))
    assert Counter(landed) == {"encoding": 2, "staging": 1, "commit": 2}
    if not update:
        change_photos(photos, renamed=1, added=1)
    final = run_index(photos, index)
    assert final.wait(timeout=300) == 0, final.stderr.read()
    assert verify(index) == []
    build_index(photos, tmp_path / "fresh", CONFIG, encoder=test_encoder)
    assert_same_index(index, tmp_path / "fresh")


def test_ctrl_c_exits_cleanly_with_a_message(tmp_path, scenes):
    (tmp_path / "c.toml").write_text("")
    point, code, _, stderr = signal_at(scenes / "images", tmp_path / "idx", "encoding", 1, signal.SIGINT, chunk=None)
    assert point == "encoding 1/12" and code == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "idx" / "manifest.json").exists()


def test_sigterm_exits_cleanly_and_a_rerun_resumes(tmp_path, scenes):
    """systemctl stop, docker stop and job runners send SIGTERM: one line, exit 143, the index as
    it was, the lock released, and the encoded batches kept for the next run."""
    photos = tmp_path / "photos"
    shutil.copytree(scenes / "images", photos)
    (tmp_path / "c.toml").write_text("[regions]\nmax_regions = 8\n")
    index = tmp_path / "idx"
    assert run_index(photos, index, "--batch-size", "8").wait(timeout=300) == 0
    before = read_manifest(index)
    generate(tmp_path / "more", SynthConfig(n=24, seed=99, size=48), workers=2)
    for path in (tmp_path / "more" / "images").iterdir():
        path.rename(photos / f"more_{path.name}")
    # Stopped once the second of three chunks of 8 is staged.
    point, code, _, stderr = signal_at(photos, index, "staging", 2, signal.SIGTERM, "--batch-size", "8", chunk=8)
    assert point == "staging chunk_000001.npz" and code == 143
    assert stderr.splitlines() == ["terminated; what was written so far is consistent, and a re-run resumes it"]
    assert read_manifest(index) == before and verify(index) == []
    assert len(staged_pictures(index / ".staging")) == 16
    rerun = run_index(photos, index, "--batch-size", "8", chunk=8)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr  # the lock was released
    assert ", 16 taken from an interrupted run" in stdout and "encoded 8 " in stdout
    assert read_manifest(index)["counts"]["images"] == 36 and verify(index) == []


def test_concurrent_query_sees_old_or_new_index(tmp_path, scenes, test_encoder):
    """Readers open and search the index in a thread while updates add and remove images in
    another: every reader sees one whole generation (12 or 13 images, as many results as its
    index holds), never a torn one."""
    import threading

    photos = tmp_path / "photos"
    shutil.copytree(scenes / "images", photos)
    build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    before = Index(tmp_path / "idx", encoder=test_encoder)
    seen: list[tuple[int, int]] = []
    failures: list[BaseException] = []
    writing = threading.Event()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                index = Index(tmp_path / "idx", encoder=test_encoder)
                seen.append((index.n_images, len(index.search("blue", k=20).results)))
            except BaseException as exc:  # surfaced below, in the test's own thread
                failures.append(exc)
                return
            if writing.is_set():
                continue
            time.sleep(0.001)

    reader = threading.Thread(target=read)
    reader.start()
    writing.set()
    for _ in range(3):
        Image.new("RGB", (40, 40), (0, 0, 255)).save(photos / "added.png")
        build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
        (photos / "added.png").unlink()
        build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    done.set()
    reader.join(timeout=60)
    assert not failures, failures[0]
    assert len(seen) >= 6, "the reader never overlapped the updates"
    assert set(seen) <= {(12, 12), (13, 13)}
    # The index opened before the updates keeps serving its own generation, whole.
    assert before.n_images == 12 and len(before.search("blue", k=20).results) == 12


def test_full_disk_leaves_the_previous_index(tmp_path, scenes, test_encoder, monkeypatch):
    photos = tmp_path / "photos"
    shutil.copytree(scenes / "images", photos)
    build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    Image.new("RGB", (40, 40)).save(photos / "added.png")
    from harmosearch.store import writer

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_save_npy", no_space)
    with pytest.raises(OSError, match="No space"):
        build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    monkeypatch.undo()
    assert verify(tmp_path / "idx") == []
    assert read_manifest(tmp_path / "idx")["counts"]["images"] == 12
    report = build_index(photos, tmp_path / "idx", CONFIG, encoder=test_encoder)
    assert report.images == 13 and report.resumed == 1  # the staged encoding was kept


@pytest.mark.slow
def test_kill_9_during_training_then_resume_matches_an_unbroken_run(tmp_path, scenes):
    import torch
    from safetensors.torch import load_file

    (tmp_path / "fp32.toml").write_text('[train]\nprecision = "fp32"\n')
    args = [
        "--config",
        str(tmp_path / "fp32.toml"),
        "train",
        "--data",
        str(scenes),
        "--model",
        TEST_MODEL,
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--checkpoint-every",
        "1",
        "--workers",
        "0",
        "--lr",
        "0.002",
    ]

    def start(out):  # a process of its own (tests/forked.py)
        return run_command(HARMOSEARCH, [*args, "--out", str(out)])

    assert start(tmp_path / "whole").wait(timeout=300) == 0
    total = 6  # 12 scenes, batches of 4, 2 epochs
    metrics = tmp_path / "broken" / "metrics.jsonl"
    landed = []
    for target in (1, 3, 5):  # kill once step `target` is logged, while the run is still going
        process = start(tmp_path / "broken")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= target:
                break
            time.sleep(0.005)
        assert process.poll() is None, "the run ended before the kill"
        process.send_signal(signal.SIGKILL)
        process.wait()
        steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]
        landed.append(max(steps))
        assert not (tmp_path / "broken" / "final").exists()
    assert landed == sorted(landed) and all(
        target <= step < total for target, step in zip((1, 3, 5), landed, strict=True)
    )
    final = start(tmp_path / "broken")
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    assert "resumed from step" in stdout
    whole = load_file(tmp_path / "whole" / "final" / "open_clip_model.safetensors")
    resumed = load_file(tmp_path / "broken" / "final" / "open_clip_model.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
