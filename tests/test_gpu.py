"""CUDA and faiss-GPU paths, checked against the CPU. Run with: pytest -m gpu (needs a GPU)."""

import numpy as np
import pytest
import torch

from harmosearch.config import load_config
from harmosearch.model.encoder import load_encoder

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
    # a query's lexemes too: the padding cut where the mask lives (TextParts.without_padding)
    (q_cpu,), (q_gpu,) = (e.encode_queries(["two red circles left of a blue star"]) for e in (cpu, gpu))
    assert torch.allclose(q_cpu.lexeme_vectors, q_gpu.lexeme_vectors, atol=1e-4)


def test_faiss_gpu_search_matches_cpu():
    from harmosearch.model.device import faiss_to_gpu, gpu_count
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


def faiss_gpus() -> int:
    from harmosearch.model.device import gpu_count

    return gpu_count()


def test_ivf_pq_trained_and_filled_on_the_gpu_then_rescored_finds_the_exact_top_10():
    """build_shards trains and adds on the GPU whenever faiss has one; the index it returns is a
    CPU index (written and opened like any other), shards sharing the GPU-trained quantizers."""
    if faiss_gpus() == 0:
        pytest.skip("faiss has no GPU (install the gpu extra)")
    from harmosearch.store import ShardedIndex, build_shards, rescore_exact, search_vectors, tune

    from .test_large_index import clustered, exact_top, recall

    data, queries = clustered(20_000, 64, seed=11)
    shards = list(build_shards(data, "IVF64,PQ16", 7_000))
    assert [s.ntotal for s in shards] == [7_000, 7_000, 6_000] and "Gpu" not in type(shards[0]).__name__
    index = ShardedIndex(shards)
    tune(index, 16, 64)
    _, candidates = search_vectors(index, queries, 200)
    _, ids = rescore_exact(queries, candidates, data, 10)
    assert recall(ids, exact_top(data, queries, 10)) >= 0.95


@pytest.mark.parametrize("mode", ["replicate", "shard"])
def test_an_index_searched_on_the_gpus_answers_as_on_the_cpu(tmp_path, mode):
    """search.faiss_gpu: the global and region indexes copied onto the GPUs (a copy each, or split
    between them) give the same results as the CPU."""
    if faiss_gpus() == 0:
        pytest.skip("faiss has no GPU (install the gpu extra)")
    from harmosearch.config import Config, SearchConfig
    from harmosearch.search import Index

    from .fakes import FakeEncoder
    from .test_large_index import generation
    from .test_search import SCENES, make_data

    generation(tmp_path, make_data(SCENES), shard_size=5)
    cpu = Index(tmp_path / "idx", Config(search=SearchConfig(box_margin=0.0)), encoder=FakeEncoder())
    gpu = Index(tmp_path / "idx", Config(search=SearchConfig(box_margin=0.0, faiss_gpu=mode)), encoder=FakeEncoder())
    assert set(gpu.gpu_indexes) == {"global", "regions"}
    for text in ("a red circle", "red circle near a blue star"):
        want = [(r.path, round(r.score, 4)) for r in cpu.search(text, k=5).results]
        assert [(r.path, round(r.score, 4)) for r in gpu.search(text, k=5).results] == want


def test_two_gpus_train_together_under_torchrun(tmp_path):
    """DDP over NCCL: 2 processes, one GPU each, train 2 steps and rank 0 writes the model."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs more GPUs than this machine has (2; it has {torch.cuda.device_count()})")
    import os
    import subprocess
    import sys
    from pathlib import Path

    from harmosearch.config import SynthConfig
    from harmosearch.synth import generate

    generate(tmp_path / "scenes", SynthConfig(n=16, seed=5, size=96))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = ["-m", "harmosearch", "train", "--data", str(tmp_path / "scenes"), "--out", str(tmp_path / "run")]
    options = ["--model", TEST_MODEL, "--device", "cuda", "--batch-size", "8", "--max-steps", "2", "--workers", "0"]
    done = subprocess.run(launcher + command + options, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 2 steps") == 1
    assert (tmp_path / "run" / "final" / "harmosearch.json").is_file()
