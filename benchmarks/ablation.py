"""The paper's claim in miniature: GC only vs GC+LRC vs GC+GR vs GC+LRC+GR.

    python benchmarks/ablation.py [--steps 250] [--batch 64] [--seed 0]

Every variant starts from the same random harmo-tiny-vit weights (seed 0) and trains for the
same number of steps on the same synthetic scenes (seed 1000, the bundled model's training set,
drawn if missing), then is scored on 500 held-out scenes (`--split`: test, seed 8675309, by default; val, seed
424242, the set the variants were chosen on): box classification
Top-1 (ground-truth boxes, prompt-ensembled class names), text-to-image R@1 (global ranking,
as in the paper; the fused ranking is reported beside it) and phrase search (every colour-shape
phrase as a query: the share of the top 5 holding it, and whether the box shown is on it).
Results are appended to benchmarks/results/ablation.jsonl and printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench import run_bench
from harmosearch.config import SynthConfig, load_config
from harmosearch.synth import generate
from harmosearch.train.loop import train

VARIANTS = {  # name -> (losses, dense_mode, TIGHT's off-object boxes)
    "GC only": ("gc", "value", ""),
    "GC + LRC": ("gc,lrc", "value", ""),
    "GC + GR": ("gc,gr", "value", ""),
    "GC + LRC + GR (HarmoCLIP)": ("gc,lrc,gr", "value", ""),
    "GC + LRC + GR, plain last block": ("gc,lrc,gr", "plain", ""),
    "GC + LRC + GR + TIGHT (loose boxes)": ("gc,lrc,gr,tight", "value", "loose"),
    "GC + LRC + GR + TIGHT (loose, part and shifted boxes)": ("gc,lrc,gr,tight", "value", "loose,part,shift"),
}


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """Train VARIANTS[name] from random weights for args.steps and bench it."""
    losses, dense_mode, distractors = VARIANTS[name]
    started = time.perf_counter()
    config = load_config(
        overrides={
            "encoder.model": "harmo-tiny-vit:random",
            "encoder.dense_mode": dense_mode,
            "train.losses": losses,
            "train.max_steps": args.steps,
            "train.epochs": 100,
            "train.batch_size": args.batch,
            "train.lr": 1e-3,
            "train.warmup_steps": 50,
            "train.seed": args.seed,
            "train.checkpoint_every": 10_000,
            **({"train.distractors": distractors} if distractors else {}),
        }
    )
    run = args.work / "-".join(part.replace(",", "-") for part in (losses, dense_mode, distractors) if part)
    result = train(config, args.scenes, run, resume=False)
    train_s = time.perf_counter() - started
    # Ranked as when the README's ablation tables were made, before search.window_penalty,
    # search.contrast and search.phrase_alpha existed.
    eval_config = load_config(
        overrides={
            "encoder.model": str(result.final),
            "search.window_penalty": 0.0,
            "search.contrast": 0.0,
            "search.phrase_alpha": 0.5,
        }
    )
    scores = run_bench(
        eval_config, "synthetic", ("boxcls", "retrieval", "search"), n=args.eval_n, mode="all", split=args.split
    )
    box = scores["tasks"]["boxcls"]
    ret = scores["tasks"]["retrieval"]["modes"]
    search = scores["tasks"]["search"]
    return {
        "losses": losses,
        "dense_mode": dense_mode,
        "boxcls_top1": box["top1"],
        "boxcls_top1_per_class": box["top1_per_class"],
        "t2i_R@1": ret["global"]["t2i_R@1"],
        "i2t_R@1": ret["global"]["i2t_R@1"],
        "t2i_R@1_fused": ret["fused"]["t2i_R@1"],
        "search_P@5": search["P@5"],
        "search_box@0.5": search["box@0.5"],
        "train_seconds": round(train_s, 1),
    }


def print_table(rows: dict[str, dict]) -> None:
    print()
    print(
        "| variant | box cls Top-1 | box cls Top-1 per class | text→image R@1 | image→text R@1 "
        "| text→image R@1 fused | phrase search P@5 | its box IoU ≥ 0.5 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {100 * r['boxcls_top1']:.1f} | {100 * r['boxcls_top1_per_class']:.1f} | "
            f"{100 * r['t2i_R@1']:.1f} | {100 * r['i2t_R@1']:.1f} | {100 * r['t2i_R@1_fused']:.1f} | "
            f"{100 * r['search_P@5']:.1f} | {100 * r['search_box@0.5']:.1f} |"
        )
    if "GC only" in rows and "GC + LRC + GR (HarmoCLIP)" in rows:
        base, full = rows["GC only"], rows["GC + LRC + GR (HarmoCLIP)"]
        print(
            f"\nbox cls Top-1: {100 * (full['boxcls_top1'] - base['boxcls_top1']):+.1f} points (goal >= +3); "
            f"text→image R@1: {100 * (full['t2i_R@1'] - base['t2i_R@1']):+.1f} points (goal >= -1)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--scenes", type=Path, default=Path("runs/bundled/scenes"))
    parser.add_argument("--eval-n", type=int, default=500)
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--variants", default="", help="names from VARIANTS separated by ';' (default: all)")
    args = parser.parse_args()
    if not (args.scenes / "annotations.json").is_file():
        generate(args.scenes, SynthConfig(n=16_000, seed=1000), workers=2)
    rows = {}
    chosen = [v.strip() for v in args.variants.split(";")] if args.variants else list(VARIANTS)
    for name in chosen:
        rows[name] = run_variant(name, args)
        print(name, rows[name], flush=True)
    print_table(rows)
    append_result(
        "ablation",
        {
            "steps": args.steps,
            "batch": args.batch,
            "seed": args.seed,
            "eval_n": args.eval_n,
            "split": args.split,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
