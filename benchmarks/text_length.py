"""What cutting a text's padding saves: query and vocabulary encoding at the full context
length against the cut one, on each CPU path, in one run.

    python benchmarks/text_length.py [--model ViT-B-16:random] [--phrases 256] [--rounds 3]

The text tower is causal: a token reads no later one, so the padding after a batch's longest
text changes no feature a query reads (TextParts.without_padding; the ONNX path runs the graph
of the shortest of runtimes.TEXT_LENGTHS that holds the batch). Each path (fp32 through torch,
int8 through ONNX Runtime when it is installed) encodes, in rounds that alternate whole and cut:
a query alone (`encode_queries`, the median of --queries runs), the calibration's bank of
unrelated queries (search.calibration.NULL_QUERIES, once per model and machine) and the first
--phrases of search.vocabulary in batches of 256 as `embed_vocabulary` does (a fresh index's
first cost).
"Whole" runs the same code with the cut turned off. Fidelity: the largest difference and the
smallest cosine between whole and cut vectors (global and lexeme). Appended to
benchmarks/results/text_length.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result, interleaved, paired_ratio

QUERY = "red umbrella near a bench"


@contextlib.contextmanager
def whole_length(on: bool) -> Iterator[None]:
    """With `on`, texts run at the full context length (the padding kept) on every path."""
    from harmosearch.model import runtimes
    from harmosearch.model.clip_adapter import TextParts

    cut, lengths = TextParts.without_padding, runtimes.TEXT_LENGTHS
    if on:
        TextParts.without_padding = lambda self, tokens: tokens  # type: ignore[method-assign]
        runtimes.TEXT_LENGTHS = ()
    try:
        yield
    finally:
        TextParts.without_padding, runtimes.TEXT_LENGTHS = cut, lengths  # type: ignore[method-assign]


def vectors(encoder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Global and lexeme vectors of `texts`, in batches of 256 as the vocabulary is embedded."""
    glob, lex = [], []
    for start in range(0, len(texts), 256):
        for e in encoder.encode_queries(texts[start : start + 256]):
            glob.append(e.global_vector.numpy())
            lex.extend(e.lexeme_vectors.numpy())
    return np.stack(glob), np.stack(lex)


def measure(encoder, phrases: list[str], rounds: int, queries: int) -> dict:
    def run(whole: bool, texts: list[str]):
        with whole_length(whole):
            return vectors(encoder, texts)

    def query_p50(whole: bool) -> float:
        times = []
        with whole_length(whole):
            for _ in range(queries):
                start = time.perf_counter()
                encoder.encode_queries([QUERY])
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    from harmosearch.search.calibration import NULL_QUERIES

    bank = list(NULL_QUERIES)
    run(True, phrases[:8]), run(False, phrases[:8]), run(True, bank), run(False, bank)  # graphs exported, warm
    whole_s, cut_s = interleaved([lambda: run(True, phrases), lambda: run(False, phrases)], rounds)
    bank_whole, bank_cut = interleaved([lambda: run(True, bank), lambda: run(False, bank)], rounds)
    q_whole = [query_p50(True) for _ in range(rounds)]
    q_cut = [query_p50(False) for _ in range(rounds)]
    (gw, lw), (gc, lc) = run(True, phrases), run(False, phrases)

    def fidelity(a: np.ndarray, b: np.ndarray) -> dict:
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        return {"max_abs_diff": float(np.abs(a - b).max()), "min_cosine": float(cos.min())}

    return {
        "made_with": encoder.identity.made_with,
        "context_length": encoder.context_length,
        "phrases": len(phrases),
        "vocabulary_seconds": {"whole": min(whole_s), "cut": min(cut_s)},
        "vocabulary_speedup": round(paired_ratio(whole_s, cut_s), 2),
        "calibration_bank": {"texts": len(bank), "whole_seconds": min(bank_whole), "cut_seconds": min(bank_cut)},
        "calibration_bank_speedup": round(paired_ratio(bank_whole, bank_cut), 2),
        "query_p50_ms": {"whole": round(1000 * min(q_whole), 2), "cut": round(1000 * min(q_cut), 2)},
        "query_speedup": round(paired_ratio(q_whole, q_cut), 2),
        "fidelity": {"global": fidelity(gw, gc), "lexemes": fidelity(lw, lc)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16:random")
    parser.add_argument("--phrases", type=int, default=256)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from harmosearch.config import load_config
    from harmosearch.model.encoder import load_encoder
    from harmosearch.search.contrast import vocabulary_phrases

    paths = {"fp32 (torch)": {"encoder.precision": "fp32"}}
    try:
        import onnxruntime  # noqa: F401

        paths["int8 (onnxruntime)"] = {"encoder.precision": "int8", "encoder.runtime": "onnxruntime"}
    except ImportError:
        pass
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, overrides in paths.items():
            config = load_config(
                overrides={"encoder.model": args.model, "encoder.device": "cpu", "paths.cache": cache, **overrides}
            )
            encoder = load_encoder(config)
            phrases = vocabulary_phrases(config.search.vocabulary, encoder.vocabulary)[: args.phrases]
            results[name] = measure(encoder, phrases, args.rounds, args.queries)
            print(name, results[name], flush=True)
    append_result("text_length", {"model": args.model, "rounds": args.rounds, "paths": results})


if __name__ == "__main__":
    main()
