import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from harmosearch.config import Config, EncoderConfig, RegionConfig, load_config
from harmosearch.errors import ModelLoadError
from harmosearch.model.encoder import load_encoder, pool_spans, text_forward, vision_forward
from harmosearch.model.loading import model_config_of, resolve_spec, write_model_bundle
from harmosearch.regions.proposals import image_regions, pool, to_grid, window_boxes


def images(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def test_shapes_and_unit_norms(test_encoder):
    g, dense = test_encoder.encode_pixels(images(3))
    d = test_encoder.identity.embed_dim
    assert g.shape == (3, d)
    assert dense.shape == (3, d, *test_encoder.grid)
    assert torch.allclose(g.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_batch_equals_singles(test_encoder):
    x = images(4)
    g, dense = test_encoder.encode_pixels(x)
    for i in range(4):
        gi, di = test_encoder.encode_pixels(x[i : i + 1])
        assert torch.allclose(gi[0], g[i], atol=1e-5)
        assert torch.allclose(di[0], dense[i], atol=1e-5)


def test_plain_dense_map_matches_open_clip_tokens(test_encoder):
    """Plain mode = open_clip's own last-layer tokens through ln_post and proj."""
    model, x = test_encoder.model, images(2)
    with torch.no_grad():
        pooled, dense = vision_forward(model, x, "plain")
        reference_global = model.encode_image(x)
        out = model.visual.forward_intermediates(
            x,
            indices=[len(model.visual.transformer.resblocks) - 1],
            normalize_intermediates=True,
            output_fmt="NLC",
        )
        tokens = out["image_intermediates"][0] @ model.visual.proj
    assert torch.allclose(pooled, reference_global, atol=1e-5)
    gh, gw = model.visual.grid_size
    assert torch.allclose(dense, tokens.reshape(2, gh, gw, -1).permute(0, 3, 1, 2), atol=1e-5)


def test_value_dense_map_is_self_attention_only(test_encoder):
    """Value path = the last block where every token may attend only to itself."""
    model, x = test_encoder.model, images(2, seed=1)
    visual = model.visual
    with torch.no_grad():
        pooled, dense = vision_forward(model, x, "value")
        h = visual._embeds(x)
        for block in visual.transformer.resblocks[:-1]:
            h = block(h)
        n = h.shape[1]
        only_self = torch.full((n, n), float("-inf"))
        only_self.fill_diagonal_(0.0)
        h = visual.transformer.resblocks[-1](h, attn_mask=only_self)
        tokens = visual.ln_post(h[:, 1:]) @ visual.proj
    gh, gw = visual.grid_size
    assert torch.allclose(dense, tokens.reshape(2, gh, gw, -1).permute(0, 3, 1, 2), atol=1e-5)
    assert torch.allclose(pooled, model.encode_image(x), atol=1e-5)  # the global path is untouched


def bilinear(dense, y, x):
    """torchvision's roi_align sampling rule, written out for one point."""
    _, h, w = dense.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(dense.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = math.floor(y), math.floor(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        dense[:, y0, x0] * (1 - ly) * (1 - lx)
        + dense[:, y0, x1] * (1 - ly) * lx
        + dense[:, y1, x0] * ly * (1 - lx)
        + dense[:, y1, x1] * ly * lx
    )


def reference_region(dense, box, samples=2):
    """Average of bilinear samples on a samples x samples lattice inside the box (grid units,
    token i covering [i, i+1)), then L2 normalisation."""
    x0, y0, x1, y1 = (float(v) - 0.5 for v in box)
    acc = torch.zeros(dense.shape[0])
    for iy in range(samples):
        for ix in range(samples):
            y = y0 + (iy + 0.5) * (y1 - y0) / samples
            x = x0 + (ix + 0.5) * (x1 - x0) / samples
            acc += bilinear(dense, y, x)
    return F.normalize(acc / samples**2, dim=0)


def test_region_vectors_equal_slow_reference(test_encoder):
    _, dense = test_encoder.encode_pixels(images(1, seed=2))
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.3, 1.2, 2.7, 3.9], [1.0, 1.0, 2.0, 2.0], [2.5, 0.0, 4.0, 1.5]])
    fast = pool(dense, [boxes])[0]
    for box, vector in zip(boxes, fast, strict=True):
        assert torch.allclose(vector, reference_region(dense[0], box), atol=1e-5)


