"""The int8 probe: on a CPU without VNNI, auto takes int8 only where it measured faster here."""

import json

import numpy as np
import pytest
import torch

from harmosearch.config import EncoderConfig
from harmosearch.model import device, int8_probe, runtimes
from harmosearch.model.runtimes import InferencePath, resolve_path

CPU = torch.device("cpu")


@pytest.fixture
def unnamed_cpu(monkeypatch):
    """A CPU without bf16 or VNNI, as torch detects it, and no HARMOSEARCH_CPU_FEATURES."""
    monkeypatch.delenv("HARMOSEARCH_CPU_FEATURES", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(int8_probe, "machine_key", lambda: "test cpu")
    monkeypatch.setattr(runtimes, "onnxruntime_installed", lambda: True)


def probe_measuring(monkeypatch, speedup):
    calls = []

    def measure():
        calls.append(speedup)
        if isinstance(speedup, Exception):
            raise speedup
        return speedup

    monkeypatch.setattr(int8_probe, "measure_speedup", measure)
    return calls


def test_the_verdict_is_measured_once_per_machine_and_cached(tmp_path, monkeypatch, unnamed_cpu):
    calls = probe_measuring(monkeypatch, 2.0)
    assert int8_probe.int8_pays(tmp_path)
    assert int8_probe.int8_pays(tmp_path)
    assert calls == [2.0]  # the second call read the cache
    assert json.loads((tmp_path / "cpu_probe.json").read_text())["test cpu"]["speedup"] == 2.0
    assert int8_probe.measured_speedup(tmp_path) == 2.0
    monkeypatch.setattr(int8_probe, "machine_key", lambda: "another cpu")
    probe_measuring(monkeypatch, 1.1)  # below MIN_SPEEDUP: fp32 pays as well there
    assert not int8_probe.int8_pays(tmp_path)
    assert set(json.loads((tmp_path / "cpu_probe.json").read_text())) == {"test cpu", "another cpu"}


@pytest.mark.parametrize("error", [RuntimeError("no kernels\nat line 2"), AssertionError()])
def test_a_probe_that_cannot_run_decides_fp32_once_and_says_why(tmp_path, monkeypatch, unnamed_cpu, error):
    calls = probe_measuring(monkeypatch, error)
    assert not int8_probe.int8_pays(tmp_path)
    assert not int8_probe.int8_pays(tmp_path)
    assert len(calls) == 1  # the failure is cached: not retried at every start
    entry = json.loads((tmp_path / "cpu_probe.json").read_text())["test cpu"]
    assert entry["speedup"] == 0 and entry["error"] == (str(error).splitlines() or ["AssertionError"])[0]


def test_without_onnxruntime_there_is_no_probe_and_auto_stays_fp32(tmp_path, monkeypatch, unnamed_cpu):
    calls = probe_measuring(monkeypatch, 3.0)
    monkeypatch.setattr(runtimes, "onnxruntime_installed", lambda: False)
    assert not int8_probe.int8_pays(tmp_path)
    assert int8_probe.measured_speedup(tmp_path) is None
    assert resolve_path(CPU, EncoderConfig(), tmp_path) == InferencePath("fp32", "torch")
    assert calls == [] and not (tmp_path / "cpu_probe.json").exists()


def test_damaged_entries_are_measured_again(tmp_path, monkeypatch, unnamed_cpu):
    kept = {"speedup": 1.8, "measured": "then"}
    for damaged in ({}, 3, {"speedup": "x"}, {"speedup": float("nan")}, None):
        (tmp_path / "cpu_probe.json").write_text(json.dumps({"test cpu": damaged, "other cpu": kept}))
        calls = probe_measuring(monkeypatch, 1.5)
        assert int8_probe.int8_pays(tmp_path) and calls == [1.5]
        assert json.loads((tmp_path / "cpu_probe.json").read_text())["other cpu"] == kept
    (tmp_path / "cpu_probe.json").write_text("{not json")
    probe_measuring(monkeypatch, 1.1)
    assert not int8_probe.int8_pays(tmp_path)


def test_the_key_names_onnxruntime_whichever_wheel_installed_it(monkeypatch):
    pytest.importorskip("onnxruntime")
    from importlib import metadata

    import onnxruntime

    def no_such_distribution(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", no_such_distribution)  # as under onnxruntime-gpu
    key = int8_probe.machine_key()
    assert f"|onnxruntime {onnxruntime.__version__}|probe {int8_probe.PROBE_VERSION}" in key
    assert key.count("|") == 3 and "threads" not in key  # every process of a machine shares it


def test_auto_takes_int8_without_vnni_only_where_the_probe_says_it_pays(tmp_path, monkeypatch, unnamed_cpu):
    probe_measuring(monkeypatch, 1.9)
    assert resolve_path(CPU, EncoderConfig(), tmp_path) == InferencePath("int8", "onnxruntime")
    assert resolve_path(CPU, EncoderConfig(runtime="onnxruntime"), tmp_path) == InferencePath("int8", "onnxruntime")
    assert resolve_path(CPU, EncoderConfig(), None) == InferencePath("fp32", "torch")  # no cache: no probe
    probe_measuring(monkeypatch, 1.2)
    assert resolve_path(CPU, EncoderConfig(), tmp_path / "other") == InferencePath("fp32", "torch")
    assert resolve_path(CPU, EncoderConfig(precision="fp32"), tmp_path) == InferencePath("fp32", "torch")


def test_named_features_rule_and_the_probe_does_not_run(tmp_path, monkeypatch, unnamed_cpu):
    calls = probe_measuring(monkeypatch, 3.0)
    monkeypatch.setenv("HARMOSEARCH_CPU_FEATURES", "none")
    assert device.inference_precision(CPU, "auto", tmp_path) == "fp32"
    monkeypatch.setenv("HARMOSEARCH_CPU_FEATURES", "int8")  # the probe's verdict, named
    assert device.inference_precision(CPU, "auto", tmp_path) == "int8"
    monkeypatch.setenv("HARMOSEARCH_CPU_FEATURES", "int8,bf16")
    assert device.inference_precision(CPU, "auto", tmp_path) == "bf16"
    assert calls == []


def test_the_probe_times_the_quantised_mlp_against_fp32():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rng = np.random.default_rng(1)
    first = rng.standard_normal((int8_probe.WIDTH, 64)).astype(np.float32) / 28
    second = rng.standard_normal((64, int8_probe.WIDTH)).astype(np.float32) / 8
    tokens = rng.standard_normal((5, int8_probe.WIDTH)).astype(np.float32)
    (out,) = int8_probe._int8_mlp(first, second)({"tokens": tokens})
    reference = np.maximum(tokens @ first, 0) @ second
    cosine = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.mean() > 0.99  # the same products, in int8
    speedup = int8_probe.measure_speedup(rounds=2, rows=16, width=64, hidden=128)
    assert np.isfinite(speedup) and speedup > 0
