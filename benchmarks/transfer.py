"""Does the ranking transfer to a model and a world it was not tuned on? (issue #30)

    python benchmarks/transfer.py [--n 300] [--models harmo-mix,harmo-tiny,harmo-tiny-gc] [--worlds flat,photo]

For each model (harmo-mix, the bundled model, trained on both worlds; harmo-tiny, trained on flat
scenes only; harmo-tiny-gc, the global-loss-only stand-in for a stock CLIP whose
regions were never trained) and each world (flat scenes; shapes drawn over photographs), on the
test split: text->image R@1 of the captions and phrase-search P@5, each ranked by the global
vector alone (--global-only) and fused as `harmosearch query` fuses (relations ignored), with the
regions weighed by the region trust measured on the scenes' own images, and, for comparison,
fused with the regions fully weighed (before trust); grounding; the measured trust and the weight
it gives the regions. Every setting is the default: nothing is re-tuned per row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench import run_bench
from harmosearch.config import load_config
from harmosearch.model.encoder import load_encoder

FULLY_WEIGHED = {"search.trust_low": 0.0, "search.trust_high": 0.0}  # regions weighed as before trust
GLOBAL_ONLY = {"search.alpha": 1.0, "search.phrase_alpha": 1.0}  # the fused formula at alpha 1 is g


def cell(model: str, world: str, n: int) -> dict[str, Any]:
    """One model x world: the figures of the module docstring."""
    started = time.perf_counter()
    base = load_config(overrides={"encoder.model": model})
    encoder = load_encoder(base)

    def bench(overrides: dict[str, Any], tasks: tuple[str, ...], mode: str = "fused") -> dict[str, Any]:
        config = load_config(overrides={"encoder.model": model, **overrides})
        common = {"split": "test", "n": n, "world": world, "encoder": encoder, "mode": mode}
        return run_bench(config, "synthetic", tasks, **common)["tasks"]

    trusted = bench({}, ("retrieval", "search", "grounding"))
    before = bench(FULLY_WEIGHED, ("retrieval", "search"))
    plain = bench(GLOBAL_ONLY, ("search",))
    global_retrieval = bench({}, ("retrieval",), mode="global")
    return {
        "model": model,
        "world": world,
        "dataset": trusted["search"]["dataset"],
        "region_trust": trusted["search"]["region_trust"],
        "region_weight": trusted["search"]["region_weight"],
        "t2i_R@1": {
            "global": global_retrieval["retrieval"]["modes"]["global"]["t2i_R@1"],
            "fused": trusted["retrieval"]["modes"]["fused"]["t2i_R@1"],
            "fused_fully_weighed": before["retrieval"]["modes"]["fused"]["t2i_R@1"],
        },
        "P@5": {
            "global": plain["search"]["P@5"],
            "fused": trusted["search"]["P@5"],
            "fused_fully_weighed": before["search"]["P@5"],
        },
        "grounding": trusted["grounding"]["accuracy"],
        "build": build_cost(base, encoder, scenes_folder(base, n, world)),
        "seconds": time.perf_counter() - started,
    }


def scenes_folder(config: Any, n: int, world: str) -> Path:
    """The folder of the test scenes the benchmarks above read."""
    from harmosearch.bench.datasets import load_bench_set

    return (
        load_bench_set("synthetic", None, config.paths.cache_dir, n, "search", "test", "mixed", world).images[0].parent
    )


def build_cost(config: Any, encoder: Any, folder: Path) -> dict[str, float]:
    """What measuring the trust costs in a build: `harmosearch index` of the scenes' folder, its
    seconds and the trust measurement's (as the manifest records them)."""
    import tempfile

    from harmosearch.indexing import build_index
    from harmosearch.store import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        report = build_index(folder, Path(tmp) / "index", config, encoder=encoder)
        trust = read_manifest(Path(tmp) / "index")["region_trust"] or {}
    return {"images": report.images, "seconds": report.seconds, "trust_seconds": trust.get("seconds", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="test scenes per world")
    parser.add_argument("--models", default="harmo-mix,harmo-tiny,harmo-tiny-gc")
    parser.add_argument("--worlds", default="flat,photo")
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        for world in args.worlds.split(","):
            row = cell(model, world, args.n)
            rows.append(row)
            figures = "; ".join(
                f"{name} global {f['global']:.3f} fused {f['fused']:.3f} (fully weighed {f['fused_fully_weighed']:.3f})"
                for name, f in (("t2i R@1", row["t2i_R@1"]), ("P@5", row["P@5"]))
            )
            trust = row["region_trust"]["trust"] if row["region_trust"] else float("nan")
            print(
                f"{model} {world}: trust {trust:.2f} (weight {row['region_weight']:.2f}); {figures}; "
                f"grounding {row['grounding']:.3f}; {row['seconds']:.0f} s",
                flush=True,
            )
    config = load_config().to_json()  # the defaults every row ran at (each with its own model)
    path = append_result("transfer", {"split": "test", "n": args.n, "rows": rows, "config": config})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