def test_full_image_box_is_close_to_mean_of_dense_map(test_encoder):
    _, dense = test_encoder.encode_pixels(images(1, seed=3))
    gh, gw = test_encoder.grid
    region = pool(dense, [torch.tensor([[0.0, 0.0, float(gw), float(gh)]])])[0][0]
    mean = F.normalize(dense[0].mean(dim=(1, 2)), dim=0)
    assert float(region @ mean) > 0.98


def test_pixel_boxes_map_onto_the_grid():
    boxes = torch.tensor([[0.0, 0.0, 640.0, 480.0], [320.0, 240.0, 480.0, 360.0]])
    squash = to_grid(boxes, 640, 480, (14, 14), 224, "squash")
    assert torch.allclose(squash[0], torch.tensor([0.0, 0.0, 14.0, 14.0]))
    assert torch.allclose(squash[1], torch.tensor([7.0, 7.0, 10.5, 10.5]))
    crop = to_grid(boxes, 640, 480, (14, 14), 224, "shortest")
    # 480 -> 224, so 640 -> 298.67 and 37.33 px are cropped off each side.
    assert torch.allclose(crop[0], torch.tensor([0.0, 0.0, 14.0, 14.0]))
    # x1 = 480 px -> 480 * 224/480 - 37.33 = 186.67 px of 224 -> 11.667 tokens.
    assert torch.allclose(crop[1], torch.tensor([7.0, 7.0, 14 * 186.6667 / 224, 10.5]), atol=1e-3)


def test_windows_cover_the_image_at_every_scale():
    boxes, scales = window_boxes(300, 200, (1.0, 0.5, 0.25), 0.5)
    assert (scales == 1.0).sum() == 1
    for s in (0.5, 0.25):
        tiles = boxes[scales == s]
        assert torch.allclose(tiles[:, 2] - tiles[:, 0], torch.tensor(200.0 * s))
        assert tiles[:, 0].min() == 0 and tiles[:, 1].min() == 0
        assert math.isclose(float(tiles[:, 2].max()), 300) and math.isclose(float(tiles[:, 3].max()), 200)


def test_region_selection_is_bounded_and_keeps_user_boxes(test_encoder):
    g, dense = test_encoder.encode_pixels(images(2, seed=4))
    config = RegionConfig(max_regions=10)
    user = [torch.tensor([[3.0, 4.0, 20.0, 30.0]]), None]
    out = image_regions(dense, g, [(64, 48), (50, 50)], test_encoder.grid, 32, "squash", config, user)
    assert all(1 <= len(r.vectors) <= 10 for r in out)
    assert torch.allclose(out[0].boxes[0], user[0][0]) and out[0].scales[0] == -1
    assert (out[1].scales == 1.0).any()  # the whole image is always kept
    assert torch.allclose(out[0].vectors.norm(dim=-1), torch.ones(len(out[0].vectors)), atol=1e-5)


def test_text_forward_matches_open_clip(test_encoder):
    model = test_encoder.model
    tokens = test_encoder.tokenize(["a red circle", "two blue squares above a ring"])
    with torch.no_grad():
        pooled, per_token = text_forward(model, tokens)
        assert torch.allclose(pooled, model.encode_text(tokens), atol=1e-5)
    assert per_token.shape[:2] == tokens.shape


