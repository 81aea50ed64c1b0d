"""Training-free dense maps: the last vision block recomputed for the patch tokens only.

A stock CLIP's last block mixes global context into every patch token, so its dense map says
little about where things are. The open-vocabulary segmentation literature recomputes that block
for the patches with another attention and without the parts that carry the global context; the
class token (the global vector) always goes through the ordinary block, so it is the model's own
in every mode. The modes, our own reading of each idea:

- "clear" (ClearCLIP's idea): query-query attention, softmax(q q^T / sqrt(d)), over the values,
  through the output projection; no residual, no FFN.
- "sclip" (SCLIP's correlative self-attention): softmax(q q^T / sqrt(d)) + softmax(k k^T / sqrt(d))
  over the values; no residual, no FFN.
- "naclip" (NACLIP's idea): key-key attention with a Gaussian bias over the patch grid added to
  its logits (each patch leans on its neighbours; sigma NEIGHBOUR_SIGMA patches, the class
  token's column unbiased); no residual, no FFN.

Every key and value is the block's own (ln_1, the packed q/k/v projection, per head); the class
token is among the keys. ln_post and the projection then follow as for every token.
"""

from __future__ import annotations

from typing import Any

TRAINING_FREE = ("clear", "sclip", "naclip")
DENSE_MODES = ("value", "plain", *TRAINING_FREE)
# What `encoder.dense_mode = "auto"` chooses among when an index is built (ties to the first): every mode.
AUTO_CANDIDATES = DENSE_MODES
NEIGHBOUR_SIGMA = 5.0  # naclip's Gaussian width, in patches (NACLIP's choice for ViT-B/16)


def neighbour_bias(grid: tuple[int, int], tokens: int) -> Any:
    """[tokens - 1, tokens]: for each patch (rows) and each token (columns, the class token
    first), exp(-distance^2 / (2 sigma^2)) between the two patches on the grid; 0 for the class token."""
    import torch

    gh, gw = grid
    rows = torch.arange(gh, dtype=torch.float32).repeat_interleave(gw)
    cols = torch.arange(gw, dtype=torch.float32).repeat(gh)
    distance = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    bias = torch.exp(-distance / (2 * NEIGHBOUR_SIGMA**2))
    return torch.cat([torch.zeros(gh * gw, tokens - gh * gw), bias], dim=1)


def last_block_training_free(
    last: Any, x: Any, mode: str, grid: tuple[int, int], class_query: bool = True
) -> tuple[Any, Any]:
    """The last block's outputs for a training-free mode: (the class token [B, 1, W] through the
    ordinary block, or None when class_query is False; the patch tokens [B, N-1, W] recomputed as
    `mode` says). `last` is the block's BlockParts, x its input [B, N, W]; they share ln_1 and the
    q/k/v projection."""
    import torch.nn.functional as F

    batch, tokens, width = x.shape
    heads = last.heads
    weight, bias = last.qkv_weight()

    def split_heads(t: Any) -> Any:
        return t.reshape(batch, t.shape[1], heads, width // heads).transpose(1, 2)

    def merge_heads(t: Any) -> Any:
        return t.transpose(1, 2).reshape(batch, t.shape[2], width)

    q, k, v = (split_heads(t) for t in F.linear(last.norm_in(x), weight, bias).chunk(3, dim=-1))
    cls = None
    if class_query:
        attended = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        cls = last.mlp_residual(x[:, :1] + last.attention_out(merge_heads(attended)))
    scale = (width // heads) ** -0.5

    def self_similarity(t: Any) -> Any:  # patches' rows against every token, per head
        return (t[:, :, 1:] @ t.transpose(-2, -1)) * scale

    if mode == "clear":
        weights = self_similarity(q).softmax(dim=-1)
    elif mode == "sclip":
        weights = self_similarity(q).softmax(dim=-1) + self_similarity(k).softmax(dim=-1)
    elif mode == "naclip":
        logits = self_similarity(k)
        weights = (logits + neighbour_bias(grid, tokens).to(logits.dtype)).softmax(dim=-1)
    else:
        raise ValueError(f"not a training-free dense mode: {mode!r}")
    return cls, last.attention_out(merge_heads(weights @ v))
