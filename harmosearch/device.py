"""The one module that knows about CUDA and faiss GPU resources."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

from harmosearch.errors import ConfigError

logger = logging.getLogger(__name__)


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


@functools.cache
def faiss_gpu_problem() -> str | None:
    """Why faiss cannot use GPUs although a faiss GPU build is installed, or None. faiss-cpu and
    faiss-gpu-cu12 both install the module `faiss`; whichever pip wrote last is the one imported."""
    from importlib import metadata

    builds = sorted(
        {name for d in metadata.distributions() if (name := d.metadata["Name"] or "").lower().startswith("faiss-gpu")}
    )
    if not builds:
        return None
    import faiss

    if hasattr(faiss, "StandardGpuResources"):
        return None
    return (
        f"{builds[0]} is installed, but the faiss module imported is faiss-cpu's (both install the module faiss); "
        f"run: pip install --force-reinstall --no-deps {builds[0]}"
    )


def faiss_to_gpu(index: Any, shard: bool = False, required: bool = False) -> Any:
    """A copy of a faiss index on every visible GPU: replicated, or with `shard` split between
    them. Flat and IVF-Flat data is stored in float16 there (exact for harmosearch's float16
    vectors) and IVF-PQ uses float16 lookup tables. An exact SQfp16 index becomes a float16 Flat
    index. Without a GPU, or for a type faiss cannot run on GPUs (HNSW, fast-scan PQ), the index
    is returned as it is; with `required`, a missing GPU is a ConfigError instead."""
    import faiss

    problem = faiss_gpu_problem()
    if problem or gpu_count() == 0:
        if required:
            raise ConfigError(
                problem
                or "FAISS on GPUs was asked for, but faiss sees no GPU; install harmosearch[gpu] "
                "on a machine with CUDA, or set search.faiss_gpu = off"
            )
        if problem:
            logger.warning(problem)
        return index
    options = faiss.GpuMultipleClonerOptions()
    options.shard = shard
    options.useFloat16 = True
    source = _flat_copy(index) if _is_fp16_codes(index) else index
    try:
        return faiss.index_cpu_to_all_gpus(source, co=options)
    except (RuntimeError, TypeError) as exc:
        logger.info("faiss index %s stays on the CPU: %s", type(index).__name__, str(exc).splitlines()[0])
        return index


def _is_fp16_codes(index: Any) -> bool:
    import faiss

    return isinstance(index, faiss.IndexScalarQuantizer) and index.sq.qtype == faiss.ScalarQuantizer.QT_fp16


def _flat_copy(index: Any) -> Any:
    """A Flat index holding the vectors of a flat-codes index (as the GPU stores them)."""
    import faiss

    flat = faiss.IndexFlat(index.d, index.metric_type)
    if index.ntotal:
        flat.add(index.reconstruct_n(0, index.ntotal))
    return flat


def faiss_to_cpu(index: Any) -> Any:
    """A CPU copy of an index faiss_to_gpu made (any machine can open it once written); a CPU
    index is returned as it is."""
    import faiss

    if gpu_count() == 0 or not hasattr(faiss, "index_gpu_to_cpu"):
        return index
    try:
        return faiss.index_gpu_to_cpu(index)
    except (RuntimeError, TypeError, AttributeError):
        return index  # already a CPU index
