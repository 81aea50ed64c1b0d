"""Whether int8 pays on a CPU without VNNI: a short measured probe, cached per machine.

On a CPU with VNNI, `encoder.precision = "auto"` takes int8 from the CPU's features alone. On
one without (an x86 CPU with AVX2 only, or an ARM CPU, which torch never says has VNNI), ONNX
Runtime's int8 kernels are slower than VNNI's but may still beat fp32: on an AVX2-only AMD EPYC,
ViT-B/16 encoded 1.55-1.69x faster in int8 (`encode.jsonl`, `cpu_runtime.jsonl`). Whether they
do depends on the CPU, so it is measured, not guessed: the transformer MLP of a ViT-B block
(768 -> 3072 -> 768 over four pictures' tokens), through torch in fp32 and through ONNX Runtime
quantised as the towers are (`runtimes.quantise_int8`), at the thread count of the process that
probes. Most of a tower's time is in such products (on that EPYC the MLP ran 2.1-2.4x faster in
int8 and the whole tower 1.55-1.69x), so a probe speed-up of MIN_SPEEDUP, about 1.2x for a whole
tower, is where int8 starts to pay. The verdict is cached under paths.cache, keyed by the CPU's
model and flags and the versions of ONNX Runtime and of the probe, so every process on a machine
takes the same path; it takes about three seconds once, under a lock, so that processes starting
together measure once and not against each other. A probe that fails is cached as no speed-up
(fp32) with its reason.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Bumped when the probe's workload or rule changes, so machines measure again.
PROBE_VERSION = 1
MIN_SPEEDUP = 1.35
WIDTH, HIDDEN, ROWS = 768, 3072, 4 * 197  # ViT-B's MLP over four 224-px pictures' tokens
ROUNDS = 7
CACHE_FILE = "cpu_probe.json"


def int8_pays(cache_dir: Path) -> bool:
    """Whether the probe's MLP ran MIN_SPEEDUP or more faster in int8 (ONNX Runtime) than in
    fp32 (torch) on this machine, as measured once and cached under `cache_dir` (False without
    ONNX Runtime, and where the probe could not run)."""
    speedup = probe(cache_dir)
    return speedup is not None and speedup >= MIN_SPEEDUP


def probe(cache_dir: Path) -> float | None:
    """This machine's probe speed-up (0 where the probe failed), measured now unless cached;
    None without ONNX Runtime."""
    from harmosearch.model.runtimes import onnxruntime_installed

    if not onnxruntime_installed():
        return None
    file, key = cache_dir / CACHE_FILE, machine_key()
    entry = _read(file).get(key)
    if entry is None:  # under the lock, read again: another process may have measured meanwhile
        with _locked(file):
            known = _read(file)
            if key not in known:
                known[key] = _measured()
                _write(file, known)
            entry = known[key]
    return float(entry["speedup"])


def measured_speedup(cache_dir: Path) -> float | None:
    """The probe's cached speed-up on this machine, or None where it never ran here."""
    from harmosearch.model.runtimes import onnxruntime_installed

    if not onnxruntime_installed():
        return None
    entry = _read(cache_dir / CACHE_FILE).get(machine_key())
    return None if entry is None else float(entry["speedup"])


def machine_key() -> str:
    """What the probe's verdict holds for: the CPU's model and flags, ONNX Runtime's version and
    the probe's."""
    import hashlib

    name, flags = _cpu_description()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{name}|flags {digest}|onnxruntime {_onnxruntime_version()}|probe {PROBE_VERSION}"


def _measured() -> dict[str, object]:
    """The cache entry of a probe run now: its speed-up, or 0 and the reason it failed."""
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        speedup = measure_speedup()
    except Exception as exc:  # a probe that cannot run decides nothing: fp32, as before
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        logger.info("the int8 probe could not run (%s): encoding in fp32", reason)
        return {"speedup": 0.0, "error": reason, "measured": when}
    verdict = "encoding in int8" if speedup >= MIN_SPEEDUP else "encoding in fp32"
    logger.info("int8 ran %.2fx fp32 on this CPU (without VNNI): %s", speedup, verdict)
    return {"speedup": round(speedup, 3), "measured": when}


