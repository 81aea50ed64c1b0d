import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.pop("HARMOSEARCH_MODEL", None)  # the tests name their models

TEST_MODEL = "harmo-test-vit:random"


@pytest.fixture(scope="session")
def test_encoder():
    from harmosearch.config import load_config
    from harmosearch.encoder import load_encoder

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
