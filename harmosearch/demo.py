"""`harmosearch demo`: synthetic scenes -> index with the bundled model -> compositional queries."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harmosearch.config import Config, shapes_model_unless_named

QUERIES = ("red circle", "small yellow star", "purple ring next to a black star")
DEMO_SEED = 2026  # not a training seed
# Twin images the demo adds to its scenes: the same two objects, places exchanged.
TWIN_PAIRS = 2


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def run_demo(
    folder: Path,
    config: Config,
    n: int = 120,
    queries: tuple[str, ...] = QUERIES,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[Any], Any]:
    """Returns (responses, index report); writes scenes, index and annotated results under folder.
    The bundled model indexes the scenes unless `config` names another."""
    from harmosearch.annotate import save_annotated
    from harmosearch.indexing import build_index
    from harmosearch.model.encoder import load_encoder
    from harmosearch.search import Index
    from harmosearch.synth import generate, generate_pairs

    config = shapes_model_unless_named(config)
    folder = Path(folder)
    scenes = folder / "scenes"
    if not (scenes / "annotations.json").is_file():
        drawn = 0

        def advance(k: int) -> None:
            nonlocal drawn
            drawn += k
            if progress:
                progress("drawing scenes", drawn, n)

        generate(scenes, replace(config.synth, n=n, seed=DEMO_SEED), workers=2, progress=advance)
    twins = scenes / "images" / "twins"
    if not (twins / "annotations.json").is_file():
        generate_pairs(twins, TWIN_PAIRS, DEMO_SEED, kinds=("relation",))
    queries = queries + twin_queries(twins)
    encoder = load_encoder(config)
    report = build_index(scenes / "images", folder / "index", config, encoder=encoder, rebuild=True, progress=progress)
    index = Index(folder / "index", config, encoder=encoder)
    responses = []
    for query in queries:
        response = index.search(query, k=5)
        save_annotated(response, folder / "results" / slug(query))
        responses.append(response)
    return responses, report


def twin_queries(twins: Path) -> tuple[str, ...]:
    """The caption of the first image of each twin pair: its twin holds the same two objects the
    other way round, so only the relation can put the right one first."""
    from harmosearch.bench.compositional import load_pairs

    return tuple(pair.captions[0] for pair in load_pairs(twins))


__all__ = ["QUERIES", "run_demo", "twin_queries"]
