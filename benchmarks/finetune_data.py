"""Does fine-tuning on small and large objects teach harmo-tiny what phrase search needs?

    python benchmarks/finetune_data.py [--scenes 4000] [--steps 100] [--work runs/finetune_data]

Two fine-tunes of the bundled harmo-tiny that differ only in their scenes (GC + LRC + GR +
TIGHT, batch 128, lr 1e-4 after 10 warmup steps, seed 0):
- default: scenes of the default object set (seed 1003), the kind harmo-tiny was trained on;
- small+large: half `--objects small` (seed 1001) and half `--objects large` (seed 1002).
Each is benchmarked on validation: phrase search on small, large and default scenes (the indexed
ranking and `--refine`), and whole-caption retrieval and grounding on default scenes. The
training seeds differ from every bench seed. Appended to benchmarks/results/finetune_data.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import append_result

from harmosearch.bench import run_bench
from harmosearch.config import SynthConfig, load_config
from harmosearch.synth import generate
from harmosearch.train.loop import train

TRAIN = {
    "encoder.model": "harmo-tiny",
    "train.losses": "gc,lrc,gr,tight",
    "train.batch_size": 128,
    "train.lr": 1e-4,
    "train.warmup_steps": 10,
    "train.seed": 0,
    "train.epochs": 100,
    "train.checkpoint_every": 10_000,
}


def scenes(work: Path, name: str, n: int, seed: int, objects: str) -> Path:
    folder = work / f"scenes-{name}"
    if not (folder / "annotations.json").is_file():
        generate(folder, SynthConfig(n=n, seed=seed, objects=objects), workers=2)
    return folder


def merge(out: Path, parts: list[Path]) -> Path:
    """One scene folder holding every scene of `parts`, renumbered (images copied)."""
    if (out / "annotations.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    merged: dict[str, Any] = {"info": {"merged_from": [p.name for p in parts]}, "images": []}
    for key in ("annotations", "captions", "relations"):
        merged[key] = []
    for part in parts:
        data = json.loads((part / "annotations.json").read_text())
        merged["categories"] = data["categories"]
        ids = {}
        for image in data["images"]:
            ids[image["id"]] = len(merged["images"])
            name = f"{ids[image['id']]:06d}.png"
            shutil.copyfile(part / "images" / image["file_name"], out / "images" / name)
            merged["images"].append({**image, "id": ids[image["id"]], "file_name": name})
        for key in ("annotations", "captions"):
            for row in data[key]:
                merged[key].append({**row, "id": len(merged[key]), "image_id": ids[row["image_id"]]})
        merged["relations"] += [{**row, "image_id": ids[row["image_id"]]} for row in data["relations"]]
    (out / "annotations.json").write_text(json.dumps(merged))
    return out


# The README's figures were measured before search.contrast, search.phrase_alpha and
# search.crop_weight existed: ranked as then.
RANKED_AS_THEN = {"search.contrast": 0.0, "search.phrase_alpha": 0.5, "search.crop_weight": 0.0}


def evaluate(model: Path) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for objects in ("small", "large", "mixed"):
        for refine in (False, True):
            config = load_config(overrides={**RANKED_AS_THEN, "encoder.model": str(model), "search.refine": refine})
            search = run_bench(config, "synthetic", ("search",), n=300, split="val", objects=objects)["tasks"]["search"]
            row[f"{objects}{'_refined' if refine else ''}"] = {"P@5": search["P@5"], "box@0.5": search["box@0.5"]}
    config = load_config(overrides={**RANKED_AS_THEN, "encoder.model": str(model)})
    tasks = run_bench(config, "synthetic", ("retrieval", "grounding"), n=300, split="val")["tasks"]
    row["t2i_R@1"] = {mode: v["t2i_R@1"] for mode, v in tasks["retrieval"]["modes"].items()}
    row["grounding"] = tasks["grounding"]["accuracy"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("runs/finetune_data"))
    args = parser.parse_args()
    half = args.scenes // 2
    data = {
        "default": scenes(args.work, "default", args.scenes, 1003, "mixed"),
        "small+large": merge(
            args.work / "scenes-small+large",
            [scenes(args.work, "small", half, 1001, "small"), scenes(args.work, "large", half, 1002, "large")],
        ),
    }
    rows: dict[str, Any] = {"harmo-tiny": evaluate(Path("harmo-tiny"))}
    for name, folder in data.items():
        started = time.perf_counter()
        config = load_config(overrides={**TRAIN, "train.max_steps": args.steps})
        result = train(config, folder, args.work / f"run-{name}", resume=False)
        rows[name] = {**evaluate(result.final), "train_seconds": round(time.perf_counter() - started, 1)}
        print(name, rows[name], flush=True)
    path = append_result("finetune_data", {"scenes": args.scenes, "steps": args.steps, "train": TRAIN, "rows": rows})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
