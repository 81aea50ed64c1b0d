"""The faiss install check: two faiss builds, a module that cannot be imported, a GPU build
whose files were overwritten; each refused in one line that says what to run. No GPU needed."""

import builtins
import sys

import pytest

from harmosearch.errors import ConfigError
from harmosearch.model import device


@pytest.mark.parametrize(
    ("wheels", "gpu_code", "error", "expected"),
    [
        (["faiss-cpu"], False, None, None),
        (["faiss-gpu-cu12"], True, None, None),
        (
            ["faiss-cpu", "faiss-gpu-cu12"],
            True,
            None,
            "faiss-cpu and faiss-gpu-cu12 are both installed and overwrite each other's module faiss; keep one: "
            "pip uninstall -y faiss-cpu faiss-gpu-cu12 && pip install faiss-gpu-cu12 (or faiss-cpu without a GPU)",
        ),
        (
            ["faiss-cpu", "faiss-gpu-cu11", "faiss-gpu-cu12"],
            False,
            "No module named 'faiss._swigfaiss'",
            "faiss-cpu and faiss-gpu-cu11 are both installed and overwrite each other's module faiss; keep one: "
            "pip uninstall -y faiss-cpu faiss-gpu-cu11 faiss-gpu-cu12 && pip install faiss-gpu-cu11 "
            "(or faiss-cpu without a GPU)",
        ),
        (
            ["faiss-gpu-cu12"],
            False,
            None,
            "faiss-gpu-cu12 is installed, but the module faiss has no GPU code; "
            "run: pip install --force-reinstall faiss-gpu-cu12",
        ),
        (
            ["faiss-cpu"],
            False,
            "libfaiss.so: cannot open shared object file",
            "cannot import faiss (libfaiss.so: cannot open shared object file); "
            "run: pip install --force-reinstall --no-deps faiss-cpu",
        ),
        (
            [],
            False,
            "No module named 'faiss'",
            "cannot import faiss (No module named 'faiss'); run: pip install --force-reinstall --no-deps faiss-cpu",
        ),
    ],
)
def test_each_install_state_gets_its_remedy(wheels, gpu_code, error, expected):
    assert device.faiss_install_problem(wheels, gpu_code, error) == expected


def test_this_environment_has_one_working_faiss():
    assert device.faiss_wheels() == ["faiss-cpu"]
    assert device.faiss_module() is sys.modules["faiss"]


@pytest.fixture()
def fresh_check(monkeypatch):
    """faiss_module as on a process's first call, with the installed wheels of the test's choice."""
    device.faiss_module.cache_clear()
    yield lambda wheels: monkeypatch.setattr(device, "faiss_wheels", lambda: wheels)
    device.faiss_module.cache_clear()


def test_two_builds_are_refused_where_faiss_is_first_used(fresh_check, tmp_path):
    """The check runs inside the store's first faiss call, so every command says it in one line."""
    import numpy as np

    from harmosearch.store import build_faiss

    fresh_check(["faiss-cpu", "faiss-gpu-cu12"])
    with pytest.raises(ConfigError, match=r"^faiss-cpu and faiss-gpu-cu12 are both installed"):
        build_faiss(np.zeros((4, 8), np.float32), "Flat")


def test_a_module_that_cannot_be_imported_is_named(fresh_check, monkeypatch):
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("libfaiss.so: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    fresh_check(["faiss-cpu"])
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ConfigError) as caught:
        device.faiss_module()
    assert str(caught.value) == (
        "cannot import faiss (libfaiss.so: cannot open shared object file); "
        "run: pip install --force-reinstall --no-deps faiss-cpu"
    )


def test_training_precision_auto_uses_bf16_only_where_the_cpu_has_it(monkeypatch):
    import torch

    from harmosearch.model.device import training_precision

    monkeypatch.delenv("HARMOSEARCH_CPU_FEATURES", raising=False)  # torch's detection, mocked here
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert training_precision(cpu, "auto") == expected
        assert training_precision(gpu, "auto") == "fp16"
        for chosen in ("fp32", "bf16", "fp16"):
            assert training_precision(cpu, chosen) == chosen
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert training_precision(cpu, "auto") == "bf16"


def test_cpu_features_come_from_torch_unless_the_environment_names_them(monkeypatch):
    import torch

    from harmosearch.model.device import cpu_features

    monkeypatch.delenv("HARMOSEARCH_CPU_FEATURES", raising=False)
    probes = {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": True, "_is_vnni_supported": True}
    for name, value in probes.items():
        monkeypatch.setattr(torch.cpu, name, lambda value=value: value)
    assert cpu_features() == {"bf16", "vnni"}
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert cpu_features() == {"vnni"}
    monkeypatch.setenv("HARMOSEARCH_CPU_FEATURES", "none")
    assert cpu_features() == frozenset()
    monkeypatch.setenv("HARMOSEARCH_CPU_FEATURES", "VNNI, bf16")
    assert cpu_features() == {"bf16", "vnni"}
    monkeypatch.setenv("HARMOSEARCH_CPU_FEATURES", "avx9")
    with pytest.raises(ConfigError, match="unknown feature 'avx9'"):
        cpu_features()


@pytest.mark.parametrize(
    ("features", "expected"), [("bf16,vnni", "bf16"), ("bf16", "bf16"), ("vnni", "int8"), ("none", "fp32")]
)
def test_inference_precision_auto_follows_the_cpu(monkeypatch, features, expected):
    import torch

    from harmosearch.model.device import inference_precision

    monkeypatch.setenv("HARMOSEARCH_CPU_FEATURES", features)
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert inference_precision(cpu, "auto") == expected
    assert inference_precision(gpu, "auto") == "fp16"
    for chosen in ("fp32", "bf16", "int8"):
        assert inference_precision(cpu, chosen) == chosen
    with pytest.raises(ConfigError, match="int8 is for CPUs"):
        inference_precision(gpu, "int8")
    with pytest.raises(ConfigError, match="not supported on the CPU"):
        inference_precision(cpu, "fp16")
