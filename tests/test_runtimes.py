"""The CPU inference paths: which one a machine takes, and each path's vectors against fp32
through torch (the reference) on the tiny random test model."""

import copy

import pytest
import torch
import torch.nn.functional as F

from harmosearch.config import EncoderConfig, load_config
from harmosearch.errors import ConfigError
from harmosearch.model import runtimes
from harmosearch.model.encoder import Encoder, load_encoder
from harmosearch.model.runtimes import InferencePath, resolve_path

from .conftest import TEST_MODEL

CPU = torch.device("cpu")


def needs_onnxruntime():
    """Skip where ONNX Runtime is not installed (the dev extra installs it: CI runs these)."""
    for name in ("onnxruntime", "onnx"):
        pytest.importorskip(name, reason=f"the int8 path needs {name}: pip install 'harmosearch[onnx]'")


def path_on(monkeypatch, features, installed=True, **settings):
    monkeypatch.setenv("HARMOSEARCH_CPU_FEATURES", features)
    monkeypatch.setattr(runtimes, "onnxruntime_installed", lambda: installed)
    return resolve_path(CPU, EncoderConfig(**settings))


@pytest.mark.parametrize(
    ("features", "installed", "expected"),
    [
        ("bf16,vnni", True, InferencePath("bf16", "torch")),
        ("vnni", True, InferencePath("int8", "onnxruntime")),
        ("vnni", False, InferencePath("fp32", "torch")),  # int8 needs ONNX Runtime: fp32 instead
        ("none", True, InferencePath("fp32", "torch")),
    ],
)
def test_auto_takes_the_path_the_cpu_suits(monkeypatch, features, installed, expected):
    assert path_on(monkeypatch, features, installed) == expected


def test_settings_rule_paths_out_or_ask_for_what_is_missing(monkeypatch):
    # bf16 ruled out by naming the runtime: int8 where the CPU has VNNI, fp32 where not
    assert path_on(monkeypatch, "bf16,vnni", runtime="onnxruntime") == InferencePath("int8", "onnxruntime")
    assert path_on(monkeypatch, "bf16", runtime="onnxruntime") == InferencePath("fp32", "onnxruntime")
    assert path_on(monkeypatch, "bf16,vnni", precision="int8") == InferencePath("int8", "onnxruntime")
    assert path_on(monkeypatch, "vnni", runtime="torch") == InferencePath("fp32", "torch")
    assert path_on(monkeypatch, "none", precision="bf16") == InferencePath("bf16", "torch")  # emulated, as asked
    with pytest.raises(ConfigError, match=r"harmosearch\[onnx\]"):
        path_on(monkeypatch, "vnni", installed=False, precision="int8")
    with pytest.raises(ConfigError, match=r"harmosearch\[onnx\]"):
        path_on(monkeypatch, "vnni", installed=False, runtime="onnxruntime")
    with pytest.raises(ConfigError, match="not bf16"):
        path_on(monkeypatch, "vnni", precision="bf16", runtime="onnxruntime")
    with pytest.raises(ConfigError, match="for CPUs"):
        resolve_path(torch.device("cuda", 0), EncoderConfig(runtime="onnxruntime"))


def encoder_at(precision, cache, **more):
    overrides = {"encoder.model": TEST_MODEL, "encoder.device": "cpu", "encoder.precision": precision, **more}
    return load_encoder(load_config(overrides={**overrides, "paths.cache": str(cache)}))


def mean_cosine(a, b):
    """Mean cosine of matching vectors: rows of [N, D], or the cells of [B, D, h, w] maps."""
    return float(F.cosine_similarity(a, b, dim=1).mean())


def assert_close_to_fp32(encoder, reference, pixels):
    g, dense = encoder.encode_pixels(pixels)
    g_ref, dense_ref = reference.encode_pixels(pixels)
    assert mean_cosine(g, g_ref) >= 0.995
    assert mean_cosine(dense, dense_ref) >= 0.995
    texts = ["a red circle", "two blue squares left of a green star"]
    assert mean_cosine(encoder.encode_texts(texts), reference.encode_texts(texts)) >= 0.995


def test_bf16_vectors_stay_close_to_fp32(tmp_path):
    bf16, fp32 = encoder_at("bf16", tmp_path), encoder_at("fp32", tmp_path)
    assert bf16.identity.made_with == "bf16 (torch)" and fp32.identity.made_with == "fp32 (torch)"
    # The bf16 path runs a copy with bf16 matrix weights; the model itself stays fp32.
    assert bf16.runner.model.visual.conv1.weight.dtype == torch.bfloat16
    assert bf16.model.visual.conv1.weight.dtype == torch.float32
    assert_close_to_fp32(bf16, fp32, torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)))


