"""What runs the towers on this machine, and at which precision: the inference path.

`encoder.precision` and `encoder.runtime` resolve per machine (`resolve_path`): on a CPU, bf16
through torch where bf16 is native, int8 through ONNX Runtime where the CPU has VNNI (or, without
it, where int8 measured faster here: `int8_probe`) and onnxruntime is installed, fp32 through
torch otherwise; fp16 through torch on a GPU. Two runners
with one interface run the towers: `forward(pixels) -> (global, dense)`, the one-pass value-path
forward of `encoder.vision_forward`, and `forward_text(tokens) -> (global, per-token)`:

- `TorchRunner`: the model under autocast; for bf16 a copy whose matrix weights are bf16
  already, so autocast does not cast every weight again on every batch.
- `OnnxRunner`: each tower's forward exported to ONNX once per weights fingerprint, settings and
  image input size, with int8 weights in the blocks (`quantise_int8`) and dynamically
  quantised activations, cached under paths.cache/onnx. Dynamic quantisation scales a batch's
  activations together, so a vector depends very slightly on the others in its batch (cosine
  to fp32: benchmarks/cpu_runtime.py).
  Texts go through it too: a query, and the calibration's bank of ~100 texts, about the work of
  35 photos with ViT-B/16 when a model first calibrates (search.calibration caches it).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmosearch.config import EncoderConfig
from harmosearch.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

ONNX_EXTRA = "pip install 'harmosearch[onnx]'"
# Bumped whenever the exported graph changes (vision_forward, the quantisation settings), so
# graphs cached by an older harmosearch are exported again (3: 7-bit weights, quantise_int8).
EXPORT_VERSION = 3


@dataclass(frozen=True)
class InferencePath:
    """How vectors are made: the precision of the arithmetic and what runs it."""

    precision: str  # fp32 | fp16 | bf16 | int8
    runtime: str  # torch | onnxruntime

    def __str__(self) -> str:
        return f"{self.precision} ({self.runtime})"


def onnxruntime_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_path(device: Any, config: EncoderConfig, cache_dir: Path | None = None) -> InferencePath:
    """The inference path `config` asks for on `device`: auto precision per the CPU's features or,
    on a CPU without VNNI, per the int8 probe cached under `cache_dir`
    (`device.inference_precision`), auto runtime ONNX Runtime for int8 when installed. Where the
    CPU suits int8 but onnxruntime is missing, auto falls back to fp32; a path that cannot run
    here is a ConfigError that says what to change."""
    from harmosearch.model.device import inference_precision, int8_suits

    runtime, installed = config.runtime, onnxruntime_installed()
    if runtime == "onnxruntime" and config.precision == "auto" and device.type == "cpu":
        precision = "int8" if int8_suits(cache_dir) else "fp32"
    else:
        precision = inference_precision(device, config.precision, cache_dir)
    if runtime == "auto":
        runtime = "onnxruntime" if precision == "int8" and installed else "torch"
    if precision == "int8" and runtime == "torch":
        if config.precision != "auto":
            raise ConfigError(f"encoder.precision int8 runs through ONNX Runtime: {ONNX_EXTRA}, or use fp32")
        logger.info("this CPU suits int8, which needs ONNX Runtime (%s): encoding in fp32", ONNX_EXTRA)
        precision = "fp32"
    if runtime == "onnxruntime":
        if device.type != "cpu":
            raise ConfigError("encoder.runtime onnxruntime is for CPUs; use torch (or auto) on a GPU")
        if precision not in ("fp32", "int8"):
            raise ConfigError(f"ONNX Runtime runs fp32 or int8 here, not {precision}; use runtime torch for it")
        if not installed:
            raise ConfigError(f"encoder.runtime onnxruntime needs ONNX Runtime: {ONNX_EXTRA}")
    return InferencePath(precision, runtime)


def lowered_copy(model: Any, dtype: Any) -> Any:
    """A copy of `model` whose matrix weights (linear, convolution and attention projections,
    the towers' output projections) are `dtype`, for autocast to `dtype`: norms and embeddings
    stay float32, as autocast computes them."""
    import torch

    lowered = copy.deepcopy(model)
    with torch.no_grad():
        for module in lowered.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                module.to(dtype)
            elif isinstance(module, torch.nn.MultiheadAttention) and module.in_proj_weight is not None:
                module.in_proj_weight.data = module.in_proj_weight.data.to(dtype)
                if module.in_proj_bias is not None:
                    module.in_proj_bias.data = module.in_proj_bias.data.to(dtype)
        for owner, name in ((lowered.visual, "proj"), (lowered, "text_projection")):
            weight = getattr(owner, name, None)
            if isinstance(weight, torch.nn.Parameter):
                weight.data = weight.data.to(dtype)
    return lowered


class TorchRunner:
    """The towers through torch, under autocast to the path's precision (texts: bf16 or fp16
    where images run so, else fp32)."""

    def __init__(self, model: Any, path: InferencePath, device: Any, dense_mode: str) -> None:
        import torch

        self.model = lowered_copy(model, torch.bfloat16) if path.precision == "bf16" else model
        self.path, self.device, self.dense_mode = path, device, dense_mode

    def prepare(self, size: int | None = None) -> None:
        """Nothing to make ahead for torch."""

    def forward(self, pixels: Any) -> tuple[Any, Any]:
        import torch

        from harmosearch.model.device import autocast
        from harmosearch.model.encoder import vision_forward

        with torch.inference_mode(), autocast(self.device, self.path.precision):
            return vision_forward(self.model, pixels.to(self.device), self.dense_mode)

    def forward_text(self, tokens: Any) -> tuple[Any, Any]:
        import torch

        from harmosearch.model.clip_adapter import TextParts
        from harmosearch.model.device import autocast
        from harmosearch.model.encoder import text_forward

        tokens = TextParts(self.model).without_padding(tokens)
        with torch.inference_mode(), autocast(self.device, self.path.precision):
            return text_forward(self.model, tokens.to(self.device))


@dataclass
class OnnxRunner:
    """The towers through ONNX Runtime: one exported graph per image input size and per text
    length, each made once per model and cached; one session per process and graph (sessions
    do not survive a fork)."""

    model: Any
    path: InferencePath
    identity: Any  # EncoderIdentity: the weights' fingerprint and settings key the cache
    dense_mode: str
    cache_dir: Path
    sessions: dict[tuple[int, str], Any] = field(default_factory=dict)
    export_version: int = EXPORT_VERSION

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "sessions": {}}

    def graph_file(self, size: int | None = None, text_length: int | None = None) -> Path:
        """The cached graph of the image tower at `size` pixels, or of the text tower for
        texts of `text_length` tokens."""
        ident, part = self.identity, f"{size}px" if size else f"text{text_length}"
        name = f"{ident.weights}-{ident.config_hash}-{part}-{self.path.precision}-v{EXPORT_VERSION}.onnx"
        return self.cache_dir / "onnx" / name

    def prepare(self, size: int | None = None, text_length: int = 77) -> Path:
        """The graph for `size`-pixel images (or for texts of `text_length` tokens), exported
        and quantised unless cached."""
        import torch

        target = self.graph_file(size, None if size else text_length)
        if not target.is_file():
            texts = torch.zeros(2, text_length, dtype=torch.long)
            example = torch.zeros(2, 3, size, size) if size else texts
            export_tower(self.model, self.dense_mode, example, self.path.precision, target)
        return target

    def _run(self, size: int | None, inputs: Any) -> tuple[Any, Any]:
        import torch

        length = None if size else int(inputs.shape[-1])
        key = (os.getpid(), self.graph_file(size, length).name)
        if key not in self.sessions:
            self.sessions[key] = onnx_session(self.prepare(size, length or 0))
        session = self.sessions[key]
        first, second = session.run(None, {session.get_inputs()[0].name: inputs.cpu().numpy()})
        return torch.from_numpy(first), torch.from_numpy(second)

    def forward(self, pixels: Any) -> tuple[Any, Any]:
        return self._run(int(pixels.shape[-1]), pixels.float())

    def forward_text(self, tokens: Any) -> tuple[Any, Any]:
        """Texts through the graph of the shortest of TEXT_LENGTHS (or the context length) that
        holds the batch's longest text: the padding cut as the torch path cuts it
        (TextParts.without_padding), at a few lengths, each a graph of its own (an exported
        graph's attention has its length built in)."""
        from harmosearch.model.clip_adapter import TextParts

        used, context = TextParts(self.model).without_padding(tokens).shape[1], int(tokens.shape[1])
        length = next((n for n in TEXT_LENGTHS if used <= n < context), context)
        return self._run(None, tokens[:, :length].long())


# The text lengths ONNX graphs are made for below the context length: most queries and phrases
# fit 16 tokens, a caption 32.
TEXT_LENGTHS = (16, 32)


def export_tower(model: Any, dense_mode: str, example: Any, precision: str, target: Path) -> None:
    """The image tower's `vision_forward` (for an example of pixels) or the text tower's
    `text_forward` (for an example of tokens) as an ONNX graph for inputs of the example's shape
    and any batch size, at `target`: fp32, or with int8 weights and dynamically quantised
    activations. Written under a temporary name and renamed, so processes exporting at once
    leave one whole file."""
    import torch

    from harmosearch.model.clip_adapter import at_input_size
    from harmosearch.model.encoder import text_forward, vision_forward

    if example.is_floating_point():
        model = at_input_size(model, int(example.shape[-1]))

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> tuple[Any, Any]:
            return vision_forward(self.model, x, dense_mode) if x.is_floating_point() else text_forward(self.model, x)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.stem}.{os.getpid()}.fp32.onnx")
    logger.info("exporting a model tower to ONNX (%s), once per model: %s", precision, target)
    try:
        # Traced with gradients on: torch's fused attention, which ONNX cannot express, is for
        # inference without them only.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Tower().eval(),
                (example,),
                str(staging),
                input_names=["input"],
                output_names=["global", "detail"],
                dynamic_axes={name: {0: "batch"} for name in ("input", "global", "detail")},
                opset_version=17,
                dynamo=False,
            )
        if precision == "int8":
            quantised = target.with_name(f"{target.stem}.{os.getpid()}.int8.onnx")
            quantise_int8(staging, quantised)
            staging.unlink()
            staging = quantised
        staging.replace(target)
    except Exception as exc:
        staging.unlink(missing_ok=True)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"could not export the model to ONNX ({reason}); set encoder.runtime = torch") from None


