"""The encoder: a loaded model and the two forward passes harmosearch needs (loading.py resolves
and loads the model).

Images -> one L2-normalised global vector and a dense map (patch tokens projected into the
joint space exactly as the class token is: `ln_post`, then `proj`), in one forward pass.
Texts -> one global vector per text, and per-token vectors (`ln_final`, `text_projection`)
that lexemes pool over their token span: HarmoCLIP's text token space.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harmosearch.config import Config, EncoderConfig, PathsConfig
from harmosearch.errors import ConfigError, ModelLoadError
from harmosearch.model.clip_adapter import (
    BlockParts,
    TextParts,
    VisionParts,
    eval_transform,
    image_size_of,
    run_blocks,
    tokenizer_for,
    vision_parts,
)
from harmosearch.model.lexemes import ParsedText, parse
from harmosearch.model.loading import CHECKPOINT_META, HINT, load_model, resolve_spec

DEFAULT_TEMPERATURE = 100.0  # CLIP's logit scale, for a model that does not carry one


@dataclass(frozen=True)
class EncoderIdentity:
    """What a stored vector depends on; indexes refuse queries from a different identity."""

    spec: str
    weights: str  # fingerprint of the loaded parameters
    config_hash: str  # of the encoder settings that change vectors
    embed_dim: int
    image_size: int
    grid: tuple[int, int]
    # How the image vectors are made (model.runtimes); "" where an older index did not say.
    precision: str = ""
    runtime: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderIdentity:
        return cls(**{**data, "grid": tuple(data["grid"])})

    def mismatch(self, other: EncoderIdentity) -> str | None:
        """None when vectors from both are comparable, else what differs. The precision is not
        compared: a query may be encoded at any precision."""
        for name in ("weights", "config_hash", "embed_dim", "image_size"):
            if getattr(self, name) != getattr(other, name):
                return f"{name} differs ({getattr(self, name)} vs {getattr(other, name)})"
        return None

    @property
    def made_with(self) -> str:
        """How the image vectors were made, e.g. "int8 (onnxruntime)"; "" when unrecorded."""
        return f"{self.precision} ({self.runtime})" if self.precision else ""


def weights_fingerprint(model: Any) -> str:
    """A cheap hash of a strided sample of every parameter: tells different weights apart."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().flatten()
            step = max(1, flat.numel() // 64)
            digest.update(name.encode())
            digest.update(flat[::step][:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def encoder_settings_hash(config: EncoderConfig) -> str:
    """Only the settings that change stored vectors."""
    relevant = {"dense_mode": config.dense_mode, "resize": config.resize}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def vision_forward(model: Any, pixels: Any, dense_mode: str) -> tuple[Any, Any]:
    """One pass of the image tower: (global [B, D], dense [B, D, gh, gw]), both unnormalised.
    Pixels may be larger than the model's input (position embeddings resized, see clip_adapter):
    the dense map then has more, smaller patches.

    dense_mode "plain" projects the last block's patch tokens as they are; "value" recomputes
    the last block with its attention replaced by the value path (CLIPSelf / FineCLIP), which
    keeps each patch about its own location instead of mixing in global context; "clear",
    "sclip" and "naclip" recompute it for the patches training-free (model.dense_modes). The
    global vector is the ordinary model's in every mode.

    In every mode but plain the patch tokens of the ordinary last block are never used, so for class-token
    ViTs the last block runs its attention for the class token's query only and shares the
    value projection with the value path: global + dense cost about one forward, not 1.2.
    """
    import torch

    from harmosearch.model.dense_modes import DENSE_MODES

    if dense_mode not in DENSE_MODES:
        raise ConfigError(f"unknown dense_mode {dense_mode!r}")
    parts = vision_parts(model)
    transformer = parts.tower.transformer
    x = run_blocks(transformer, parts.embed(pixels), blocks=parts.blocks[:-1])
    last = BlockParts(parts.blocks[-1])
    grid = parts.grid_of(pixels)
    if dense_mode != "plain" and _class_token_shortcut(parts, last):
        cls, patches = _last_block_dense(last, x, dense_mode, grid)
        pooled, tokens = parts.pool(torch.cat([cls, patches], dim=1))
    else:
        pooled, tokens = parts.pool(run_blocks(transformer, x, blocks=parts.blocks[-1:]))
        if dense_mode != "plain":
            _, patches = _last_block_dense(last, x, dense_mode, grid, class_query=False)
            _, tokens = parts.pool(patches)
    if parts.proj is not None:
        pooled = pooled @ parts.proj
        tokens = tokens @ parts.proj
    dense = tokens.reshape(pixels.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)
    return pooled, dense


def _class_token_shortcut(parts: VisionParts, last: BlockParts) -> bool:
    """True when only the class token needs the last block's full attention."""
    return parts.global_is_class_token and last.is_standard


def _last_block_dense(
    last: BlockParts, x: Any, dense_mode: str, grid: tuple[int, int], class_query: bool = True
) -> tuple[Any, Any]:
    """The last block's (class token or None, tokens for the dense map) in `dense_mode` ("value"
    or a training-free mode of model.dense_modes); without class_query the tokens are [B, N, W],
    the class token's place kept by its input, for the tower's pooling to drop."""
    from harmosearch.model.dense_modes import last_block_training_free

    if dense_mode == "value":
        return _last_block_value_path(last, x, class_query)
    cls, patches = last_block_training_free(last, x, dense_mode, grid, class_query)
    if not class_query:
        import torch

        patches = torch.cat([x[:, :1], patches], dim=1)
    return cls, patches


def _last_block_value_path(last: BlockParts, x: Any, class_query: bool = True) -> tuple[Any, Any]:
    """The last block's outputs: (class token [B, 1, W] with full attention, or None when
    class_query is False; the value path, where attention is replaced by each token's own value,
    for the patch tokens [B, N-1, W], or for every token [B, N, W] when class_query is False).
    The two share ln_1 and the value projection."""
    import torch.nn.functional as F

    width = x.shape[-1]
    weight, bias = last.qkv_weight()

    def project(t: Any, lo: int, hi: int) -> Any:  # rows lo:hi of the packed q/k/v projection
        return F.linear(t, weight[lo:hi], None if bias is None else bias[lo:hi])

    h = last.norm_in(x)
    cls = None
    if class_query:
        keys, values = project(h, width, 3 * width).split(width, dim=-1)
        query = project(h[:, :1], 0, width)
        batch, heads = x.shape[0], last.heads

        def split_heads(t: Any) -> Any:
            return t.reshape(batch, t.shape[1], heads, width // heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split_heads(query), split_heads(keys), split_heads(values))
        cls = last.mlp_residual(x[:, :1] + last.attention_out(attended.transpose(1, 2).reshape(batch, 1, width)))
        x, values = x[:, 1:], values[:, 1:]
    else:
        values = project(h, 2 * width, 3 * width)
    return cls, last.mlp_residual(x + last.attention_out(values))


def text_forward(model: Any, tokens: Any) -> tuple[Any, Any]:
    """The text tower with every token kept: (global [N, D], per-token [N, T, D]), unnormalised."""
    x, text, pool_type, eos_id, projection = TextParts(model).tokens(tokens)
    pooled = TextParts.global_pool(x, text, pool_type, eos_id)
    if projection is not None:
        if hasattr(projection, "weight"):
            pooled, x = projection(pooled), projection(x)
        else:
            pooled, x = pooled @ projection, x @ projection
    return pooled, x


def split_transform(transform: Any) -> tuple[Any, Any] | None:
    """An image transform in two halves for fast batched preprocessing: (PIL geometry: resize
    and crop, to RGB; the final ToTensor + Normalize as (mean, std)), or None when the transform
    does not end that way. `pixels_from_uint8` finishes a stacked batch of the first half."""
    from torchvision.transforms import Compose, Normalize, ToTensor

    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-2], ToTensor) or not isinstance(steps[-1], Normalize):
        return None
    return Compose(steps[:-2]), (tuple(steps[-1].mean), tuple(steps[-1].std))


def pixels_from_uint8(images: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """uint8 [B, S, S, 3] -> float [B, 3, S, S]: ToTensor and Normalize for a whole batch."""
    import torch

    pixels = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    return pixels.sub_(mean_t).div_(std_t)


def pool_spans(token_vectors: Any, spans: list[tuple[int, int]], pool: str) -> Any:
    """Lexeme vectors from per-token vectors [T, D] -> [L, D], L2-normalised: the mean of the
    span's normalised token vectors, or ("last") the span's final token, which under the text
    tower's causal attention is the only one that has read the whole lexeme."""
    import torch
    import torch.nn.functional as F

    if not spans:
        return token_vectors.new_zeros((0, token_vectors.shape[-1]))
    normed = F.normalize(token_vectors.float(), dim=-1)
    if pool == "last":
        return torch.stack([normed[hi - 1] for _, hi in spans])
    pooled = torch.stack([normed[lo:hi].mean(0) for lo, hi in spans])
    return F.normalize(pooled, dim=-1)


@dataclass
class TextEncoding:
    text: str
    parsed: ParsedText
    global_vector: Any  # [D], normalised
    lexeme_vectors: Any  # [L, D], normalised, one row per parsed.lexemes


class Encoder:
    """A loaded model with its transform, tokenizer and identity."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: EncoderConfig,
        spec: str,
        device: Any,
        vocabulary: Sequence[str] = (),
        cache_dir: Path | None = None,
    ) -> None:
        from harmosearch.model.runtimes import resolve_path, runner_for

        if config.dense_mode == "auto":  # chosen per index when one is built (indexing.dense_choice)
            config = replace(config, dense_mode="value")
        self.model = model.to(device).eval()
        # The phrases the model was trained to tell apart (a checkpoint's harmosearch.json), the
        # rivals of a query's lexemes when search.vocabulary is "auto" (contrast.py).
        self.vocabulary = tuple(vocabulary)
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.context_length = int(getattr(tokenizer, "context_length", None) or 77)
        self.image_size = image_size_of(model)
        self.transform = eval_transform(model, config.resize)
        self._transforms = {self.image_size: self.transform}  # by input size
        self.cache_dir = cache_dir if cache_dir is not None else PathsConfig().cache_dir  # exported graphs, bank texts
        path = resolve_path(device, config, self.cache_dir)
        grid = tuple(int(g) for g in getattr(model.visual, "grid_size", (0, 0)))
        embed_dim = int(model.visual.output_dim)
        self.identity = EncoderIdentity(
            spec=spec,
            weights=weights_fingerprint(model),
            config_hash=encoder_settings_hash(config),
            embed_dim=embed_dim,
            image_size=self.image_size,
            grid=grid,  # type: ignore[arg-type]
            precision=path.precision,
            runtime=path.runtime,
        )
        self.runner = runner_for(self.model, path, device, config.dense_mode, self.identity, self.cache_dir)

    @property
    def grid(self) -> tuple[int, int]:
        return self.identity.grid

    def with_dense_mode(self, dense_mode: str) -> Encoder:
        """This encoder (the same loaded model) making its dense maps in `dense_mode`."""
        from harmosearch.model.runtimes import runner_for

        other = copy.copy(self)
        other.config = replace(self.config, dense_mode=dense_mode)
        other.identity = replace(self.identity, config_hash=encoder_settings_hash(other.config))
        other.runner = runner_for(self.model, self.path, self.device, dense_mode, other.identity, self.cache_dir)
        return other

    @property
    def temperature(self) -> float:
        """The model's logit scale (what its similarities are multiplied by before a softmax)."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.detach().exp()) if scale is not None else DEFAULT_TEMPERATURE

    def image_tensor(self, image: Any) -> Any:
        """A PIL image -> a preprocessed [3, S, S] tensor."""
        return self.transform(image.convert("RGB"))

    @property
    def path(self) -> Any:
        """How vectors are made here (model.runtimes.InferencePath)."""
        return self.runner.path

    def encode_pixels(self, pixels: Any) -> tuple[Any, Any]:
        """[B, 3, S, S] -> (global [B, D] normalised, dense [B, D, gh, gw] float32 on CPU)."""
        import torch.nn.functional as F

        pooled, dense = self.runner.forward(pixels)
        return F.normalize(pooled.float(), dim=-1).cpu(), dense.float().cpu()

    def encode_images(self, images: Sequence[Any], size: int | None = None) -> tuple[Any, Any]:
        """PIL images -> (global [B, D] normalised, dense [B, D, gh, gw]) as encode_pixels, at the
        model's input size or at `size` pixels (position embeddings resized: a finer dense map)."""
        import torch

        size = size or self.image_size
        if size not in self._transforms:
            self._transforms[size] = eval_transform(self.model, self.config.resize, size)
        transform = self._transforms[size]
        return self.encode_pixels(torch.stack([transform(image.convert("RGB")) for image in images]))

    def tokenize(self, texts: list[str]) -> Any:
        return self.tokenizer(texts)

    def parse(self, text: str) -> ParsedText:
        return parse(text, self.tokenizer, self.context_length, self.config.parser)

    def encode_texts(self, texts: list[str]) -> Any:
        """[N, D] normalised global text vectors (the EOT feature)."""
        import torch

        vectors = []
        for start in range(0, len(texts), self.config.batch_size):
            tokens = self.tokenize(texts[start : start + self.config.batch_size])
            vectors.append(self.encode_tokens(tokens)[0])
        if not vectors:
            return torch.zeros((0, self.identity.embed_dim))
        return torch.cat(vectors)

    def encode_tokens(self, tokens: Any) -> tuple[Any, Any]:
        import torch.nn.functional as F

        pooled, per_token = self.runner.forward_text(tokens)
        return F.normalize(pooled.float(), dim=-1).cpu(), per_token.float().cpu()

    def encode_queries(self, texts: list[str]) -> list[TextEncoding]:
        """Global vector and lexeme vectors for each text, in the configured lexeme mode."""
        parsed = [self.parse(t) for t in texts]
        if not texts:
            return []
        tokens = self.tokenize(texts)
        pooled, per_token = self.encode_tokens(tokens)
        if self.config.lexeme_mode == "prompt":
            prompts = [self.config.lexeme_prompt.format(lex.text) for p in parsed for lex in p.lexemes]
            flat = self.encode_texts(prompts)
            out, offset = [], 0
            for text, p, g in zip(texts, parsed, pooled, strict=True):
                count = len(p.lexemes)
                out.append(TextEncoding(text, p, g, flat[offset : offset + count]))
                offset += count
            return out
        return [
            TextEncoding(text, p, g, pool_spans(tok, [lex.tokens for lex in p.lexemes], self.config.lexeme_pool))
            for text, p, g, tok in zip(texts, parsed, pooled, per_token, strict=True)
        ]


# Encoder settings a harmosearch checkpoint carries: it was trained for them, so they apply
# unless the user set them.
TRAINED_SETTINGS = ("encoder.dense_mode", "encoder.lexeme_mode", "encoder.lexeme_pool", "encoder.resize")


def load_encoder(config: Config | EncoderConfig | None = None, device: str | None = None) -> Encoder:
    """Load the model named by config.encoder.model, offline-safe, with one-line errors."""
    from harmosearch.model.device import resolve_device

    if not isinstance(config, Config):
        config = Config(encoder=config or EncoderConfig())
    source = resolve_spec(config.encoder.model)
    model, meta = load_model(source)
    if meta.get("config"):
        config = config.over(meta["config"], TRAINED_SETTINGS)
    try:
        tokenizer = tokenizer_for(source.name)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer of {source.spec!r}: {exc}; {HINT}") from None
    vocabulary = meta.get("vocabulary") or []
    if not isinstance(vocabulary, list) or not all(isinstance(v, str) for v in vocabulary):
        raise ModelLoadError(
            f"model {source.spec!r}: its {CHECKPOINT_META} has a vocabulary that is not a list of phrases"
        )
    device_ = resolve_device(device or config.encoder.device)
    return Encoder(model, tokenizer, config.encoder, source.spec, device_, vocabulary, config.paths.cache_dir)
