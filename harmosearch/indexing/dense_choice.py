"""`encoder.dense_mode = "auto"`: the dense map of a new index chosen by region trust.

Which dense map says what is where depends on the model: one whose regions were trained through
the value path wants it, a stock CLIP may want a training-free one (model.dense_modes). When an
index is built with auto, every candidate mode (dense_modes.AUTO_CANDIDATES) is measured as
region trust measures an index (regions.trust), on the same sample of the library's own images:
each sampled picture encoded once per mode, its regions proposed and pooled from that mode's
dense map at normal detail, each region's vector ranking its picture's boxes shown alone (the
global vectors, the same in every mode). The mode of highest trust is the index's, ties to
"value"; the manifest records it with every mode's trust, and an update keeps it, so an index
never mixes vectors made two ways. Queries encode texts only and need no mode.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from harmosearch.model.dense_modes import AUTO_CANDIDATES

CHOICE_KEY = "dense_mode_choice"  # the manifest's record of auto's choice
# Pictures auto measures each mode on: the index's own trust samples more (regions.trust's
# TRUST_IMAGES), but auto encodes every picture once per mode, and compares the modes on the same
# pictures, where the sample's noise moves every mode alike.
AUTO_PICTURES = 16


def pick_dense_mode(trusts: Mapping[str, float | None]) -> str:
    """The mode of highest trust; ties (and no trust at all) go to the earlier candidate, "value" first."""
    best, best_trust = "value", -math.inf
    for mode in AUTO_CANDIDATES:
        trust = trusts.get(mode)
        if trust is not None and trust > best_trust:
            best, best_trust = mode, trust
    return best


def sample_trust(
    encoder: Any, pictures: Sequence[tuple[Any, int, int]], regions: Any, phrases: np.ndarray | None = None
) -> float | None:
    """The region trust of `encoder`'s dense mode on decoded pictures (image, full width, full
    height): regions proposed from its dense map at normal detail, then regions.trust's
    measurement (through `phrases`, regions.trust.trust_phrases when None)."""
    from harmosearch.regions.proposals import image_regions
    from harmosearch.regions.trust import measure_trust

    if not pictures:
        return None
    global_vectors, dense = encoder.encode_images([p[0] for p in pictures])
    sizes = [(p[1], p[2]) for p in pictures]
    found = image_regions(
        dense, global_vectors, sizes, encoder.grid, encoder.image_size, encoder.config.resize, regions
    )
    counts = [len(r.boxes) for r in found]
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    vectors = np.concatenate([r.vectors.numpy() for r in found]).astype(np.float32)
    boxes = np.concatenate([r.boxes.numpy() for r in found]).astype(np.float32).reshape(-1, 4)
    trust = measure_trust(encoder, lambda i: pictures[i], len(pictures), vectors, boxes, start, phrases)
    return trust.trust if trust is not None else None


def choose_dense_mode(
    encoder: Any,
    pictures: Sequence[tuple[Any, int, int]],
    regions: Any,
    trust_of: Callable[[Any, Sequence[tuple[Any, int, int]], Any], float | None] | None = None,
) -> dict[str, Any]:
    """auto's choice on sampled pictures, as the manifest records it: {"chosen": mode, "trust":
    {mode: trust or None}}. trust_of(encoder in a mode, pictures, region settings) measures one
    mode (sample_trust unless given)."""
    if trust_of is None:
        from harmosearch.regions.trust import trust_phrases

        # the text side is the same in every mode: its phrases are embedded once
        trust_of = functools.partial(sample_trust, phrases=trust_phrases(encoder) if pictures else None)
    trusts = {mode: trust_of(encoder.with_dense_mode(mode), pictures, regions) for mode in AUTO_CANDIDATES}
    return {"chosen": pick_dense_mode(trusts), "trust": trusts, "images": len(pictures)}


def sampled_pictures(entries: Sequence[Any]) -> list[tuple[Any, int, int]]:
    """The still photos among `entries` (media.scan's) that region trust would sample, decoded."""
    from harmosearch.regions.trust import sample_images
    from harmosearch.search.pictures import decode

    stills = [e for e in entries if getattr(e, "kind", "still") == "still"]
    pictures = []
    for i in sample_images(len(stills), AUTO_PICTURES):
        try:
            pictures.append(decode(stills[int(i)].absolute, float("nan")))
        except (OSError, ValueError):
            continue
    return pictures