def measure_speedup(rounds: int = ROUNDS, rows: int = ROWS, width: int = WIDTH, hidden: int = HIDDEN) -> float:
    """fp32 time over int8 time for the probe's MLP (`rows` tokens, `width` -> `hidden` ->
    `width`), medians over `rounds` alternated runs after a warm-up of each."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    first = (rng.standard_normal((width, hidden)) / width**0.5).astype(np.float32)
    second = (rng.standard_normal((hidden, width)) / hidden**0.5).astype(np.float32)
    tokens = rng.standard_normal((rows, width)).astype(np.float32)
    int8 = _int8_mlp(first, second)
    weights = torch.from_numpy(first), torch.from_numpy(second)
    batch = torch.from_numpy(tokens)

    def fp32() -> None:
        with torch.inference_mode():
            torch.relu(batch @ weights[0]) @ weights[1]

    def quantised() -> None:
        int8({"tokens": tokens})

    times: dict[Callable[[], None], list[float]] = {fp32: [], quantised: []}
    for run in times:
        run()
    for _ in range(rounds):
        for run, taken in times.items():
            start = time.perf_counter()
            run()
            taken.append(time.perf_counter() - start)
    return statistics.median(times[fp32]) / statistics.median(times[quantised])


def _int8_mlp(first: Any, second: Any) -> Callable[[dict[str, Any]], Any]:
    """The MLP as an ONNX graph quantised like the towers, as a function of its inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harmosearch.model.runtimes import onnx_session, quantise_int8

    nodes = [
        helper.make_node("MatMul", ["tokens", "first"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["active"]),
        helper.make_node("MatMul", ["active", "second"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "int8_probe",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["rows", first.shape[0]])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", second.shape[1]])],
        initializer=[numpy_helper.from_array(first, "first"), numpy_helper.from_array(second, "second")],
    )
    with tempfile.TemporaryDirectory(prefix="harmosearch-probe-") as folder:
        plain, quantised = Path(folder) / "mlp.onnx", Path(folder) / "mlp-int8.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
        quantise_int8(plain, quantised)
        session = onnx_session(quantised)
    return lambda inputs: session.run(None, inputs)


@functools.cache
def _cpu_description() -> tuple[str, str]:
    """The CPU's model name and its feature flags (from /proc/cpuinfo on Linux), read once per
    process: every encoder that resolves auto asks."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", platform.machine()), fields.get("flags", fields.get("Features", ""))


def _onnxruntime_version() -> str:
    """ONNX Runtime's version, whichever of its wheels installed it (onnxruntime-gpu, -openvino, ...)."""
    from importlib import metadata

    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        import onnxruntime

        return str(onnxruntime.__version__)


@contextlib.contextmanager
def _locked(file: Path) -> Iterator[None]:
    """An exclusive lock on a file beside the cache for the block; no lock where there is no
    fcntl (Windows) or the lock file cannot be made (a read-only cache: then each process measures)."""
    try:
        import fcntl

        file.parent.mkdir(parents=True, exist_ok=True)
        handle = file.with_name(f"{file.name}.lock").open("a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _read(file: Path) -> dict[str, dict[str, Any]]:
    """The cached verdicts; an entry without a finite speed-up (a damaged or hand-edited file) is
    left out, so it is measured again."""
    try:
        known = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(known, dict):
        return {}
    return {
        key: entry
        for key, entry in known.items()
        if isinstance(entry, dict) and isinstance(entry.get("speedup"), int | float) and math.isfinite(entry["speedup"])
    }


def _write(file: Path, known: dict[str, dict[str, Any]]) -> None:
    """Written whole and renamed into place (store.manifest.write_atomic); a cache that cannot be
    written is measured again next time."""
    from harmosearch.store.manifest import write_atomic

    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(file, lambda path: path.write_text(json.dumps(known, indent=1, sort_keys=True)))
    except OSError as exc:
        logger.info("could not cache the int8 probe's verdict in %s: %s", file, exc)