def test_lexeme_vectors_pool_their_token_span(test_encoder):
    enc = test_encoder.encode_queries(["a small red circle near a blue star"])[0]
    assert enc.parsed.lexeme_texts == ["small red circle", "blue star"]
    with torch.no_grad():
        _, per_token = text_forward(test_encoder.model, test_encoder.tokenize([enc.text]))
    _, hi = enc.parsed.lexemes[1].tokens
    assert test_encoder.config.lexeme_pool == "last"  # the default: the span's final token
    assert torch.allclose(enc.lexeme_vectors[1], F.normalize(per_token[0, hi - 1], dim=0), atol=1e-5)
    assert pool_spans(per_token[0], [], "last").shape == (0, per_token.shape[-1])


def test_prompt_lexeme_mode_encodes_each_lexeme_as_a_prompt():
    config = load_config(overrides={"encoder.model": "harmo-test-vit:random", "encoder.lexeme_mode": "prompt"})
    encoder = load_encoder(config)
    enc = encoder.encode_queries(["red umbrella near bench"])[0]
    expected = encoder.encode_texts(["a photo of a red umbrella", "a photo of a bench"])
    assert torch.allclose(enc.lexeme_vectors, expected, atol=1e-5)


@pytest.mark.parametrize("resize", ["squash", "shortest"])
def test_image_tensor_follows_the_resize_mode(resize):
    """A wide picture, green in its left quarter and red elsewhere: "squash" keeps the whole
    width (the left quarter of the input is green), "shortest" crops the centre (no green)."""
    encoder = load_encoder(EncoderConfig(model="harmo-test-vit:random", device="cpu", resize=resize))
    wide = Image.new("RGB", (160, 40), (255, 0, 0))
    wide.paste((0, 255, 0), (0, 0, 40, 40))
    pixels = encoder.image_tensor(wide)
    assert pixels.shape == (3, 32, 32)
    green_over_red = pixels[1] - pixels[0]  # positive where green, negative where red (normalised)
    left_quarter, rest = green_over_red[:, :6], green_over_red[:, 10:]
    assert (rest < 0).all()
    if resize == "squash":
        assert (left_quarter > 0).all()
    else:
        assert (green_over_red < 0).all()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ViT-B-16:openai", "could not fetch model 'ViT-B-16:openai': .*--model harmo-mix.*local-dir:PATH"),
        ("no-such-net:random", "could not load model"),
        ("harmo-test-vit", "names no weights"),
        ("local-dir:/nonexistent/x", "holds no open_clip_config.json"),
        ("harmo-test-vit:/nonexistent/weights.pt", "could not load model"),
        ("", "empty model spec"),
    ],
)
def test_unloadable_models_give_one_line_errors(spec, message):
    with pytest.raises(ModelLoadError, match=message) as info:
        load_encoder(EncoderConfig(model=spec))
    assert "\n" not in str(info.value)


def test_bundle_round_trip_keeps_vectors_and_config(test_encoder, tmp_path):
    config = load_config(overrides={"encoder.dense_mode": "plain", "encoder.model": "harmo-test-vit:random"})
    model_cfg = model_config_of(resolve_spec("harmo-test-vit:random"))
    write_model_bundle(test_encoder.model, model_cfg, tmp_path / "ckpt", config, {"step": 3})
    assert resolve_spec(str(tmp_path / "ckpt")).name == f"local-dir:{tmp_path / 'ckpt'}"
    loaded = load_encoder(EncoderConfig(model=f"local-dir:{tmp_path / 'ckpt'}"))
    assert loaded.config.dense_mode == "plain"  # carried by the checkpoint
    assert loaded.identity.weights == test_encoder.identity.weights
    x = images(2, seed=5)
    with torch.no_grad():
        expected = vision_forward(test_encoder.model, x, "plain")[1]
    assert torch.allclose(loaded.encode_pixels(x)[1], expected, atol=1e-5)
    assert Config().encoder.dense_mode == "value"


