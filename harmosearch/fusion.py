"""How a query's scores become one ranking.

For a candidate image with global similarity g (global text vector vs global image vector) and,
for each of the query's m lexemes, its best region similarity r_1..r_m:

    fused = alpha * g + (1 - alpha) * mean(r_1..r_m)

A query without lexemes ranks by g alone. Each `--not` phrase is scored the same way (its
global and its best-region similarity) and subtracted:

    fused -= alpha * g_not + (1 - alpha) * r_not      (the largest over the --not phrases)
"""

from __future__ import annotations

import numpy as np


def fuse(global_scores: np.ndarray, lexeme_scores: np.ndarray, alpha: float) -> np.ndarray:
    """global_scores [C]; lexeme_scores [C, m] (m may be 0) -> fused [C]."""
    global_scores = np.asarray(global_scores, dtype=np.float32)
    lexeme_scores = np.asarray(lexeme_scores, dtype=np.float32).reshape(len(global_scores), -1)
    if lexeme_scores.shape[1] == 0:
        return global_scores.copy()
    return alpha * global_scores + (1 - alpha) * lexeme_scores.mean(axis=1)


def penalty(negative_global: np.ndarray, negative_region: np.ndarray, alpha: float) -> np.ndarray:
    """negative_global, negative_region [C, n] for n --not phrases -> the amount to subtract [C]."""
    negative_global = np.asarray(negative_global, dtype=np.float32)
    if negative_global.size == 0:
        return np.zeros(negative_global.shape[0], dtype=np.float32)
    combined = alpha * negative_global + (1 - alpha) * np.asarray(negative_region, dtype=np.float32)
    return combined.max(axis=1)
