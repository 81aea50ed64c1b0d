"""The training-free dense maps (model.dense_modes) against slow references written out from the
last block's weights, and the global vector the same in every mode."""

import math

import pytest
import torch

from harmosearch.model.dense_modes import DENSE_MODES, NEIGHBOUR_SIGMA, TRAINING_FREE
from harmosearch.model.encoder import vision_forward


def images(n, size=32, seed=3):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def reference_patches(model, pixels, mode):
    """The dense map [B, D, gh, gw] of `mode`, token by token and head by head."""
    visual = model.visual
    h = visual._embeds(pixels)
    for block in visual.transformer.resblocks[:-1]:
        h = block(h)
    block = visual.transformer.resblocks[-1]
    attn = block.attn
    width, heads = h.shape[-1], attn.num_heads
    d = width // heads
    gh, gw = visual.grid_size
    out = []
    for b in range(h.shape[0]):
        normed = block.ln_1(h[b])
        w, bias = attn.in_proj_weight, attn.in_proj_bias
        q, k, v = (normed @ w[i * width : (i + 1) * width].T + bias[i * width : (i + 1) * width] for i in range(3))
        n = normed.shape[0]
        rows = []
        for i in range(1, n):  # the patches
            merged = []
            for head in range(heads):
                part = slice(head * d, (head + 1) * d)

                def logits(t, i=i, part=part, n=n):
                    return [float(t[i, part] @ t[j, part]) / math.sqrt(d) for j in range(n)]

                if mode == "clear":
                    weights = softmax(logits(q))
                elif mode == "sclip":
                    weights = [a + c for a, c in zip(softmax(logits(q)), softmax(logits(k)), strict=True)]
                else:  # naclip: the patches' Gaussian neighbourhood, none for the class token
                    yi, xi = divmod(i - 1, gw)
                    near = [0.0] + [
                        math.exp(-((yi - yj) ** 2 + (xi - xj) ** 2) / (2 * NEIGHBOUR_SIGMA**2))
                        for yj, xj in (divmod(j, gw) for j in range(n - 1))
                    ]
                    weights = softmax([a + c for a, c in zip(logits(k), near, strict=True)])
                merged.append(sum(w * v[j, part] for j, w in enumerate(weights)))
            rows.append(attn.out_proj(torch.cat(merged)))  # no residual, no FFN
        tokens = visual.ln_post(torch.stack(rows)) @ visual.proj
        out.append(tokens.reshape(gh, gw, -1).permute(2, 0, 1))
    return torch.stack(out)


@pytest.mark.parametrize("mode", TRAINING_FREE)
def test_training_free_map_equals_slow_reference(test_encoder, mode):
    model, x = test_encoder.model, images(2)
    with torch.no_grad():
        _, dense = vision_forward(model, x, mode)
        reference = reference_patches(model, x, mode)
    assert dense.shape == reference.shape
    assert torch.allclose(dense, reference, atol=1e-4)


@pytest.mark.parametrize("mode", TRAINING_FREE)
def test_training_free_map_without_the_class_token_shortcut(test_encoder, mode, monkeypatch):
    """The path for towers whose global vector is not the class token gives the same map."""
    from harmosearch.model import encoder as encoder_module

    model, x = test_encoder.model, images(2, seed=4)
    with torch.no_grad():
        _, shortcut = vision_forward(model, x, mode)
        monkeypatch.setattr(encoder_module, "_class_token_shortcut", lambda parts, last: False)
        _, full = vision_forward(model, x, mode)
    assert torch.allclose(shortcut, full, atol=1e-5)


def test_global_vector_is_the_same_in_every_mode(test_encoder):
    model, x = test_encoder.model, images(3, seed=5)
    with torch.no_grad():
        reference = model.encode_image(x)
        for mode in DENSE_MODES:
            pooled, _ = vision_forward(model, x, mode)
            assert torch.allclose(pooled, reference, atol=1e-5), mode


def test_modes_make_different_maps(test_encoder):
    model, x = test_encoder.model, images(1, seed=6)
    with torch.no_grad():
        maps = {mode: vision_forward(model, x, mode)[1] for mode in DENSE_MODES}
    for a in DENSE_MODES:
        for b in DENSE_MODES:
            if a < b:
                assert not torch.allclose(maps[a], maps[b], atol=1e-4), (a, b)


