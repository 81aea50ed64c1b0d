"""harmosearch bench: a model's retrieval, box classification, grounding, phrase search and
compositional figures, as tables, JSON or a line of a record file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from harmosearch.cli.core import interruptible, out, progress_bars, resolve
from harmosearch.cli.options import (
    DetailOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    RefineOption,
    RefineScaleOption,
    checked_path,
)
from harmosearch.config import shapes_model_unless_named
from harmosearch.folders import check_output_file


@interruptible
def bench(
    ctx: typer.Context,
    dataset: Annotated[
        str, typer.Option("--dataset", help="flickr30k, mscoco, synthetic, aro-relation, aro-attribution or a folder.")
    ] = "synthetic",
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task", help="retrieval, boxcls, grounding, search, compositional, counting, negation (repeatable)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where the dataset's files are.", callback=checked_path)
    ] = None,
    model: ModelOption = None,
    mode: Annotated[str, typer.Option("--mode", help="Retrieval ranking: global, fused, relations or all.")] = "all",
    n: Annotated[int, typer.Option("--n", help="Scenes for --dataset synthetic.")] = 500,
    split: Annotated[
        str, typer.Option("--split", help="Synthetic set: val (for choosing settings) or test (for reporting).")
    ] = "test",
    objects: Annotated[
        str, typer.Option("--objects", help="Synthetic scenes: mixed (default), small or large objects.")
    ] = "mixed",
    world: Annotated[
        str, typer.Option("--world", help="Synthetic scenes: flat (default) or photo (shapes on photographs).")
    ] = "flat",
    as_json: JsonOption = False,
    save_scores: Annotated[
        Path | None, typer.Option("--save-scores", help="Write score matrices (.npy) here.", callback=checked_path)
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option("--record", help="Append the result, with this command, to a JSONL file.", callback=checked_path),
    ] = None,
    refine: RefineOption = None,
    refine_scale: RefineScaleOption = None,
    detail: DetailOption = None,
    device: DeviceOption = None,
) -> None:
    """Benchmark a model: recall@K both ways, box classes, grounding, phrase search, pairs, counting, negation."""
    import json

    config = shapes_model_unless_named(
        resolve(
            ctx,
            **{
                "encoder.model": model,
                "encoder.device": device,
                "search.refine": refine,
                "search.refine_scale": refine_scale,
                "regions.detail": detail,
            },
        )
    )
    if record is not None:
        check_output_file(record, "--record")  # before the run, not after it
    from harmosearch.bench import append_record, run_bench

    with progress_bars() as progress:
        result = run_bench(
            config,
            dataset,
            tuple(task or ()),
            data_dir,
            mode,
            n,
            progress=progress,
            save_scores=save_scores,
            split=split,
            objects=objects,
            world=world,
        )
    if record is not None:
        append_record(record, result, " ".join(["harmosearch", *sys.argv[1:]]))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_bench(result)


BENCH_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "boxcls": (
        ("Top-1", "top1"),
        ("Top-5", "top5"),
        ("Top-1 per class", "top1_per_class"),
        ("Top-5 per class", "top5_per_class"),
    ),
    "grounding": (("accuracy (IoU ≥ 0.5)", "accuracy"), ("proposal ceiling", "proposal_ceiling")),
    "search": (("P@5", "P@5"), ("hit@5", "hit@5"), ("box IoU ≥ 0.5", "box@0.5")),
}
RECALLS = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10")


def _print_bench(result: dict[str, Any]) -> None:
    from rich.table import Table

    model = result["model"]["spec"]
    for task, numbers in result["tasks"].items():
        table = Table(title=f"{task} on {numbers['dataset']} with {model}", title_justify="left")
        if task == "compositional":
            _compositional_rows(table, numbers)
        elif task in ("counting", "negation"):
            _mode_rows(table, numbers["modes"])
        elif task == "retrieval":
            table.add_column("ranking")
            for key in RECALLS:
                table.add_column(key.replace("t2i_", "t→i ").replace("i2t_", "i→t "), justify="right")
            for mode, values in numbers["modes"].items():
                table.add_row(mode, *(f"{100 * values[k]:.1f}" if k in values else "" for k in RECALLS))
        else:
            columns = BENCH_COLUMNS[task]
            for title, _ in columns:
                table.add_column(title, justify="right")
            count = next(k for k in ("boxes", "phrases") if k in numbers)
            table.add_column(count, justify="right")
            table.add_row(*(f"{100 * numbers[key]:.1f}" for _, key in columns), str(numbers[count]))
        out.print(table)
    out.print(f"total {result['seconds']:.1f} s")


def _mode_rows(table: Any, modes: dict[str, dict[str, float]]) -> None:
    """One row per ranking, one column per figure: shares in percent, count errors as they are."""
    keys = list(dict.fromkeys(key for values in modes.values() for key in values))
    table.add_column("ranking")
    for key in keys:
        table.add_column(key.replace("_", " "), justify="right")
    for mode, values in modes.items():
        cells = [
            ("" if k not in values else f"{values[k]:.2f}" if "mae" in k else f"{100 * values[k]:.1f}") for k in keys
        ]
        table.add_row(mode, *cells)


# Figures of a compositional result that are not a ranking's (the index's measured trust).
COMPOSITIONAL_ASIDE = ("region_trust",)
COMPOSITIONAL_COLUMNS = {
    "pairs": (("caption wins", "caption_wins"), ("both captions", "image_score"), ("R@1 among pairs", "r1")),
    "aro": (("accuracy", "accuracy"), ("macro accuracy", "macro_accuracy")),
}


def _compositional_rows(table: Any, numbers: dict[str, Any]) -> None:
    """One row per ranking (and kind of twin pair): the share of captions that rank their own
    image above the twin, of pairs where both do, and recall@1 among all pair images; or ARO's
    accuracies."""
    modes = {k: v for k, v in numbers.items() if k not in COMPOSITIONAL_ASIDE and isinstance(v, dict)}
    aro = "accuracy" in next(iter(modes.values()))
    columns = COMPOSITIONAL_COLUMNS["aro" if aro else "pairs"]
    table.add_column("ranking")
    if not aro:
        table.add_column("pairs")
    for title, _ in columns:
        table.add_column(title, justify="right")
    for mode, values in modes.items():
        groups = {"": values} if aro else {pairs: v for pairs, v in values.items() if pairs != "all"}
        for pairs, figures in groups.items():
            cells = [f"{100 * figures[key]:.1f}" for _, key in columns]
            table.add_row(mode, *([] if aro else [pairs]), *cells)
