"""The verdicts of the check scripts: .ci/run against a fake pytest and a fake apt-get, the GPU
check's skip filter against canned pytest output, the browser tests without a browser."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fake(path: Path, script: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + script)
    path.chmod(0o755)
    return path


@pytest.fixture()
def clone(tmp_path):
    """A copy of .ci/ in a folder of its own, with a fake python3 on PATH: its `-m venv .venv`
    makes a .venv whose pip succeeds and whose python, like pytest, exits $FAKE_PYTEST_EXIT;
    every command is logged to calls.log."""
    repo, tools = tmp_path / "repo", tmp_path / "bin"
    shutil.copytree(ROOT / ".ci", repo / ".ci")
    log = tmp_path / "calls.log"
    fake(tools / "venv" / "pip", f'echo "pip $*" >> {log}\n')
    fake(tools / "venv" / "python", f'echo "python $*" >> {log}\nexit "$FAKE_PYTEST_EXIT"\n')
    fake(tools / "venv" / "mkdocs", f'echo "mkdocs $1 $2" >> {log}\nexit "${{FAKE_MKDOCS_EXIT:-0}}"\n')
    fake(
        tools / "python3",
        f'echo "python3 $*" >> {log}\n'
        '[ "$1 $2 $3" = "-m venv .venv" ] || exit 99\n'
        f"mkdir -p .venv/bin && cp {tools / 'venv' / 'pip'} {tools / 'venv' / 'python'} {tools / 'venv' / 'mkdocs'} "
        ".venv/bin/\n",
    )
    return repo, tools, log


def run_ci(clone, pytest_exit, chromium, apt_get="exit 0", mkdocs_exit=0):
    """.ci/run with `chromium` where it looks for the browser, `apt_get` the script of apt-get, and
    mkdocs exiting `mkdocs_exit`."""
    repo, tools, log = clone
    fake(tools / "apt-get", f'echo "apt-get $*" >> {log}\n{apt_get}\n')
    env = {
        **os.environ,
        "PATH": f"{tools}:{os.environ['PATH']}",
        "FAKE_PYTEST_EXIT": str(pytest_exit),
        "FAKE_MKDOCS_EXIT": str(mkdocs_exit),
        "CHROMIUM": str(chromium),
    }
    done = subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


@pytest.mark.parametrize(("pytest_exit", "ci_exit"), [(0, 0), (1, 1), (2, 2), (5, 1)])
def test_ci_fails_when_pytest_fails_or_collects_nothing(clone, tmp_path, pytest_exit, ci_exit):
    chromium = fake(tmp_path / "chromium", "")
    done, calls = run_ci(clone, pytest_exit, chromium)
    tests = ["python3 -m venv .venv", "pip install -q -e .[dev]", "python -m pytest"]
    assert calls == tests + (["mkdocs build --strict"] if pytest_exit == 0 else [])  # docs once the tests pass
    assert done.returncode == ci_exit, done.stderr
    if pytest_exit == 5:
        assert "collected no tests" in done.stderr


@pytest.mark.parametrize("apt_get_exit", [100, 0])
def test_ci_fails_without_chromium_before_running_the_tests(clone, tmp_path, apt_get_exit):
    """apt-get fails, or succeeds without putting chromium where the tests look for it."""
    done, calls = run_ci(clone, 0, tmp_path / "no-chromium", f"exit {apt_get_exit}")
    assert done.returncode == 1
    assert "could not install chromium" in done.stderr or "is not there" in done.stderr
    assert calls and all(call.startswith("apt-get") for call in calls)  # the tests never ran


def test_ci_installs_chromium_when_missing_and_goes_on(clone, tmp_path):
    chromium = tmp_path / "chromium-to-be"
    installs = f'[ "$1" = install ] && printf "" > {chromium} && chmod +x {chromium}\nexit 0'
    done, calls = run_ci(clone, 0, chromium, installs)
    assert done.returncode == 0, done.stderr
    assert [call.split()[0] for call in calls] == ["apt-get", "apt-get", "python3", "pip", "python", "mkdocs"]


def test_ci_fails_when_the_documentation_does_not_build(clone, tmp_path):
    done, calls = run_ci(clone, 0, fake(tmp_path / "chromium", ""), mkdocs_exit=1)
    assert done.returncode == 1 and calls[-1] == "mkdocs build --strict"
    assert "the documentation does not build" in done.stderr


def gpu_skips(tmp_path, log_text):
    (tmp_path / "pytest.log").write_text(log_text)
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check_skips.py"), str(tmp_path / "pytest.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )


SUMMARY = """\
........s                                                                [100%]
=========================== short test summary info ============================
{skips}
8 passed, {n} skipped in 41.02s
"""


def test_gpu_check_allows_only_the_skips_for_more_gpus(tmp_path):
    allowed = "SKIPPED [1] tests/test_gpu.py:132: needs more GPUs than this machine has (2; it has 1)"
    done = gpu_skips(tmp_path, SUMMARY.format(skips=allowed, n=1))
    assert done.returncode == 0, done.stderr
    assert "tests/test_gpu.py:132: needs more GPUs than this machine has (2; it has 1) [allowed]" in done.stdout


@pytest.mark.parametrize(
    "reason", ["faiss has no GPU (install the gpu extra)", "no CUDA device", "could not import 'rawpy'"]
)
def test_gpu_check_fails_on_any_other_skip_and_names_it(tmp_path, reason):
    skips = "\n".join(
        [
            "SKIPPED [1] tests/test_gpu.py:132: needs more GPUs than this machine has (2; it has 1)",
            f"SKIPPED [2] tests/test_gpu.py:92: {reason}",
        ]
    )
    done = gpu_skips(tmp_path, SUMMARY.format(skips=skips, n=3))
    assert done.returncode == 1
    assert f"skipped 2 at tests/test_gpu.py:92: {reason} [NOT ALLOWED]" in done.stdout
    assert "[allowed]" in done.stdout and "2 GPU test(s) skipped" in done.stderr


def test_gpu_check_runs_the_skip_filter_on_the_tests_log():
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert 'benchmarks/gpu_check_skips.py "$log" || failed=1' in script
    assert script.index("gpu_check_skips.py") < script.index('rm -f "$log"')


def test_the_browser_tests_fail_without_chromium_instead_of_skipping(tmp_path):
    from .test_serve_browser import require_chromium

    with pytest.raises(pytest.fail.Exception, match="-m 'not browser'"):
        require_chromium(tmp_path / "chromium")


def test_every_run_reports_its_slowest_tests_times_out_hung_ones_and_uses_both_cores():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pytest_options = project["tool"]["pytest"]["ini_options"]
    addopts = pytest_options["addopts"].split()
    assert "--durations=25" in addopts and "--strict-markers" in addopts
    assert addopts[addopts.index("-n") + 1] == "2" and addopts[addopts.index("--dist") + 1] == "loadscope"
    assert pytest_options["timeout"] == 300
    dev = " ".join(project["project"]["optional-dependencies"]["dev"])
    assert "pytest-xdist" in dev and "pytest-timeout" in dev


def test_the_tests_of_a_file_or_of_a_class_share_a_worker(tmp_path):
    """What the suite relies on from --dist: the tests of a file run on one worker, in order (its
    module fixtures built once), and so do those of a class, whose file may be elsewhere; files
    are handed out in the collection's order (conftest.LONGEST_FIRST's), where xdist's default
    hands out the files of most tests first. (With pytest 9, --dist loadgroup silently ignores
    xdist_group marks: a check like this shows it.)"""
    import tomllib

    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    markers = "".join(f"\n    {marker}" for marker in options["markers"])
    record = (
        "import os, pathlib\n"
        "def note(name):\n"
        "    with open(pathlib.Path(__file__).parent / 'workers.txt', 'a') as f:\n"
        "        f.write(f\"{name} {os.environ['PYTEST_XDIST_WORKER']}\\n\")\n"
    )
    functions = "".join(f"def test_{i}():\n    note('f{i}')\n" for i in range(6))
    classes = "".join(
        f"class Test{c}:\n" + "".join(f"    def test_{i}(self):\n        note('{c}{i}')\n" for i in range(3))
        for c in "AB"
    )
    (tmp_path / "test_functions.py").write_text(record + functions)
    (tmp_path / "test_classes.py").write_text(record + classes)
    # One test, alphabetically last, put first by the collection as LONGEST_FIRST puts a file.
    (tmp_path / "test_zlast.py").write_text(record + "def test_z():\n    note('z')\n")
    (tmp_path / "conftest.py").write_text(
        "def pytest_collection_modifyitems(items):\n"
        "    items.sort(key=lambda item: item.path.name != 'test_zlast.py')\n"
    )
    (tmp_path / "pytest.ini").write_text(
        f"[pytest]\naddopts = {options['addopts']} -p no:cacheprovider\ntimeout = 60\nmarkers ={markers}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-2000:]
    lines = [line.split() for line in (tmp_path / "workers.txt").read_text().splitlines()]
    ran = dict(lines)
    assert len(ran) == 13
    assert next(name for name, worker in lines if worker == ran["z"]) == "z"  # its worker's first
    assert len({ran[f"f{i}"] for i in range(6)}) == 1
    assert [name for name in ran if name.startswith("f")] == [f"f{i}" for i in range(6)]  # in file order
    assert len({ran[f"A{i}"] for i in range(3)}) == len({ran[f"B{i}"] for i in range(3)}) == 1
    assert {ran[name] for name in ran} == {"gw0", "gw1"}  # both workers had work


def test_the_longest_files_start_first_and_exist():
    """conftest.LONGEST_FIRST names files that are there (a renamed one would silently go back
    to its alphabetical turn), and the collection puts them first, each file's tests in order."""
    from tests.conftest import LONGEST_FIRST, pytest_collection_modifyitems

    assert all((ROOT / "tests" / name).is_file() for name in LONGEST_FIRST)

    class Item:
        def __init__(self, name, test):
            self.path, self.name = Path(name), test

    items = [Item("test_a.py", 1), Item(LONGEST_FIRST[1], 1), Item("test_a.py", 2), Item(LONGEST_FIRST[0], 1)]
    items.append(Item(LONGEST_FIRST[1], 2))
    pytest_collection_modifyitems(items)
    order = [(item.path.name, item.name) for item in items]
    first, second = LONGEST_FIRST[:2]
    assert order == [(first, 1), (second, 1), (second, 2), ("test_a.py", 1), ("test_a.py", 2)]
