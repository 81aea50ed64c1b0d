import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.pop("HARMOSEARCH_MODEL", None)  # the tests name their models
# The reference path (fp32 through torch) on every machine; the tests of the other paths name
# the CPU features they mean (model.device.cpu_features).
os.environ.setdefault("HARMOSEARCH_CPU_FEATURES", "none")

TEST_MODEL = "harmo-test-vit:random"


def pytest_configure(config):
    """Each xdist worker, and every command a test starts, gets its share of the cores for
    torch's threads: with more threads than cores OpenMP spins, which on two cores made files
    take up to four times as long. Set in the controller before it starts the workers (they
    inherit it), and before any test module imports torch (which reads it once)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT") or getattr(config.option, "numprocesses", None) or 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = int(workers) if str(workers).isdigit() else cores  # -n auto: a worker per core
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))


# The files of 14 s or more of test time on two cores (`pytest --durations=0`, summed per file),
# longest first, run before the others: xdist hands out whole files (--dist loadscope, in this
# order: --no-loadscope-reorder), and one of these handed out last would keep a worker busy long
# after the other has run out of work.
LONGEST_FIRST = (
    "test_ray_engine.py",
    "test_bundled.py",
    "test_reliability.py",
    "test_cli_fuzz.py",
    "test_serve_client.py",
    "test_bench.py",
    "test_bench_refine.py",
    "test_serve_browser.py",
    "test_photo_world.py",
    "test_indexing.py",
    "test_calibration.py",
    "test_distributed_training.py",
    "test_library.py",
    "test_train.py",
)


def pytest_collection_modifyitems(items):
    """LONGEST_FIRST's files first, in its order; each file's tests keep theirs (a stable sort)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def own_folders(tmp_path_factory):
    """Where commands write by default (indexes/, the cache of bench sets and thumbnails, the
    server token's state folder) is a folder of this test process's own: not the checkout's, not
    the user's, not another xdist worker's. Commands that tests start inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARMOSEARCH_INDEXES", str(tmp_path_factory.mktemp("indexes")))
        patch.setenv("HARMOSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setenv("HARMOSEARCH_STATE", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(scope="session")
def test_encoder():
    from harmosearch.config import load_config
    from harmosearch.model.encoder import load_encoder

    return load_encoder(load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu"}))


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """Twelve synthetic scenes shared by the tests that only read them."""
    from harmosearch.config import SynthConfig
    from harmosearch.synth import generate

    out = tmp_path_factory.mktemp("scenes")
    generate(out, SynthConfig(n=12, seed=7))
    return out


@pytest.fixture()
def photos(scenes, tmp_path):
    """A writable copy of the shared scenes' images, for tests that change the photo folder."""
    target = tmp_path / "photos"
    shutil.copytree(scenes / "images", target)
    return target


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    warnings: list[warnings.WarningMessage]


def invoke(args: list[str], read_only=()) -> Outcome:
    """`harmosearch ARGS` in this process (a new process would first spend seconds importing
    torch), `read_only` folders refusing writes (deny_writes); the exception, if any, escapes
    to the test."""
    from harmosearch import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    handlers, level = logging.root.handlers[:], logging.root.level  # the CLI configures logging
    try:
        with (
            pytest.MonkeyPatch.context() as patch,
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("default")
            deny_writes(patch, read_only)
            try:
                cli.main(args)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    return Outcome(code, stdout.getvalue(), stderr.getvalue(), caught)


def run_cli_noting_imports(args, modules, timeout=60):
    """`harmosearch ARGS` in a fresh Python; returns the finished process and which of `modules`
    it had imported by the end (reported on stderr's last line, after the command's own output)."""
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['harmosearch'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('harmosearch', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print('LOADED', *sorted(m for m in {tuple(modules)!r} if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=timeout)
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert last.startswith("LOADED"), result.stderr[-2000:]
    return result, last.split()[1:]


def deny_writes(patch: pytest.MonkeyPatch, folders) -> None:
    """Through `patch`, the answers a user without write permission on `folders` gets from the
    kernel, whoever runs the tests (root writes anywhere, and CI runs as root): creating,
    opening for writing, renaming or removing anything in them fails with EACCES, and
    os.access says they cannot be written. Reads are untouched."""
    import builtins
    import errno
    import io

    folders = {os.path.realpath(f) for f in folders}

    def within(path) -> bool:
        resolved = os.path.realpath(os.fsdecode(path))
        return any(resolved == f or resolved.startswith(f + os.sep) for f in folders)

    def check(path) -> None:
        if not isinstance(path, int) and within(os.path.dirname(os.path.realpath(os.fsdecode(path)))):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def guarded(real, *positions: int):
        def call(*args, **kwargs):
            for position in positions:
                check(args[position])
            return real(*args, **kwargs)

        return call

    real_open, real_os_open, real_access = builtins.open, os.open, os.access
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            check(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & writes:
            check(path)
        return real_os_open(path, flags, *args, **kwargs)

    def access(path, mode, *args, **kwargs):
        denied = mode & os.W_OK and not isinstance(path, int) and within(path)
        return not denied and real_access(path, mode, *args, **kwargs)

    patch.setattr(builtins, "open", open_)
    patch.setattr(io, "open", open_)
    patch.setattr(os, "open", os_open)
    patch.setattr(os, "access", access)
    for name, positions in {
        "mkdir": (0,),
        "rmdir": (0,),
        "unlink": (0,),
        "remove": (0,),
        "symlink": (1,),
        "replace": (0, 1),
        "rename": (0, 1),
        "link": (1,),
    }.items():
        patch.setattr(os, name, guarded(getattr(os, name), *positions))
