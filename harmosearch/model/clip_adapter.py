"""Every use of open_clip's internals, in one place.

harmosearch needs the patch tokens of the image tower and the per-token outputs of the text
tower, which open_clip's public `encode_image` / `encode_text` do not return, and it recomputes
the last vision block for the value-path dense map; it also runs the image tower at other input
sizes than its own, with the position embeddings resized as open_clip resizes them when it
loads a checkpoint for another size. The private pieces this takes (`_embeds`, `_pool`, the
patch embedding, the blocks' attention weights, the text tower's embedding step) are reached
only through this module; `tests/test_clip_adapter.py` checks that they still add up to open_clip's
public forward, so an open_clip release that changes them fails loudly there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmosearch.errors import ModelLoadError

MODEL_CONFIGS = Path(__file__).parent / "configs"


def register_model_configs() -> None:
    """Make harmosearch's tiny architectures known to open_clip (idempotent)."""
    import open_clip

    if "harmo-tiny-vit" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS)


def create_model(name: str, pretrained: str | None) -> Any:
    import open_clip

    register_model_configs()
    return open_clip.create_model(name, **({"pretrained": pretrained} if pretrained else {}))


def architecture_config(name: str) -> dict[str, Any] | None:
    import open_clip

    register_model_configs()
    return open_clip.get_model_config(name)


def tokenizer_for(name: str) -> Any:
    import open_clip

    register_model_configs()
    return open_clip.get_tokenizer(name)


def preprocess_config(model: Any) -> dict[str, Any]:
    import open_clip

    return dict(open_clip.get_model_preprocess_cfg(model))


def image_size_of(model: Any) -> int:
    size = preprocess_config(model).get("size", model.visual.image_size)
    return int(size[0] if isinstance(size, tuple | list) else size)


def eval_transform(model: Any, resize: str, size: int | None = None) -> Any:
    """open_clip's inference transform for `model` with harmosearch's resize mode, to the model's
    input size or to `size`."""
    from open_clip.transform import image_transform

    pre = preprocess_config(model)
    return image_transform(
        size or image_size_of(model), is_train=False, mean=pre.get("mean"), std=pre.get("std"), resize_mode=resize
    )


def clip_loss() -> Any:
    from open_clip.loss import ClipLoss

    return ClipLoss()


@dataclass(frozen=True)
class VisionParts:
    """A class-token ViT image tower taken apart: embed -> blocks -> pool (ln_post) -> proj."""

    tower: Any
    blocks: Any  # the residual attention blocks, in order

    def embed(self, pixels: Any) -> Any:
        """Patch embedding, class token, positions and ln_pre: [B, 1 + gh*gw, width]. Pixels of
        another size than the tower's own get position embeddings resized to their grid."""
        grid = self.grid_of(pixels)
        if grid == self.grid:
            return self.tower._embeds(pixels)
        import torch
        from open_clip.transformer import _expand_token

        tower = self.tower
        x = tower.conv1(pixels)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([_expand_token(tower.class_embedding, x.shape[0]).to(x.dtype), x], dim=1)
        x = x + self.positions(grid).to(x.dtype)
        return tower.ln_pre(tower.patch_dropout(x))

    def positions(self, grid: tuple[int, int]) -> Any:
        """The position embeddings [1 + gh*gw, width] for another grid: open_clip's own resizing
        (bicubic over the patch grid, the class token's kept), as for a checkpoint of that size."""
        from types import SimpleNamespace

        from open_clip.model import resize_pos_embed

        state = {"visual.positional_embedding": self.tower.positional_embedding}
        resize_pos_embed(state, SimpleNamespace(visual=SimpleNamespace(grid_size=grid)))
        return state["visual.positional_embedding"]

    def grid_of(self, pixels: Any) -> tuple[int, int]:
        """The patch grid of a pixel batch [B, 3, H, W]."""
        patch_h, patch_w = self.tower.patch_size
        return int(pixels.shape[-2]) // patch_h, int(pixels.shape[-1]) // patch_w

    def pool(self, tokens: Any) -> tuple[Any, Any]:
        """ln_post and the tower's global pooling: (global [B, width], patch tokens [B, gh*gw, width])."""
        return self.tower._pool(tokens)

    @property
    def proj(self) -> Any:
        return self.tower.proj

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(int(g) for g in self.tower.grid_size)  # type: ignore[return-value]

    @property
    def global_is_class_token(self) -> bool:
        """The global vector is the class token after the last block, normalised by ln_post
        (open_clip's default ViT): then only the class token needs the last block's full attention."""
        return getattr(self.tower, "pool_type", None) == "tok" and not getattr(self.tower, "final_ln_after_pool", False)


