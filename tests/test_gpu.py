"""CUDA and faiss-GPU paths, checked against the CPU. Run with: pytest -m gpu (needs a GPU)."""

import numpy as np
import pytest
import torch

from harmosearch.config import load_config
from harmosearch.encoder import load_encoder

from .conftest import TEST_MODEL

pytestmark = pytest.mark.gpu


def test_cuda_encoding_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cpu = load_encoder(load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu"}))
    gpu = load_encoder(
        load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cuda", "encoder.precision": "fp32"})
    )
    g_cpu, d_cpu = cpu.encode_pixels(pixels)
    g_gpu, d_gpu = gpu.encode_pixels(pixels)
    assert torch.allclose(g_cpu, g_gpu, atol=1e-4) and torch.allclose(d_cpu, d_gpu, atol=1e-3)
    half = load_encoder(load_config(overrides={"encoder.model": TEST_MODEL, "encoder.device": "cuda"}))
    g_half, _ = half.encode_pixels(pixels)  # auto precision = fp16 autocast on GPU
    assert float((g_half * g_cpu).sum(-1).min()) > 0.99
    texts = cpu.encode_texts(["a red circle"]), gpu.encode_texts(["a red circle"])
    assert torch.allclose(*texts, atol=1e-4)


def test_faiss_gpu_search_matches_cpu():
    from harmosearch.device import faiss_to_gpu, gpu_count
    from harmosearch.store import build_faiss

    if gpu_count() == 0:
        pytest.skip("faiss has no GPU (install the gpu extra)")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5000, 64)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    cpu = build_faiss(data, "Flat")
    gpu = faiss_to_gpu(build_faiss(data, "Flat"))
    _, a = cpu.search(data[:20], 10)
    _, b = gpu.search(data[:20], 10)
    assert (a == b).mean() > 0.99
    ivf = build_faiss(data, "IVF64,Flat")  # trained on the GPU, stored on the CPU
    assert ivf.ntotal == 5000 and ivf.is_trained


def test_cuda_training_with_amp_and_every_loss(tmp_path):
    """fp16 AMP on the GPU (uint8 batches finished on the device, the pixel cache, TIGHT's
    off-object boxes): a few steps run, the losses stay finite, the checkpoint loads on the CPU."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import json

    from harmosearch.config import SynthConfig
    from harmosearch.synth import generate
    from harmosearch.train.loop import train

    generate(tmp_path / "scenes", SynthConfig(n=16, seed=5, size=96))
    config = load_config(
        overrides={
            "encoder.model": "harmo-test-vit:random",
            "encoder.device": "cuda",
            "train.losses": "gc,lrc,gr,tight",
            "train.batch_size": 8,
            "train.epochs": 2,
            "train.workers": 0,
        }
    )
    history = []
    result = train(config, tmp_path / "scenes", tmp_path / "run", on_step=history.append)
    assert result.steps == 4 and all(np.isfinite(m["total"]) and m["tight"] > 0 for m in history)
    meta = json.loads((result.final / "harmosearch.json").read_text())
    assert meta["config"]["train"]["precision"] == "auto" and meta["step"] == 4
    cpu = load_encoder(load_config(overrides={"encoder.model": str(result.final), "encoder.device": "cpu"}))
    assert cpu.encode_texts(["a red circle"]).isfinite().all()
