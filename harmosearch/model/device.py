"""The one module that knows about CUDA, faiss GPU resources and the CPU's thread pools."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
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
    """The dtype to autocast to, or None for plain fp32 (and for int8, whose runtime keeps its own
    types). auto: fp16 on GPU, fp32 on CPU (`inference_precision` resolves auto per CPU)."""
    import torch

    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "int8": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def training_precision(device: Any, precision: str) -> str:
    """What `train.precision = "auto"` means on this device: fp16 (with a grad scaler) on a GPU,
    bf16 on a CPU with native bf16 arithmetic (AVX512-BF16 or AMX), fp32 on other CPUs, where
    bf16 is emulated: a harmo-tiny step ran 11 times slower there (benchmarks/cpu_precision.py)."""
    if precision != "auto":
        return precision
    if device.type != "cpu":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def inference_precision(device: Any, precision: str, cache_dir: Path | None = None) -> str:
    """What `encoder.precision` means on this device. auto: fp16 on a GPU; on a CPU bf16 where it
    multiplies bf16 in hardware, else int8 where it has int8 dot products (VNNI) or, without
    them, where int8 measured faster than fp32 on this CPU (`int8_probe`, run once per machine
    and cached under `cache_dir`; not run without one), else fp32 (the speeds of each on one
    CPU: benchmarks/cpu_runtime.py). int8 is for CPUs, fp16 for GPUs."""
    if precision == "auto":
        if device.type != "cpu":
            return "fp16"
        features = cpu_features()
        if "bf16" in features:
            return "bf16"
        return "int8" if int8_suits(cache_dir) else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ConfigError("encoder.precision int8 is for CPUs; use fp16 or auto on a GPU")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 autocast is not supported on the CPU; use bf16, int8 or fp32")
    return precision


# Overrides what the CPU is found to do: "none", or a comma list of CPU_FEATURES, to see (and
# test) the path another machine takes. "int8" stands for the probe's verdict that int8 pays on
# a CPU without VNNI (model.int8_probe); while it is set the probe does not run.
CPU_FEATURES_ENV = "HARMOSEARCH_CPU_FEATURES"
CPU_FEATURES = ("bf16", "vnni", "int8")


def cpu_features() -> frozenset[str]:
    """What this CPU does in hardware that inference can use: "bf16" (bf16 matrix products:
    AVX512-BF16 or AMX tiles) and "vnni" (int8 dot products: AVX512-VNNI or AVX-VNNI), as torch
    detects them, or as HARMOSEARCH_CPU_FEATURES says (which may also name "int8")."""
    override = os.environ.get(CPU_FEATURES_ENV)
    if override is not None:
        named = {word.strip().lower() for word in override.split(",")} - {"", "none"}
        unknown = sorted(named - set(CPU_FEATURES))
        if unknown:
            raise ConfigError(
                f"{CPU_FEATURES_ENV}={override!r}: unknown feature {unknown[0]!r}; "
                f"use none or a comma list of {', '.join(CPU_FEATURES)}"
            )
        return frozenset(named)
    import torch

    def has(*probes: str) -> bool:
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)

    found = {"bf16"} if has("_is_avx512_bf16_supported", "_is_amx_tile_supported") else set()
    return frozenset(found | ({"vnni"} if has("_is_vnni_supported") else set()))


def int8_suits(cache_dir: Path | None = None) -> bool:
    """Whether int8 is this CPU's fast path: it has VNNI, or the int8 probe, cached under
    `cache_dir`, measured int8 faster than fp32 here (not run without a `cache_dir`, nor while
    HARMOSEARCH_CPU_FEATURES says what the CPU does)."""
    if cpu_features() & {"vnni", "int8"}:
        return True
    if cache_dir is None or CPU_FEATURES_ENV in os.environ:
        return False
    from harmosearch.model.int8_probe import int8_pays

    return int8_pays(cache_dir)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX tiles)."""
    return "bf16" in cpu_features()


@contextlib.contextmanager
def autocast(device: Any, precision: str) -> Iterator[None]:
    import torch

    dtype = autocast_dtype(device, precision)
    if dtype is None:
        yield
        return
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("fp16 autocast is not supported on the CPU; use bf16, int8 or fp32")
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@contextlib.contextmanager
def one_thread_per_pool() -> Iterator[None]:
    """The block runs with every OpenMP and BLAS thread pool loaded (faiss's, torch's, numpy's) at
    one thread, and each back as it was after. A query's numeric work is small: one query vector
    against FAISS, which splits a search over its queries (one query is one thread's work
    anyway), and products over a few hundred candidates' regions. With two threads per pool on
    2 cores, each pool's idle threads spin against the others' work: a warm query at 1M regions
    took 2.4x its time at one thread (benchmarks/query_threads.py)."""
    with _thread_pools().limit(limits=1):
        yield


