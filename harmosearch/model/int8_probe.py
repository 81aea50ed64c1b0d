"""Whether int8 pays on a CPU without VNNI: a short measured probe, cached per machine.

On a CPU with VNNI, `encoder.precision = "auto"` takes int8 from the CPU's features alone. On
one without (AVX2 only), ONNX Runtime's int8 kernels are slower than VNNI's but may still beat
fp32: on an AVX2-only AMD EPYC, ViT-B/16 encoded 1.55x faster in int8 (benchmarks/encode.py,
`encode.jsonl`). Whether they do depends on the CPU, so it is measured, not guessed: the
transformer MLP of a ViT-B block (768 -> 3072 -> 768 over four pictures' tokens), through
torch in fp32 and through ONNX Runtime quantised as the towers are (`runtimes.quantise_int8`).
Most of a tower's time is in such products (on that EPYC the MLP ran 2.15x faster in int8 and
the whole tower 1.55x), so a probe speed-up of MIN_SPEEDUP, about 1.2x for a whole tower, is
where int8 starts to pay. The verdict is cached under paths.cache, keyed by the CPU, the thread
count and ONNX Runtime's version; it takes about three seconds once.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

# Bumped when the probe's workload or rule changes, so machines measure again.
PROBE_VERSION = 1
MIN_SPEEDUP = 1.35
WIDTH, HIDDEN, ROWS = 768, 3072, 4 * 197  # ViT-B's MLP over four 224-px pictures' tokens
ROUNDS = 7


def int8_pays(cache_dir: Path) -> bool:
    """Whether int8 through ONNX Runtime encodes faster than fp32 on this CPU by MIN_SPEEDUP, as
    measured once per machine (False without ONNX Runtime, or where the probe cannot run)."""
    from harmosearch.model.runtimes import onnxruntime_installed

    if not onnxruntime_installed():
        return False
    file, key = cache_dir / "cpu_probe.json", machine_key()
    known = _read(file)
    if key not in known:
        try:
            speedup = measure_speedup()
        except Exception as exc:  # a probe that cannot run decides nothing: fp32, as before
            logger.info("the int8 probe could not run (%s): encoding in fp32", str(exc).splitlines()[0])
            return False
        known[key] = {"speedup": round(speedup, 3), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _write(file, known)
        verdict = "encoding in int8" if speedup >= MIN_SPEEDUP else "encoding in fp32"
        logger.info("int8 ran %.2fx fp32 on this CPU (without VNNI): %s", speedup, verdict)
    return float(known[key]["speedup"]) >= MIN_SPEEDUP


def measured_speedup(cache_dir: Path) -> float | None:
    """The probe's cached speed-up on this machine, or None where it never ran here."""
    from harmosearch.model.runtimes import onnxruntime_installed

    if not onnxruntime_installed():
        return None
    entry = _read(cache_dir / "cpu_probe.json").get(machine_key())
    return None if entry is None else float(entry["speedup"])


def machine_key() -> str:
    """What the probe's verdict holds for: the CPU's model and flags, the threads the encoder
    uses, ONNX Runtime's version and the probe's."""
    import hashlib
    from importlib import metadata

    import torch

    name, flags = _cpu_description()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    version = metadata.version("onnxruntime")
    return f"{name}|flags {digest}|{torch.get_num_threads()} threads|onnxruntime {version}|probe {PROBE_VERSION}"


def measure_speedup(rounds: int = ROUNDS) -> float:
    """fp32 time over int8 time for the probe's MLP, medians over `rounds` alternated runs after
    a warm-up of each."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    first = (rng.standard_normal((WIDTH, HIDDEN)) / WIDTH**0.5).astype(np.float32)
    second = (rng.standard_normal((HIDDEN, WIDTH)) / HIDDEN**0.5).astype(np.float32)
    tokens = rng.standard_normal((ROWS, WIDTH)).astype(np.float32)
    int8 = _int8_mlp(first, second)
    weights = torch.from_numpy(first), torch.from_numpy(second)
    rows = torch.from_numpy(tokens)

    def fp32() -> None:
        with torch.inference_mode():
            torch.relu(rows @ weights[0]) @ weights[1]

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


def _int8_mlp(first: object, second: object) -> Callable[[dict[str, object]], object]:
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
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["rows", WIDTH])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", WIDTH])],
        initializer=[numpy_helper.from_array(first, "first"), numpy_helper.from_array(second, "second")],
    )
    with tempfile.TemporaryDirectory(prefix="harmosearch-probe-") as folder:
        plain, quantised = Path(folder) / "mlp.onnx", Path(folder) / "mlp-int8.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
        quantise_int8(plain, quantised)
        session = onnx_session(quantised)
    return lambda inputs: session.run(None, inputs)


def _cpu_description() -> tuple[str, str]:
    """The CPU's model name and its feature flags (from /proc/cpuinfo on Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", platform.machine()), fields.get("flags", fields.get("Features", ""))


def _read(file: Path) -> dict[str, dict[str, object]]:
    try:
        known = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write(file: Path, known: dict[str, dict[str, object]]) -> None:
    """Written whole under a temporary name and renamed; a cache that cannot be written is
    measured again next time."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f".{file.name}.{os.getpid()}")
        partial.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(partial, file)
    except OSError as exc:
        logger.info("could not cache the int8 probe's verdict in %s: %s", file, exc)