def at_input_size(model: Any, size: int) -> Any:
    """`model`, or a copy of it whose image tower takes `size`-pixel inputs as its own size: the
    position embeddings resized once as `VisionParts.positions` resizes them on every pass (an
    exported graph then holds them as they are, without the resizing, which ONNX cannot express)."""
    import copy

    import torch

    parts = vision_parts(model)
    grid = parts.grid_of(torch.empty(1, 3, size, size))
    if grid == parts.grid:
        return model
    resized = copy.deepcopy(model)
    with torch.no_grad():
        positions = parts.positions(grid).detach().clone()
    resized.visual.positional_embedding = torch.nn.Parameter(positions, requires_grad=False)
    resized.visual.grid_size = grid
    return resized


def vision_parts(model: Any) -> VisionParts:
    visual = model.visual
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or not hasattr(visual, "_embeds") or getattr(visual, "attn_pool", None) is not None:
        raise ModelLoadError(
            f"{type(visual).__name__} image towers have no patch tokens harmosearch can pool; "
            "use an open_clip ViT model"
        )
    if not getattr(visual.transformer, "batch_first", True):
        raise ModelLoadError("open_clip ViTs with batch_first=False are not supported")
    return VisionParts(visual, blocks)


@dataclass(frozen=True)
class BlockParts:
    """One residual attention block's pieces, for recomputing it with another attention."""

    block: Any

    @property
    def is_standard(self) -> bool:
        """A plain pre-norm block with torch's MultiheadAttention (packed q/k/v projection)."""
        import torch

        return isinstance(getattr(self.block, "attn", None), torch.nn.MultiheadAttention) and not hasattr(
            self.block, "ln_1_kv"
        )

    @property
    def heads(self) -> int:
        return int(self.block.attn.num_heads)

    def qkv_weight(self) -> tuple[Any, Any]:
        """The packed [3 * width, width] projection and its bias (None without one)."""
        return self.block.attn.in_proj_weight, self.block.attn.in_proj_bias

    def norm_in(self, x: Any) -> Any:
        return self.block.ln_1(x)

    def attention_out(self, x: Any) -> Any:
        """The attention's output projection, then the block's layer scale."""
        return self.block.ls_1(self.block.attn.out_proj(x))

    def mlp_residual(self, x: Any) -> Any:
        return x + self.block.ls_2(self.block.mlp(self.block.ln_2(x)))

    def forward(self, x: Any, attn_mask: Any = None) -> Any:
        """The block as open_clip runs it on batch-first tokens [B, N, W], for a standard block.

        Under autocast torch's MultiheadAttention leaves its inference fast path, and its other
        path applies the packed q/k/v projection to a transposed view of the tokens, which
        torch's linear computes as a batched product over the weight expanded per token: in bf16
        that copies the [3W, W] weight once per token (44% of a ViT-B/16 forward on a CPU). Here
        the projection runs on the contiguous tokens."""
        import torch.nn.functional as F

        batch, tokens, width = x.shape
        weight, bias = self.qkv_weight()

        def split_heads(t: Any) -> Any:
            return t.reshape(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = (split_heads(t) for t in F.linear(self.norm_in(x), weight, bias).chunk(3, dim=-1))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.mlp_residual(x + self.attention_out(attended.transpose(1, 2).reshape(batch, tokens, width)))


def run_blocks(transformer: Any, x: Any, attn_mask: Any = None, blocks: Any = None) -> Any:
    """Batch-first tokens through an open_clip transformer's blocks (or `blocks`, some of them):
    under autocast through `BlockParts.forward` where a block is standard, else through the
    blocks themselves (torch's fused attention)."""
    import torch

    blocks = transformer.resblocks if blocks is None else blocks
    if not torch.is_autocast_enabled(x.device.type) or not getattr(transformer, "batch_first", True):
        if blocks is transformer.resblocks:
            return transformer(x, attn_mask=attn_mask)
        for block in blocks:
            x = block(x, attn_mask=attn_mask)
        return x
    for block in blocks:
        parts = BlockParts(block)
        x = parts.forward(x, attn_mask) if parts.is_standard else block(x, attn_mask=attn_mask)
    return x


def _is_causal(mask: Any) -> bool:
    """An additive mask that hides every later position and no earlier one."""
    import torch

    blocked = torch.isinf(mask) & (mask < 0)
    size = blocked.shape[-1]
    return bool((blocked == torch.ones(size, size, dtype=torch.bool, device=mask.device).triu(1)).all())


@dataclass(frozen=True)
class TextParts:
    """A text tower taken apart: per-token features after ln_final, the global pooling, and
    the projection into the joint space."""

    model: Any

    def tokens(self, text: Any) -> tuple[Any, Any, str, int | None, Any]:
        """(per-token features [N, T, width] after ln_final, the tokens, pool type, EOS id,
        projection), for T up to the context length (the positions and mask cut to T)."""
        owner, pool_type, eos_id = self.pooling()
        length = text.shape[1]
        if owner is not self.model:  # CustomTextCLIP
            if getattr(owner, "cls_emb", None) is not None:
                raise ModelLoadError("text towers with a class token (CoCa) are not supported")
            x, attn_mask = owner._embeds(text)
            if attn_mask is not None:  # the causal mask alone is the context length's
                attn_mask = attn_mask[..., :length, :length]
            x = owner.ln_final(run_blocks(owner.transformer, x, attn_mask))
            return x, text, pool_type, eos_id, owner.text_projection
        model = self.model
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(text).to(cast) + model.positional_embedding[:length].to(cast)
        attn_mask = None if model.attn_mask is None else model.attn_mask[:length, :length]
        x = model.ln_final(run_blocks(model.transformer, x, attn_mask))
        return x, text, pool_type, eos_id, model.text_projection

    def pooling(self) -> tuple[Any, str, int | None]:
        """(what holds the text tower's layers, mask and padding id, its pool type, its EOS id):
        a CustomTextCLIP's text tower, or a CLIP model itself, which names them text_*."""
        tower = getattr(self.model, "text", None)
        if tower is not None:
            return tower, tower.pool_type, getattr(tower, "eos_id", None)
        return self.model, self.model.text_pool_type, getattr(self.model, "text_eos_id", None)

    def without_padding(self, text: Any) -> Any:
        """`text` [N, T] without the padding after the batch's last token, where that changes
        nothing a query reads: under causal attention no position reads a later one, so each
        token's feature and the feature pooled at a token (the EOT's: argmax or eos; the
        first) are those of the whole sequence. A query of a few words then costs a few
        positions instead of the context length (77 for most models). Other towers (no causal
        mask, pooling over the last position or all of them) get `text` as it is."""
        owner, pool, eos = self.pooling()
        mask = getattr(owner, "attn_mask", None)
        if mask is None or pool not in ("argmax", "eos", "first") or not _is_causal(mask):
            return text
        used = (text != getattr(owner, "pad_id", 0)).any(0).nonzero()
        keep = int(used[-1]) + 1 if len(used) else 1
        if pool == "argmax":  # the pooled position kept, whatever the padding's id
            keep = max(keep, int(text.argmax(-1).max()) + 1)
        elif pool == "eos":
            keep = max(keep, int((text == eos).int().argmax(-1).max()) + 1)
        return text[:, :keep]

    @staticmethod
    def global_pool(x: Any, text: Any, pool_type: str, eos_id: int | None) -> Any:
        from open_clip.transformer import text_global_pool

        return text_global_pool(x, text, pool_type, eos_token_id=eos_id)