def test_last_token_pooling_takes_the_span_end():
    tokens = torch.randn(6, 8, generator=torch.Generator().manual_seed(9))
    last = pool_spans(tokens, [(1, 4), (4, 5)], "last")
    assert torch.allclose(last[0], F.normalize(tokens[3], dim=0)) and torch.allclose(
        last[1], F.normalize(tokens[4], dim=0)
    )
    mean = pool_spans(tokens, [(1, 4)], "mean")[0]
    assert torch.allclose(mean, F.normalize(F.normalize(tokens[1:4], dim=-1).mean(0), dim=0))


def test_training_forward_pools_lexemes_like_the_encoder(test_encoder):
    """The loop's vectorised span pooling equals pool_spans for both pooling modes."""
    from harmosearch.train.forward import forward_batch

    texts = ["a small red circle near a blue star", "one green ring"]
    tokens = test_encoder.tokenize(texts)
    spans = torch.tensor([[[2, 5], [7, 9]], [[2, 4], [0, 0]]])
    batch = {
        "pixels": images(2, seed=6),
        "tokens": tokens,
        "spans": spans,
        "boxes": torch.tensor([[[0.0, 0, 2, 2], [1, 1, 3, 3]], [[0, 0, 4, 4], [0, 0, 0, 0]]]),
        "crop_boxes": torch.zeros(2, 2, 4),
        "valid": torch.tensor([[True, True], [True, False]]),
        "lexeme_ids": torch.tensor([[1, 2], [3, -1]]),
    }
    with torch.no_grad():
        _, per_token = text_forward(test_encoder.model, tokens)
        for pool in ("mean", "last"):
            out = forward_batch(test_encoder.model, batch, "value", False, pool)
            expected = torch.cat(
                [pool_spans(per_token[0], [(2, 5), (7, 9)], pool), pool_spans(per_token[1], [(2, 4)], pool)]
            )
            assert torch.allclose(out["lexemes"], expected, atol=1e-5)


def test_class_token_shortcut_equals_the_full_last_block(test_encoder, monkeypatch):
    """The value-mode forward that attends for the class token only equals running the whole
    last block (open_clip's way) and the value path separately."""
    import harmosearch.model.encoder as encoder_module

    model, x = test_encoder.model, images(3, seed=5)
    with torch.no_grad():
        fast = vision_forward(model, x, "value")
        monkeypatch.setattr(encoder_module, "_class_token_shortcut", lambda visual, last: False)
        slow = vision_forward(model, x, "value")
    assert torch.allclose(fast[0], slow[0], atol=1e-5)
    assert torch.allclose(fast[1], slow[1], atol=1e-5)


