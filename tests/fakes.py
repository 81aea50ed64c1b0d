"""A fake deterministic encoder for ranking tests: every lexeme is a known unit vector."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from harmosearch.config import EncoderConfig
from harmosearch.model.encoder import EncoderIdentity, TextEncoding
from harmosearch.model.lexemes import parse

DIM = 64


def concept(text: str) -> np.ndarray:
    """A fixed unit vector per lexeme text (random but reproducible)."""
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


class FakeEncoder:
    def __init__(self) -> None:
        self.config = EncoderConfig(model="fake")
        self.identity = EncoderIdentity("fake", "fake-weights", "fake", DIM, 32, (4, 4))
        self.grid = (4, 4)
        self.image_size = 32
        self.vocabulary: tuple[str, ...] = ()  # a checkpoint's phrases (none: no contrast under "trained")
        self.temperature = 100.0

    def encode_queries(self, texts: list[str]) -> list[TextEncoding]:
        out = []
        for text in texts:
            parsed = parse(text)
            lexemes = np.stack([concept(t) for t in parsed.lexeme_texts]) if parsed.lexemes else np.zeros((0, DIM))
            g = unit(lexemes.sum(0)) if len(lexemes) else concept(text)
            out.append(TextEncoding(text, parsed, torch.from_numpy(g), torch.from_numpy(lexemes.astype(np.float32))))
        return out
