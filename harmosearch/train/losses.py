"""HarmoCLIP's losses as modules whose forward returns a dict of named terms.

Inputs are L2-normalised vectors; `scale` is the model's logit_scale.exp().
- GC: the symmetric CLIP InfoNCE between global image and caption vectors (open_clip's ClipLoss).
- LRC: symmetric InfoNCE between region vectors and the lexeme vectors linked to them; every
  other pair in the batch is a negative, except lexemes textually identical to the positive.
- GR: (a) "caption": each region against its own image's caption, other captions negative;
  (b) "crop": 1 - cosine between a region and the global vector of the image cropped to its box.
- TIGHT (harmosearch's addition, off by default): each lexeme must score its object's box above
  every off-object box of the batch (`train.distractors`: loose boxes around objects, parts of
  them, boxes shifted half off them), one softmax per lexeme. At search time the best of many
  proposals in each image wins, so a part of a red cross must not outscore a whole red circle
  for "red circle", nor a loose window the box on the object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalContrastive(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from open_clip.loss import ClipLoss

        self.clip = ClipLoss()

    def forward(self, image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"gc": self.clip(image, text, scale)}


class LexemeRegionContrastive(nn.Module):
    def forward(
        self, regions: torch.Tensor, lexemes: torch.Tensor, lexeme_ids: torch.Tensor, scale: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """regions, lexemes: [M, D] for the M valid (region, lexeme) pairs of the batch."""
        if len(regions) < 2:
            return {"lrc": regions.sum() * 0 + lexemes.sum() * 0}
        logits = scale * regions @ lexemes.T
        same_text = lexeme_ids[:, None] == lexeme_ids[None, :]
        not_negative = same_text & ~torch.eye(len(regions), dtype=torch.bool, device=regions.device)
        logits = logits.masked_fill(not_negative, float("-inf"))
        target = torch.arange(len(regions), device=regions.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return {"lrc": loss}


class GlobalRegionAlignment(nn.Module):
    def __init__(self, variant: str = "caption") -> None:
        super().__init__()
        if variant not in ("caption", "crop"):
            raise ValueError(f"unknown GR variant {variant!r}")
        self.variant = variant

    def forward(
        self,
        regions: torch.Tensor,
        owner: torch.Tensor,
        captions: torch.Tensor | None = None,
        crops: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """regions [M, D]; owner [M] = index of each region's image in the batch;
        captions [B, D] (variant caption) or crops [M, D] (variant crop, no gradient)."""
        if len(regions) == 0:
            return {"gr": regions.sum() * 0}
        if self.variant == "caption":
            assert captions is not None and scale is not None
            return {"gr": F.cross_entropy(scale * regions @ captions.T, owner)}
        assert crops is not None
        return {"gr": (1 - (regions * crops.detach()).sum(-1)).mean()}


class RegionTightness(nn.Module):
    def forward(
        self, regions: torch.Tensor, distractors: torch.Tensor, lexemes: torch.Tensor, scale: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """regions, lexemes [M, D]: row i = a lexeme and its object's box; distractors [M, K, D]:
        the K off-object boxes drawn around each object. For lexeme i the candidates are its own
        box and all M*K off-object boxes; the loss is the mean of -log softmax(...)[own box]."""
        if len(regions) == 0:
            return {"tight": regions.sum() * 0 + distractors.sum() * 0}
        own = scale * (regions * lexemes).sum(-1, keepdim=True)  # [M, 1]
        off = scale * lexemes @ distractors.reshape(-1, distractors.shape[-1]).T  # [M, M*K]
        logits = torch.cat([own, off], dim=1)
        target = torch.zeros(len(regions), dtype=torch.long, device=regions.device)
        return {"tight": F.cross_entropy(logits, target)}


class HarmoLoss(nn.Module):
    """Total = GC + w_lrc * LRC + w_gr * GR (+ w_tight * TIGHT) over the enabled terms; returns
    every term and the total."""

    def __init__(
        self,
        losses: tuple[str, ...],
        w_lrc: float = 1.0,
        w_gr: float = 1.0,
        gr_variant: str = "caption",
        w_tight: float = 1.0,
    ):
        super().__init__()
        self.enabled = tuple(losses)
        self.weights = {"gc": 1.0, "lrc": w_lrc, "gr": w_gr, "tight": w_tight}
        self.gc = GlobalContrastive()
        self.lrc = LexemeRegionContrastive()
        self.gr = GlobalRegionAlignment(gr_variant)
        self.tight = RegionTightness()

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scale = out["scale"]
        terms: dict[str, torch.Tensor] = {}
        if "gc" in self.enabled:
            terms |= self.gc(out["image"], out["text"], scale)
        if "lrc" in self.enabled:
            terms |= self.lrc(out["regions"], out["lexemes"], out["lexeme_ids"], scale)
        if "gr" in self.enabled:
            terms |= self.gr(out["regions"], out["owner"], out["text"], out.get("crops"), scale)
        if "tight" in self.enabled:
            terms |= self.tight(out["regions"], out["distractors"], out["lexemes"], scale)
        terms["total"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms
