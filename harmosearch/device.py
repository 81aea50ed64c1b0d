"""The one module that knows about CUDA and faiss GPU resources."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from harmosearch.errors import ConfigError


def resolve_device(name: str = "auto") -> Any:
    """auto -> cuda when available, else cpu. Asking for cuda without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def device_for_gpus(gpus: float) -> str:
    """The torch device of a worker granted `gpus` GPUs (a Ray actor; fractions share one)."""
    return "cuda" if gpus > 0 else "cpu"


def rank_device(device: Any, local_rank: int) -> Any:
    """The device of a training process torchrun started: its own GPU (cuda:LOCAL_RANK) when the
    run is on GPUs, the CPU otherwise."""
    import torch

    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"training process {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); "
            "start at most one process per GPU (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def distributed_backend(device: Any) -> str:
    """torch.distributed's backend for the device: NCCL between GPUs, gloo between CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def autocast_dtype(device: Any, precision: str) -> Any:
    """The dtype to autocast to, or None for plain fp32. auto: fp16 on GPU, fp32 on CPU."""
    import torch

    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@contextlib.contextmanager
def autocast(device: Any, precision: str) -> Iterator[None]:
    import torch

    dtype = autocast_dtype(device, precision)
    if dtype is None:
        yield
        return
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("fp16 autocast is not supported on the CPU; use bf16 or fp32")
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def faiss_to_gpu(index: Any) -> Any:
    """Move a faiss index onto all visible GPUs; the index is returned unchanged without one."""
    import faiss

    if gpu_count() == 0:
        return index
    return faiss.index_cpu_to_all_gpus(index)


def faiss_to_cpu(index: Any) -> Any:
    import faiss

    if gpu_count() == 0 or not hasattr(faiss, "index_gpu_to_cpu"):
        return index
    try:
        return faiss.index_gpu_to_cpu(index)
    except (RuntimeError, TypeError, AttributeError):
        return index  # already a CPU index
