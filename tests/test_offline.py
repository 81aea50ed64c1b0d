"""Model loading without a connection: the hub is probed quickly, a cached model still loads, a
missing one fails at once with one line. No test here touches the network: the hub's address is
a local port."""

import logging
import socket
import threading
import time
import warnings

import pytest

from harmosearch.config import DEFAULT_MODEL, Config
from harmosearch.errors import ModelLoadError
from harmosearch.model import loading
from harmosearch.model.loading import (
    fetches_from_hub,
    hub_reachable,
    load_model,
    resolve_spec,
    write_model_bundle,
)


@pytest.fixture()
def hub(monkeypatch):
    """The hub's address: a local port, closed until the test listens on it; HF_HUB_OFFLINE unset."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        yield server


def test_a_closed_hub_is_unreachable_at_once_and_an_open_one_reachable(hub):
    started = time.monotonic()
    assert not hub_reachable()
    assert time.monotonic() - started < 2
    hub.listen()
    assert hub_reachable()


def test_hf_hub_offline_means_unreachable(hub, monkeypatch):
    hub.listen()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()


def test_a_name_lookup_that_hangs_is_given_up(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    answer = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answer.wait(10) and [])
    started = time.monotonic()
    assert not hub_reachable(timeout=0.2)
    assert time.monotonic() - started < 1
    answer.set()


@pytest.mark.parametrize(
    ("spec", "hub"),
    [
        (DEFAULT_MODEL, True),
        ("hf-hub:org/repo", True),
        ("ViT-B-16:/weights/model.pt", False),
        ("ViT-B-16:weights.safetensors", False),
        ("harmo-test-vit:random", False),
        ("harmo-tiny", False),
    ],
)
def test_which_specs_fetch_from_the_hub(spec, hub):
    assert fetches_from_hub(resolve_spec(spec)) is hub


def test_offline_without_a_cached_copy_fails_before_open_clip_loads(hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(loading, "create_model", lambda *a: pytest.fail("open_clip was asked"))
    with pytest.raises(ModelLoadError, match=r"could not fetch model 'ViT-B-16:laion2b_s34b_b88k' \(the default"):
        load_model(resolve_spec(DEFAULT_MODEL))


def cache_model(cache, repo):
    """A model in the Hugging Face cache's layout, as if downloaded earlier: refs/main names a
    snapshot that holds open_clip's files."""
    model, _ = load_model(resolve_spec("harmo-test-vit:random"))
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    architecture = loading.model_config_of(resolve_spec("harmo-test-vit:random"))
    write_model_bundle(model, architecture, folder / "snapshots" / commit, Config())
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return model


def test_offline_a_cached_model_loads_from_the_cache_quietly(hub, monkeypatch, tmp_path):
    import torch
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cached = cache_model(tmp_path / "hub", "org/tiny")
    level = logging.getLogger("huggingface_hub").level
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        model, _ = load_model(resolve_spec("hf-hub:org/tiny"))
    assert not shown
    assert constants.HF_HUB_OFFLINE is False and logging.getLogger("huggingface_hub").level == level
    for name, tensor in cached.state_dict().items():
        assert torch.equal(model.state_dict()[name].float(), tensor.float()), name


def test_offline_with_other_models_cached_the_missing_one_fails_without_retries(hub, monkeypatch, tmp_path):
    """Some open_clip weights are cached, so open_clip is asked; huggingface_hub, offline for the
    load, finds no copy and gives up at once instead of retrying for most of a minute."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cache_model(tmp_path / "hub", "org/tiny")
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"could not fetch model 'ViT-B-16:laion2b_s34b_b88k' \(the default"):
        load_model(resolve_spec(DEFAULT_MODEL))
    assert time.monotonic() - started < 15  # huggingface_hub's retries alone wait 23 s
    assert constants.HF_HUB_OFFLINE is False