def test_class_token_shortcut_has_the_same_gradients(test_encoder, monkeypatch):
    """Training runs through the same forward, so its gradients must match the full block's."""
    import copy

    import harmosearch.model.encoder as encoder_module

    x = images(2, seed=6)
    grads = []
    for shortcut in (True, False):
        model = copy.deepcopy(test_encoder.model).train()
        if not shortcut:
            monkeypatch.setattr(encoder_module, "_class_token_shortcut", lambda visual, last: False)
        pooled, dense = vision_forward(model, x, "value")
        (pooled.square().sum() + dense.sin().sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.visual.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_batched_segment_boxes_equal_union_find_reference(seed):
    from harmosearch.regions.proposals import segment_boxes

    from .references import segment_boxes_one_by_one

    g = torch.Generator().manual_seed(seed)
    # Smooth random maps (a few random vectors, upsampled) give large, irregular segments.
    coarse = torch.randn(5, 16, 3, 4, generator=g)
    dense = F.interpolate(coarse, size=(9, 11), mode="bilinear", align_corners=False)
    dense += 0.3 * torch.randn(dense.shape, generator=g)
    thresholds = (0.3, 0.6, 0.9)
    fast = segment_boxes(dense, thresholds)
    assert len(fast) == 5
    for i in range(5):
        expected = segment_boxes_one_by_one(dense[i], thresholds)
        assert torch.equal(fast[i], expected)
    assert sum(len(b) for b in fast) > 10  # the maps really have segments


def test_segment_boxes_follow_a_snake_shaped_segment():
    """A long, winding segment needs many propagation rounds: its box is still the whole snake."""
    from harmosearch.regions.proposals import segment_boxes

    dense = torch.zeros(1, 2, 7, 7)
    dense[0, 1] = 1.0  # background: one direction
    snake = [(0, x) for x in range(7)] + [(1, 6)] + [(2, x) for x in range(7)] + [(3, 0)] + [(4, x) for x in range(7)]
    for y, x in snake:
        dense[0, :, y, x] = torch.tensor([1.0, 0.0])
    dense[0, :, 6, 3] = torch.tensor([1.0, 0.0])  # a lone patch: no box
    boxes = segment_boxes(dense, (0.9,), max_fraction=0.9)[0]
    # The snake; the background between its turns (rows 1 and 3) and below it (rows 5-6).
    expected = [[0.0, 0.0, 7.0, 5.0], [0.0, 1.0, 6.0, 2.0], [0.0, 5.0, 7.0, 7.0], [1.0, 3.0, 7.0, 4.0]]
    assert torch.equal(boxes, torch.tensor(expected))


@pytest.mark.parametrize("seed", range(3))
def test_batched_selection_equals_one_by_one_reference(test_encoder, seed):
    from harmosearch.regions.proposals import image_regions

    from .references import select_one_by_one

    g, dense = test_encoder.encode_pixels(images(4, seed=10 + seed))
    # A loose duplicate threshold and a tight cap make both greedy filters and the cap matter.
    config = RegionConfig(max_regions=12, nms_iou=0.5, dedup_cosine=0.9)
    sizes = [(64, 48), (50, 50), (80, 40), (33, 70)]
    user = [torch.tensor([[3.0, 4.0, 20.0, 30.0], [4.0, 4.0, 21.0, 30.0]]), None, None, None]
    fast = image_regions(dense, g, sizes, test_encoder.grid, 32, "squash", config, user)
    loose = RegionConfig(max_regions=10_000, nms_iou=1.0, dedup_cosine=1.1)
    everything = image_regions(dense, g, sizes, test_encoder.grid, 32, "squash", loose, user)
    for i in range(4):
        all_boxes, all_scales, all_vectors = everything[i].boxes, everything[i].scales, everything[i].vectors
        rows = select_one_by_one(all_boxes, all_scales, all_vectors, g[i], config)
        assert torch.equal(fast[i].boxes, all_boxes[rows])
        assert torch.equal(fast[i].scales, all_scales[rows])
        assert torch.allclose(fast[i].vectors, all_vectors[rows])
    assert any(len(r.boxes) == 12 for r in fast)


@pytest.mark.parametrize("resize", ["squash", "shortest"])
def test_from_grid_inverts_to_grid_per_box_and_per_batch(resize):
    from harmosearch.regions.proposals import from_grid

    sizes = [(640, 480), (300, 500), (224, 224)]
    pixel_boxes = torch.tensor([[100.0, 120.0, 400.0, 360.0], [50.0, 150.0, 250.0, 350.0], [0.0, 0.0, 112.0, 200.0]])
    grid_boxes = torch.stack(
        [to_grid(b[None], w, h, (14, 14), 224, resize)[0] for b, (w, h) in zip(pixel_boxes, sizes, strict=True)]
    )
    widths = torch.tensor([float(w) for w, _ in sizes])
    heights = torch.tensor([float(h) for _, h in sizes])
    batched = from_grid(grid_boxes, widths, heights, (14, 14), 224, resize)
    for i, (w, h) in enumerate(sizes):
        one = from_grid(grid_boxes[i : i + 1], w, h, (14, 14), 224, resize)[0]
        assert torch.allclose(batched[i], one)
    # Every box lies inside the model's view (also after a shortest-side crop): it comes back.
    assert torch.allclose(batched, pixel_boxes, atol=1e-3)
