"""What weighing lexemes against rival phrases (search.contrast) costs a query.

    python benchmarks/contrast_cost.py [--model harmo-tiny] [--regions 1000000] [--rounds 30]

Over an index of random region vectors in the model's space (benchmarks/search.py's, 48 regions
per image), warm `Index.search` of k = 10 for one-lexeme, two-lexeme and relation queries, in
interleaved rounds: without the contrast, with the model's own vocabulary ("trained";
harmo-tiny: 48 phrases), with the shipped everyday rivals (the default, ~1,500 phrases), and with
a vocabulary file of 4,096 made-up phrases (the most a file may hold). Reports the median time
per query and the paired ratio to the run without. The index bytes do not change: the contrast
is computed at query time over the candidates' regions (each image's WEIGHED_REGIONS best).
Appends to benchmarks/results/contrast_cost.jsonl.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, interleaved, paired_ratio
from search import random_index

from harmosearch.config import load_config
from harmosearch.model.encoder import load_encoder
from harmosearch.search import Index, contrast
from harmosearch.search.contrast import WEIGHED_REGIONS, vocabulary_phrases

QUERIES = ("red circle", "small blue star and a white ring", "yellow square above a green cross")
WORDS = ("red", "blue", "green", "small", "large", "striped", "wooden", "shiny", "old", "round")
THINGS = ("circle", "star", "ring", "cross", "cup", "bench", "umbrella", "dog", "car", "tree", "lamp", "boat")


def made_up_phrases(count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct phrases of one or two words before a thing."""
    phrases: dict[str, None] = {}
    while len(phrases) < count:
        words = rng.choice(WORDS, size=int(rng.integers(0, 3)), replace=False)
        phrases[" ".join([*words, str(rng.choice(THINGS)), f"no{len(phrases)}"])] = None
    return list(phrases)


EVERY = "everyday, every region"  # the contrast weighed on all of an image's regions, as before


def search(index: Index, query: str, name: str, settings: dict) -> None:
    """One query at the named settings; EVERY weighs every region of each candidate image."""
    contrast.WEIGHED_REGIONS = 1 << 30 if name == EVERY else WEIGHED_REGIONS
    try:
        index.search(query, k=10, settings=settings[name])
    finally:
        contrast.WEIGHED_REGIONS = WEIGHED_REGIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="harmo-tiny")
    parser.add_argument("--regions", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    config = load_config(overrides={"encoder.model": args.model, "encoder.device": "cpu"})
    encoder = load_encoder(config)
    work = Path(tempfile.mkdtemp(prefix="harmosearch-contrast-"))
    try:
        manifest, _ = random_index(work, args.regions, encoder, config, rng, 48)
        index = Index(work / "idx", config, encoder=encoder)
        settings = {
            "off": replace(config.search, contrast=0.0),
            "own": replace(config.search, contrast=0.1, vocabulary="trained"),
            "everyday": replace(config.search, contrast=0.1, vocabulary="everyday"),
        }
        for count in (4096,):
            path = work / f"vocabulary-{count}.txt"
            path.write_text("\n".join(made_up_phrases(count, rng)) + "\n", encoding="utf-8")
            settings[f"file {count}"] = replace(config.search, contrast=0.1, vocabulary=str(path))
        settings[EVERY] = settings["everyday"]
        for name in settings:  # warm: the vocabulary is embedded once per setting
            search(index, QUERIES[0], name, settings)
        names = list(settings)
        times: dict[str, list[float]] = {name: [] for name in names}
        for query in QUERIES:
            measured = interleaved([lambda n=n, q=query: search(index, q, n, settings) for n in names], args.rounds)
            for name, row in zip(names, measured, strict=True):
                times[name] += row
        vocabulary = len(encoder.vocabulary)
        record = {
            "model": args.model,
            "n_regions": (args.regions // 48) * 48,
            "index_types": manifest["index_types"],
            "own_vocabulary": vocabulary,
            "everyday_vocabulary": len(vocabulary_phrases("everyday", ())),
            "weighed_regions": WEIGHED_REGIONS,
            "median_ms": {n: statistics.median(times[n]) * 1000 for n in names},
            "over_off": {n: paired_ratio(times[n], times["off"]) for n in names},
        }
        for n in names:
            print(f"{n:>10}: {record['median_ms'][n]:7.1f} ms per query, {record['over_off'][n]:.2f}x without")
        print(f"appended to {append_result('contrast_cost', record)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
