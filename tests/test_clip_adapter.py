"""The open_clip internals harmosearch relies on still add up to open_clip's public forward.

If an open_clip release renames or changes `_embeds`, `_pool`, the blocks' attention weights or
the text tower's steps, these tests fail here, before any vector silently changes.
"""

import pytest
import torch
import torch.nn.functional as F

from harmosearch.errors import ModelLoadError
from harmosearch.model.clip_adapter import BlockParts, TextParts, vision_parts


def pixels(n=2, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_vision_parts_compose_to_encode_image(test_encoder):
    model = test_encoder.model
    parts = vision_parts(model)
    x = pixels()
    with torch.no_grad():
        h = parts.embed(x)
        for block in parts.blocks:
            h = block(h)
        pooled, tokens = parts.pool(h)
        reference = model.encode_image(x)
    assert torch.allclose(pooled @ parts.proj, reference, atol=1e-5)
    assert tokens.shape[1] == parts.grid[0] * parts.grid[1]
    assert parts.global_is_class_token


def test_block_parts_recompute_the_block(test_encoder):
    """The packed q/k/v weights, head count, output projection, layer scales and MLP, put back
    together by hand, give the block's own output."""
    parts = vision_parts(test_encoder.model)
    block = BlockParts(parts.blocks[-1])
    assert block.is_standard
    x = torch.randn(2, 5, parts.blocks[-1].attn.embed_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        weight, bias = block.qkv_weight()
        q, k, v = F.linear(block.norm_in(x), weight, bias).chunk(3, dim=-1)
        heads, width = block.heads, x.shape[-1]

        def split(t):
            return t.reshape(2, 5, heads, width // heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(2, 5, width)
        by_hand = block.mlp_residual(x + block.attention_out(attended))
        assert torch.allclose(by_hand, parts.blocks[-1](x), atol=1e-5)


def test_text_parts_compose_to_encode_text(test_encoder):
    model = test_encoder.model
    tokens = test_encoder.tokenize(["a red circle next to a blue star", "one green ring"])
    with torch.no_grad():
        x, text, pool_type, eos_id, projection = TextParts(model).tokens(tokens)
        pooled = TextParts.global_pool(x, text, pool_type, eos_id) @ projection
        reference = model.encode_text(tokens)
    assert torch.allclose(pooled, reference, atol=1e-5)


def test_towers_without_patch_tokens_are_refused():
    class NoTokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = torch.nn.Linear(2, 2)

    with pytest.raises(ModelLoadError, match="open_clip ViT"):
        vision_parts(NoTokens())


def test_other_input_sizes_match_a_model_built_for_that_size(test_encoder):
    """At another input size the tower equals open_clip's own model for that size, loaded from the
    same weights with its position embeddings resized (what open_clip does for such checkpoints)."""
    import open_clip
    from open_clip.model import resize_pos_embed

    from harmosearch.model.encoder import vision_forward

    model = test_encoder.model
    bigger = open_clip.create_model("harmo-test-vit", force_image_size=56)
    state = model.state_dict()
    resize_pos_embed(state, bigger)
    bigger.load_state_dict(state)
    bigger.eval()
    x = pixels(size=56)
    parts = vision_parts(model)
    assert parts.grid_of(x) == (7, 7) and parts.grid == (4, 4)
    with torch.no_grad():
        pooled, dense = vision_forward(model, x, "plain")
        reference = bigger.encode_image(x)
        _, dense_reference = vision_forward(bigger, x, "plain")
    assert torch.allclose(pooled, reference, atol=1e-5)
    assert dense.shape == (2, 32, 7, 7) and torch.allclose(dense, dense_reference, atol=1e-5)
    with torch.no_grad():  # the model's own size still takes open_clip's own path
        assert torch.equal(parts.embed(pixels()), model.visual._embeds(pixels()))


def test_block_forward_equals_the_block_with_and_without_a_mask(test_encoder):
    """BlockParts.forward (what blocks run under autocast) is open_clip's block, for the image
    tower's blocks and the text tower's causal ones."""
    from harmosearch.model.clip_adapter import run_blocks

    model = test_encoder.model
    g = torch.Generator().manual_seed(8)
    for transformer, mask in ((model.visual.transformer, None), (model.transformer, model.attn_mask)):
        tokens = 17 if mask is None else mask.shape[0]
        x = torch.randn(3, tokens, transformer.width, generator=g)
        with torch.no_grad():
            for block in transformer.resblocks:
                assert torch.allclose(BlockParts(block).forward(x, mask), block(x, attn_mask=mask), atol=1e-5)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lowered = run_blocks(transformer, x, mask)
            reference = run_blocks(transformer, x, mask)
        assert torch.nn.functional.cosine_similarity(lowered.float(), reference, dim=-1).mean() > 0.99


def test_a_tower_resized_once_equals_resizing_on_every_pass(test_encoder):
    from harmosearch.model.clip_adapter import at_input_size
    from harmosearch.model.encoder import vision_forward

    model, x = test_encoder.model, pixels(2, size=64, seed=9)
    assert at_input_size(model, 32) is model
    resized = at_input_size(model, 64)
    with torch.no_grad():
        for mine, theirs in zip(vision_forward(resized, x, "value"), vision_forward(model, x, "value"), strict=True):
            assert torch.allclose(mine, theirs, atol=1e-5)
    assert tuple(model.visual.grid_size) == (4, 4)  # the model itself is left as it was


def tiny_custom_text_clip(**text):
    """An open_clip CustomTextCLIP (the text tower as `model.text`) of random weights."""
    import open_clip

    vision = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16}
    text_cfg = {"context_length": 24, "vocab_size": 64, "width": 32, "heads": 2, "layers": 2, **text}
    torch.manual_seed(0)
    return open_clip.CustomTextCLIP(embed_dim=16, vision_cfg=vision, text_cfg=text_cfg).eval()


def padded_tokens(lengths, context, words=(1, 63), end=63, pad=0, seed=1):
    """Token rows of the given lengths: ids drawn from `words` (low, high: high left out), then
    `end` (by default the highest id, an EOT for argmax pooling), then `pad` to the context."""
    rows = torch.full((len(lengths), context), pad, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    for row, length in zip(rows, lengths, strict=True):
        row[: length - 1] = torch.randint(*words, (length - 1,), generator=generator)
        row[length - 1] = end
    return rows


@pytest.mark.parametrize("tower", ["clip", "custom"])
def test_text_without_its_padding_gives_every_feature_a_query_reads(tower, test_encoder):
    """Under causal attention the padding after a batch's longest text changes no feature of the
    text's tokens nor the pooled one: cut away, they equal the whole sequence's, and open_clip's
    own encode_text."""
    from harmosearch.model.encoder import text_forward

    if tower == "clip":
        model, tokens = test_encoder.model, test_encoder.tokenize(["a red circle next to a blue star", "one ring"])
    else:
        model = tiny_custom_text_clip(pool_type="argmax")
        tokens = padded_tokens([5, 9], 24)
    short = TextParts(model).without_padding(tokens)
    longest = int((tokens != 0).sum(1).max())
    assert short.shape == (2, longest) and torch.equal(short, tokens[:, :longest])
    with torch.no_grad():
        pooled, per_token = text_forward(model, tokens)
        short_pooled, short_per_token = text_forward(model, short)
        reference = model.encode_text(tokens)
    assert torch.allclose(short_pooled, pooled, atol=1e-5) and torch.allclose(short_pooled, reference, atol=1e-5)
    assert torch.allclose(short_per_token, per_token[:, :longest], atol=1e-5)


@pytest.mark.parametrize("text", [{"no_causal_mask": True, "pool_type": "argmax"}, {"pool_type": "last"}])
def test_text_towers_that_read_later_positions_keep_their_padding(text):
    """Without a causal mask every position reads the padding; pooled at the last position, the
    pooled feature is the padding's: such towers get their tokens whole."""
    model = tiny_custom_text_clip(**text)
    tokens = padded_tokens([5, 9], 24)
    assert TextParts(model).without_padding(tokens) is tokens


def test_queries_encoded_without_padding_equal_queries_encoded_whole(test_encoder, monkeypatch):
    """The encoder's torch path cuts the padding (TorchRunner.forward_text): the same global and
    lexeme vectors as the whole context length gives."""
    texts = ["two red circles left of a blue square", "a dog", "a bench without people near a tree"]
    cut = test_encoder.encode_queries(texts)
    monkeypatch.setattr(TextParts, "without_padding", lambda self, tokens: tokens)
    whole = test_encoder.encode_queries(texts)
    for a, b in zip(cut, whole, strict=True):
        assert torch.allclose(a.global_vector, b.global_vector, atol=1e-5)
        assert torch.allclose(a.lexeme_vectors, b.lexeme_vectors, atol=1e-5) and len(a.lexeme_vectors) > 0


def test_only_a_mask_hiding_every_later_position_and_no_earlier_one_is_causal():
    from harmosearch.model.clip_adapter import _is_causal

    causal = torch.full((10, 10), float("-inf")).triu(1)
    assert _is_causal(causal)
    assert not _is_causal(torch.zeros(10, 10))  # hides nothing
    assert not _is_causal(causal.T)  # hides the earlier positions
    assert not _is_causal(torch.full((10, 10), -1e4).triu(1))  # a finite penalty lets them through


def test_a_tower_pooling_at_an_eos_that_is_also_its_padding_keeps_the_pooled_token():
    """Pooled at the first EOS, with the padding of the same id: the cut keeps every row's EOS,
    and the features equal the whole sequence's (pooled elsewhere, they would not)."""
    from harmosearch.model.encoder import text_forward

    model = tiny_custom_text_clip(pool_type="eos", eos_id=5, pad_id=5)
    tokens = padded_tokens([4, 8], 24, words=(6, 64), end=5, pad=5, seed=2)
    short = TextParts(model).without_padding(tokens)
    assert short.shape == (2, 8)
    with torch.no_grad():
        pooled, per_token = text_forward(model, tokens)
        short_pooled, short_per_token = text_forward(model, short)
    assert torch.allclose(short_pooled, pooled, atol=1e-5)
    assert torch.allclose(short_per_token, per_token[:, :8], atol=1e-5)
