"""The training forward pass: everything the losses need from one batch, in one pass of each
tower. The loop runs it, and on several processes DistributedDataParallel wraps it
(`train.distributed`)."""

from __future__ import annotations

from typing import Any


def forward_batch(
    model: Any,
    batch: dict[str, Any],
    dense_mode: str,
    need_crops: bool,
    lexeme_pool: str,
    lexeme_mode: str = "token",
    need_distractors: bool = False,
) -> dict[str, Any]:
    """Everything the losses need from one batch, in one pass of each tower."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    from harmosearch.model.encoder import text_forward, vision_forward
    from harmosearch.regions.proposals import pool

    pixels, tokens, valid = batch["pixels"], batch["tokens"], batch["valid"]
    pooled, dense = vision_forward(model, pixels, dense_mode)
    text_pooled, per_token = text_forward(model, tokens)
    boxes = [batch["boxes"][b][valid[b]] for b in range(len(valid))]
    kinds = batch["distractor_boxes"].shape[2] if need_distractors else 0
    if kinds:  # one RoIAlign over each image's object boxes followed by their off-object boxes
        off = [batch["distractor_boxes"][b][valid[b]].reshape(-1, 4) for b in range(len(valid))]
        pooled_per_image = pool(dense.float(), [torch.cat(pair) for pair in zip(boxes, off, strict=True)])
        regions = torch.cat([p[: len(b)] for p, b in zip(pooled_per_image, boxes, strict=True)])
        distractors = torch.cat([p[len(b) :] for p, b in zip(pooled_per_image, boxes, strict=True)])
    else:
        regions = torch.cat(pool(dense.float(), boxes))
    spans = batch["spans"]
    if "lexeme_tokens" in batch:  # every lexeme embedded from its own prompt
        prompt_pooled, prompt_tokens = text_forward(model, batch["lexeme_tokens"][valid])
        if lexeme_mode == "prompt":
            lexemes = prompt_pooled.float()
        else:
            lexemes = _pool_token_spans(prompt_tokens, spans[valid][:, None], lexeme_pool)[:, 0]
    else:
        lexemes = _pool_token_spans(per_token, spans, lexeme_pool)[valid]
    owner = torch.nonzero(valid)[:, 0]
    out = {
        "image": F.normalize(pooled.float(), dim=-1),
        "text": F.normalize(text_pooled.float(), dim=-1),
        "regions": regions.float(),
        "lexemes": F.normalize(lexemes.float(), dim=-1),
        "lexeme_ids": batch["lexeme_ids"][valid],
        "owner": owner,
        "scale": model.logit_scale.exp().clamp(max=100).float(),
    }
    if kinds:
        out["distractors"] = distractors.float().reshape(len(regions), kinds, -1)  # [M, kinds, D]
    if need_crops:
        size = pixels.shape[-1]
        crop_boxes = [batch["crop_boxes"][b][valid[b]] for b in range(len(valid))]
        with torch.no_grad():
            crops = roi_align(pixels, crop_boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
            out["crops"] = (
                F.normalize(vision_forward(model, crops, dense_mode)[0].float(), dim=-1) if len(crops) else crops
            )
    return out


def _pool_token_spans(per_token: Any, spans: Any, pool: str) -> Any:
    """Batched pool_spans: per_token [B, T, D], spans [B, K, 2] -> [B, K, D] (not renormalised)."""
    import torch
    import torch.nn.functional as F

    normed = F.normalize(per_token.float(), dim=-1)
    positions = torch.arange(normed.shape[1], device=normed.device)
    start = spans[..., 1:] - 1 if pool == "last" else spans[..., :1]
    inside = (positions[None, None, :] >= start) & (positions[None, None, :] < spans[..., 1:])
    counts = inside.sum(-1, keepdim=True).clamp(min=1)
    return torch.einsum("bkt,btd->bkd", inside.float(), normed) / counts