# Weights kept in fp32 in an int8 graph: the towers' final projections (open_clip's parameters,
# as the exported graph names them), which every vector passes through last.
FP32_WEIGHTS = ("model.visual.proj", "model.text_projection")


def quantise_int8(source: Path, target: Path) -> None:
    """int8 weights (per output channel) for the matrix products of the transformer blocks, with
    each batch's activations quantised on the fly. Kept in fp32: attention's products of two
    activations, the patch embedding (a convolution) and token embedding (a lookup), and the
    final projections (FP32_WEIGHTS). On harmo-tiny's validation scenes these choices moved the
    vectors' mean cosine to fp32 from 0.99977 to 0.99987 (global) and 0.99991 to 0.99998 (dense).

    The weights span 7 bits of the 8 (reduce_range): on a CPU without VNNI, ONNX Runtime's AVX2
    kernel sums pairs of uint8 x int8 products in int16, which full-range weights overflow. On an
    AVX2-only EPYC the test model's text vectors had a mean cosine to fp32 of 0.984 with 8-bit
    weights and 0.9994 with 7-bit (dense maps 0.988 and 0.99998); with 7 bits, one graph serves
    every CPU, so an index's int8 vectors are the same whichever machine made them."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    kept = [node.name for node in graph.node if node.op_type == "MatMul" and set(node.input) & set(FP32_WEIGHTS)]
    root = logging.getLogger()
    advice = _WithoutAdvice()  # its suggested pre-processing fails on these graphs (symbolic shapes)
    root.addFilter(advice)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=kept,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.removeFilter(advice)


class _WithoutAdvice(logging.Filter):
    """Drops onnxruntime.quantization's advice to pre-process the graph first."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def onnx_session(graph: Path) -> Any:
    """An ONNX Runtime session on the CPU with as many threads as torch has in this process
    (the indexing workers share the cores out through torch.set_num_threads)."""
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(
            f"ONNX Runtime cannot load {graph} ({str(exc).splitlines()[0]}); delete it to export it again"
        ) from None


def vectors_made_by(encoder: Any) -> dict[str, Any]:
    """What an encoder's vectors depend on, as caches of them are keyed (bench vectors, the
    calibration bank): its identity and, for an exported graph, the export's version, which an
    identity does not hold (an index compares identities, and int8 vectors of two exports mix)."""
    version = getattr(getattr(encoder, "runner", None), "export_version", None)
    return {**encoder.identity.to_dict(), **({"export": version} if version else {})}


def runner_for(model: Any, path: InferencePath, device: Any, dense_mode: str, identity: Any, cache_dir: Path) -> Any:
    """What runs the towers for `path`."""
    if path.runtime == "onnxruntime":
        return OnnxRunner(model, path, identity, dense_mode, cache_dir)
    return TorchRunner(model, path, device, dense_mode)
