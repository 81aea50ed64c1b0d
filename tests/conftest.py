import os
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.pop("HARMOSEARCH_MODEL", None)  # the tests name their models
# The reference path (fp32 through torch) on every machine; the tests of the other paths name
# the CPU features they mean (model.device.cpu_features).
os.environ.setdefault("HARMOSEARCH_CPU_FEATURES", "none")

TEST_MODEL = "harmo-test-vit:random"


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