@functools.cache
def _thread_pools() -> Any:
    """The thread pools of the libraries loaded at the first call (threadpoolctl finds them once;
    a query has loaded numpy, faiss and the encoder's torch by then)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    faiss = faiss_module()

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def faiss_wheels() -> list[str]:
    """The faiss wheels installed (faiss-cpu, faiss-gpu-cu12, ...): each installs the module faiss."""
    from importlib import metadata

    names = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
    return sorted(name for name in names if name == "faiss-cpu" or name.startswith("faiss-gpu"))


def faiss_install_problem(wheels: list[str], has_gpu_code: bool, import_error: str | None) -> str | None:
    """What is wrong with the installed faiss, as one line that says what to run, or None.

    faiss-cpu and faiss-gpu-* install files under the same module `faiss`, and pip lets the last
    one installed overwrite the other's: after `pip install harmosearch[gpu]` (which pulls in both)
    the module is either build or a mix of their files, and uninstalling or upgrading one of them
    deletes files the other needs. So two builds at once are refused, whichever works today."""
    gpu = [w for w in wheels if w.startswith("faiss-gpu")]
    if "faiss-cpu" in wheels and gpu:
        return (
            f"faiss-cpu and {gpu[0]} are both installed and overwrite each other's module faiss; keep one: "
            f"pip uninstall -y faiss-cpu {' '.join(gpu)} && pip install {gpu[0]} (or faiss-cpu without a GPU)"
        )
    if import_error is not None:
        wheel = wheels[0] if wheels else "faiss-cpu"
        return f"cannot import faiss ({import_error}); run: pip install --force-reinstall --no-deps {wheel}"
    if gpu and not has_gpu_code:
        return (
            f"{gpu[0]} is installed, but the module faiss has no GPU code; run: pip install --force-reinstall {gpu[0]}"
        )
    return None


@functools.cache
def faiss_module() -> Any:
    """The module faiss, checked once per process: ConfigError with what to run when the
    installed builds clash or it cannot be imported (`faiss_install_problem`)."""
    try:
        import faiss
    except ImportError as exc:
        faiss, error = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        error = None
    problem = faiss_install_problem(faiss_wheels(), hasattr(faiss, "StandardGpuResources"), error)
    if problem:
        raise ConfigError(problem)
    return faiss


def faiss_to_gpu(index: Any, shard: bool = False, required: bool = False) -> Any:
    """A copy of a faiss index on every visible GPU: replicated, or with `shard` split between
    them. Flat and IVF-Flat data is stored in float16 there (exact for harmosearch's float16
    vectors) and IVF-PQ uses float16 lookup tables. An exact SQfp16 index becomes a float16 Flat
    index. Without a GPU, or for a type faiss cannot run on GPUs (HNSW, fast-scan PQ), the index
    is returned as it is; with `required`, a missing GPU is a ConfigError instead."""
    faiss = faiss_module()
    if gpu_count() == 0:
        if required:
            raise ConfigError(
                "FAISS on GPUs was asked for, but faiss sees no GPU; install harmosearch[gpu] "
                "on a machine with CUDA, or set search.faiss_gpu = off"
            )
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
    faiss = faiss_module()

    return isinstance(index, faiss.IndexScalarQuantizer) and index.sq.qtype == faiss.ScalarQuantizer.QT_fp16


def _flat_copy(index: Any) -> Any:
    """A Flat index holding the vectors of a flat-codes index (as the GPU stores them)."""
    faiss = faiss_module()

    flat = faiss.IndexFlat(index.d, index.metric_type)
    if index.ntotal:
        flat.add(index.reconstruct_n(0, index.ntotal))
    return flat


def faiss_to_cpu(index: Any) -> Any:
    """A CPU copy of an index faiss_to_gpu made (any machine can open it once written); a CPU
    index is returned as it is."""
    faiss = faiss_module()

    if gpu_count() == 0 or not hasattr(faiss, "index_gpu_to_cpu"):
        return index
    try:
        return faiss.index_gpu_to_cpu(index)
    except (RuntimeError, TypeError, AttributeError):
        return index  # already a CPU index