def test_encoder_in_another_mode_keeps_its_model_and_changes_its_identity(test_encoder):
    other = test_encoder.with_dense_mode("sclip")
    assert other.model is test_encoder.model
    assert other.config.dense_mode == "sclip" and test_encoder.config.dense_mode == "value"
    assert other.identity.config_hash != test_encoder.identity.config_hash
    assert other.identity.weights == test_encoder.identity.weights
    g, dense = other.encode_pixels(images(2))
    g0, dense0 = test_encoder.encode_pixels(images(2))
    assert torch.allclose(g, g0, atol=1e-5)
    assert not torch.allclose(dense, dense0, atol=1e-4)


# encoder.dense_mode = "auto": chosen per index by region trust (indexing.dense_choice)

AUTO = {"encoder.device": "cpu", "index.workers": 0, "regions.max_regions": 24, "encoder.dense_mode": "auto"}


def test_auto_picks_the_highest_trust_and_ties_go_to_value():
    from harmosearch.indexing.dense_choice import pick_dense_mode

    assert pick_dense_mode({"value": 0.1, "clear": 0.3, "sclip": 0.2, "naclip": None}) == "clear"
    assert pick_dense_mode({"value": 0.2, "clear": 0.2, "sclip": 0.2}) == "value"
    assert pick_dense_mode({"value": None, "clear": None}) == "value"
    assert pick_dense_mode({}) == "value"


def _prefer(monkeypatch, favourite):
    """A fake trust that prefers `favourite`; returns the modes it was asked about."""
    from harmosearch.indexing import dense_choice

    asked = []

    def fake(encoder, pictures, regions, phrases=None):
        asked.append((encoder.config.dense_mode, len(pictures)))
        return 0.9 if encoder.config.dense_mode == favourite else 0.1

    monkeypatch.setattr(dense_choice, "sample_trust", fake)
    return asked


def test_auto_builds_the_index_in_the_mode_of_highest_trust_and_an_update_keeps_it(photos, tmp_path, monkeypatch):
    from PIL import Image

    from harmosearch.config import load_config
    from harmosearch.indexing import build_index
    from harmosearch.model.dense_modes import AUTO_CANDIDATES
    from harmosearch.model.encoder import EncoderConfig, encoder_settings_hash
    from harmosearch.search.index import Index
    from harmosearch.store import read_manifest
    from tests.conftest import TEST_MODEL, invoke

    config = load_config(overrides={**AUTO, "encoder.model": TEST_MODEL})
    asked = _prefer(monkeypatch, "sclip")
    index = tmp_path / "index"
    build_index(photos, index, config)
    manifest = read_manifest(index)
    assert [mode for mode, _ in asked] == list(AUTO_CANDIDATES) and all(n == 12 for _, n in asked)
    assert manifest["config"]["encoder"]["dense_mode"] == "sclip"
    assert manifest["encoder"]["config_hash"] == encoder_settings_hash(EncoderConfig(dense_mode="sclip"))
    choice = manifest["dense_mode_choice"]
    assert choice["chosen"] == "sclip" and set(choice["trust"]) == set(AUTO_CANDIDATES)
    assert choice["trust"]["sclip"] == 0.9
    shown = invoke(["info", str(index)])
    assert shown.code == 0 and "sclip, chosen by auto" in " ".join(shown.stdout.split())

    # an update, asked for auto again or not at all, keeps the index's mode and its record
    asked = _prefer(monkeypatch, "naclip")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photos / "new.png")
    report = build_index(photos, index, config)
    assert report.encoded == 1 and asked == []
    updated = read_manifest(index)
    assert updated["config"]["encoder"]["dense_mode"] == "sclip"
    assert updated["encoder"]["config_hash"] == manifest["encoder"]["config_hash"]
    assert updated["dense_mode_choice"] == choice
    (photos / "new.png").unlink()
    build_index(photos, index, load_config(overrides={k: v for k, v in AUTO.items() if k != "encoder.dense_mode"}))
    assert read_manifest(index)["config"]["encoder"]["dense_mode"] == "sclip"
    # queries take the mode from the index, whatever the caller's config says
    assert Index(index, config).search("red circle", k=3).results


def test_sample_trust_measures_a_mode_on_pictures(test_encoder, scenes):
    from harmosearch.config import RegionConfig
    from harmosearch.indexing.dense_choice import sample_trust, sampled_pictures
    from harmosearch.media.scan import scan

    entries, _ = scan(scenes / "images")
    pictures = sampled_pictures(entries)
    assert len(pictures) == min(16, len(entries))
    for mode in ("value", "naclip"):
        trust = sample_trust(test_encoder.with_dense_mode(mode), pictures, RegionConfig(max_regions=24))
        assert trust is not None and 0.0 <= trust <= 1.0