def test_int8_vectors_stay_close_to_fp32_from_a_graph_cached_by_fingerprint(tmp_path, monkeypatch):
    needs_onnxruntime()
    int8, fp32 = encoder_at("int8", tmp_path), encoder_at("fp32", tmp_path)
    assert int8.identity.made_with == "int8 (onnxruntime)" and int8.identity.weights == fp32.identity.weights
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    assert_close_to_fp32(int8, fp32, pixels)
    graphs = sorted(g.name for g in (tmp_path / "onnx").glob("*.onnx"))
    assert graphs == sorted([int8.runner.graph_file(32).name, int8.runner.graph_file(text_length=16).name])
    assert graphs[0].startswith(f"{int8.identity.weights}-{int8.identity.config_hash}-32px-int8-")

    def no_export(*_):
        raise AssertionError("exported again")

    monkeypatch.setattr(runtimes, "export_tower", no_export)
    again = encoder_at("int8", tmp_path)
    assert torch.equal(again.encode_pixels(pixels)[0], int8.encode_pixels(pixels)[0])  # the cached graph
    monkeypatch.undo()
    other = copy.deepcopy(int8.model)
    with torch.no_grad():
        other.visual.proj.mul_(-1.0)
    changed = Encoder(other, int8.tokenizer, int8.config, TEST_MODEL, CPU, cache_dir=tmp_path)
    assert changed.identity.weights != int8.identity.weights
    g_changed = changed.encode_pixels(pixels)[0]
    assert mean_cosine(g_changed, -int8.encode_pixels(pixels)[0]) >= 0.995  # its own graph, not the other's
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 3  # its own image graph beside the first two


def test_int8_sessions_are_made_again_in_each_process(tmp_path):
    """An ONNX Runtime session does not survive a fork or a pickle: each process opens its own."""
    needs_onnxruntime()
    import pickle

    int8 = encoder_at("int8", tmp_path)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    expected = int8.encode_pixels(pixels)[0]
    assert int8.runner.sessions
    copied = pickle.loads(pickle.dumps(int8.runner))
    assert not copied.sessions
    assert torch.equal(copied.forward(pixels)[0], int8.runner.forward(pixels)[0])
    assert torch.allclose(F.normalize(copied.forward(pixels)[0], dim=-1), expected, atol=1e-6)


def test_int8_at_another_input_size_stays_close_to_fp32(tmp_path):
    """High detail's second pass runs at a larger input: its graph holds the position
    embeddings resized for that size."""
    needs_onnxruntime()
    int8, fp32 = encoder_at("int8", tmp_path), encoder_at("fp32", tmp_path)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    assert_close_to_fp32(int8, fp32, pixels)
    assert int8.runner.graph_file(64).is_file()


def test_int8_graphs_quantise_the_blocks_and_keep_embeddings_and_projections_in_fp32(tmp_path):
    needs_onnxruntime()
    import onnx

    int8 = encoder_at("int8", tmp_path)
    int8.encode_pixels(torch.zeros(1, 3, 32, 32))
    int8.encode_texts(["a red circle"])
    for size, projection in ((32, "model.visual.proj"), (None, "model.text_projection")):
        graph = onnx.load(str(int8.runner.graph_file(size, None if size else 16))).graph
        ops = [node.op_type for node in graph.node]
        weights = {init.name: init.data_type for init in graph.initializer}
        assert ops.count("MatMulInteger") >= 2  # the blocks' products
        assert "ConvInteger" not in ops and ("Conv" in ops) == (size is not None)  # the patch embedding
        assert weights[projection] == onnx.TensorProto.FLOAT and f"{projection}_quantized" not in weights


@pytest.mark.parametrize("mode", ["clear", "sclip", "naclip"])
def test_int8_graphs_of_the_training_free_dense_maps_stay_close_to_fp32(tmp_path, mode):
    """Each dense mode exports its own graph (keyed by the settings' hash) that keeps the mode's map."""
    needs_onnxruntime()
    int8 = encoder_at("int8", tmp_path, **{"encoder.dense_mode": mode})
    fp32 = encoder_at("fp32", tmp_path, **{"encoder.dense_mode": mode})
    assert_close_to_fp32(int8, fp32, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)))
    assert int8.runner.graph_file(32).is_file()


def test_texts_run_through_the_graph_of_the_shortest_length_that_holds_them(tmp_path):
    """Each batch of texts runs through the text graph of the shortest of TEXT_LENGTHS (16, and
    the test model's context length 32) that holds its longest text, its padding cut as the torch
    path cuts it: fp32 through ONNX Runtime gives the torch path's query vectors at either length."""
    needs_onnxruntime()
    onnx_fp32 = encoder_at("fp32", tmp_path, **{"encoder.runtime": "onnxruntime"})
    torch_fp32 = encoder_at("fp32", tmp_path)
    assert onnx_fp32.identity.made_with == "fp32 (onnxruntime)" and onnx_fp32.context_length == 32
    long = "two red circles left of a blue square and a green star above three small yellow rings"
    for texts, length in ((["a dog"], 16), (["a bench without people", long], 32)):
        assert 16 < len(onnx_fp32.tokenizer([long])[0].nonzero()) <= 32
        for a, b in zip(onnx_fp32.encode_queries(texts), torch_fp32.encode_queries(texts), strict=True):
            assert torch.allclose(a.global_vector, b.global_vector, atol=1e-4)
            assert torch.allclose(a.lexeme_vectors, b.lexeme_vectors, atol=1e-4)
        assert onnx_fp32.runner.graph_file(text_length=length).is_file()
    assert len(list((tmp_path / "onnx").glob("*text*.onnx"))) == 2
