"""Benchmark tables of the ranking beyond its home ground: rivals, calibration, transfer to
another model and world, counting and negation (see gen_benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gen_records import (
    NONE,
    RESULTS,
    Record,
    at_defaults,
    get,
    latest,
    ms,
    named,
    number,
    of_bundled,
    pct,
    records,
    table,
)

from harmosearch.config import SHAPES_MODEL
from harmosearch.search.calibration import CONFIDENT_QUANTILE


def rivals() -> str:
    """The bundled model on the flat test scenes with the everyday rivals (the default) and with the
    phrases it was trained on, which are the test scenes' own labels (rivals.jsonl; the latest
    record of each, at today's defaults but for search.vocabulary)."""

    def fits(vocabulary: str) -> Callable[[Record], bool]:
        return lambda r: (
            of_bundled(r)
            and r.config.get("search.vocabulary") == vocabulary
            and at_defaults(r, frozenset({"search.vocabulary"}))
        )

    rows = []
    for label, vocabulary in (("everyday (the default)", "everyday"), ("trained: the 48 test phrases", "trained")):
        found = latest("rivals.jsonl", fits(vocabulary))
        modes = get(found, "tasks", "retrieval", "modes") or {}
        rows.append(
            [
                label,
                pct(get(found, "tasks", "search", "P@5")),
                pct(get(found, "tasks", "grounding", "accuracy")),
                *(pct((modes.get(m) or {}).get("t2i_R@1")) for m in ("global", "fused", "relations")),
                named(found),
            ]
        )
    header = [f"rivals, {SHAPES_MODEL}, flat test scenes", "phrase P@5", "grounding", "R@1 global", "fused"]
    header += ["relations", "record"]
    return table(header, rows)


def calibration() -> str:
    """Per model and world, the latest test record of benchmarks/calibration.py with the null bank
    of phrases that name no thing, on a library of scenes plus photographs."""
    rows = []

    def reported(r: Record) -> bool:  # a test record at the default cut (not a validation trial)
        return r.data.get("split", "test") == "test" and r.data.get("quantile") == CONFIDENT_QUANTILE

    def same(r: Record, f: Record) -> bool:
        return reported(r) and (r.data.get("model"), r.data.get("world")) == (f.data["model"], f.data["world"])

    for found in records("calibration.jsonl"):
        if "world" not in found.data or not reported(found):
            continue  # the earlier bank of everyday things, on scenes alone; validation records
        latest_one = latest("calibration.jsonl", lambda r, f=found: same(r, f))
        if latest_one is not found:
            continue
        test, everyday = found.data["test"], found.data.get("test_with_a_bank_of_everyday_things") or {}
        rows.append(
            [
                f"{found.data['model']}, {found.data['world']} world",
                alphas_of(found),
                pct(test.get("present_called_confident")),
                pct(test.get("present_top_right_called_confident")),
                pct(test.get("absent_thing_called_weak")),
                pct(test.get("absent_colour_called_weak")),
                pct(test.get("absent_coloured_thing_called_weak")),
                pct(test.get("absent_object_called_weak")),
                f"{pct(everyday.get('present_called_confident'))} / {pct(everyday.get('absent_thing_called_weak'))}",
                found.name,
            ]
        )
    header = [
        "model, test scenes + photographs",
        "alpha its queries fuse at (region trust)",
        "present, called confident",
        "present, top result right, called confident",
        "absent thing, called weak",
        "absent colour, called weak",
        "absent thing in a present colour, called weak",
        "absent pair of present colour and shape, called weak",
        "with a null bank of everyday things: present confident / absent thing weak",
        "record",
    ]
    return table(header, rows) if rows else "not measured at today's defaults"


def alphas_of(found: Record) -> str:
    """The alphas a calibration record's queries were measured at, with the index's region trust."""
    alphas = found.data.get("alphas_used")
    if alphas is None:
        return f"{found.data.get('alpha')} for every query"
    trust = found.data.get("region_trust")
    return ", ".join(f"{a:.2f}" for a in alphas) + ("" if trust is None else f" ({trust:.2f})")


def transfer() -> str:
    """Each model x world of benchmarks/transfer.py, from its latest record at today's defaults."""
    found = [r for r in records("transfer.jsonl") if at_defaults(r)] if (RESULTS / "transfer.jsonl").is_file() else []
    cells: dict[tuple[str, str], tuple[Record, dict[str, Any]]] = {}
    for r in sorted(found, key=lambda r: r.data["time"]):
        for row in r.data["rows"]:
            cells[(row["model"], row["world"])] = (r, row)
    rows = []
    for (model, world), (_, row) in sorted(cells.items()):
        trust = (row.get("region_trust") or {}).get("trust")
        t2i, p5 = row["t2i_R@1"], row["P@5"]
        rows.append(
            [
                f"{model}, {world}",
                f"{number(trust, 2)} ({number(row['region_weight'], 2)})",
                *(pct(t2i[k]) for k in ("global", "fused", "fused_fully_weighed")),
                *(pct(p5[k]) for k in ("global", "fused", "fused_fully_weighed")),
                pct(row["grounding"]),
            ]
        )
    header = ["model, world", "region trust (weight)", "t2i R@1 global", "fused", "fused before trust"]
    header += ["phrase P@5 global", "fused", "fused before trust", "grounding"]
    n = sorted({r.data["n"] for r, _ in cells.values()})
    note = (
        f"\n\nRecords: {named(*(r for r, _ in cells.values()))}; test split, {', '.join(map(str, n))} scenes per world."
    )
    return table(header, rows) + note if rows else "No record yet: run `python benchmarks/transfer.py`."


# The tables a page asks for with a line `<!-- generated: NAME -->` (docs/hooks.py).
# The settings benchmarks/configs/counting_high.toml changes for an index of --detail high.
COUNTING_HIGH = frozenset(
    {"search.count_quantile", "search.count_overlap", "search.count_rival_share", "search.count_centres"}
)


COUNTING_ROWS = (
    ("flat", "normal", "default"),
    ("flat", "high", "`--detail high` (`counting_high.toml`)"),
    ("photo", "normal", "photo world, default"),
)


COUNTING_RANKINGS = (
    ("counting and negation", "counting", "negation"),
    ("fused, without the count and negation terms", "no term", "no term"),
    ("global only (`--global-only`)", "global", "global"),
    ("plain CLIP on the whole text", None, "whole text"),
)


def counting_record(world: str, detail: str) -> Record | None:
    """The latest test record of the counting and negation tasks with the bundled model, in this
    world at this detail, at today's defaults (at high detail, counting_high.toml's aside)."""

    def fits(r: Record) -> bool:
        d, config = r.data, r.config
        return (
            d.get("split") == "test"
            and (d.get("world") or "flat") == world
            and of_bundled(r)
            and {"counting", "negation"} <= set(d.get("tasks", {}))
            and config.get("regions.detail") == detail
            and not config.get("search.refine")
            and at_defaults(r, COUNTING_HIGH if detail == "high" else frozenset())
        )

    return latest("counting.jsonl", fits)


def counting() -> str:
    """Counting and negation on their own test scenes, each ranking of the bench side by side."""
    rows = []
    for world, detail, label in COUNTING_ROWS:
        found = counting_record(world, detail)
        for ranking, counted, negated in COUNTING_RANKINGS:
            count = (get(found, "tasks", "counting", "modes", counted) or {}) if counted else {}
            negation = get(found, "tasks", "negation", "modes", negated) or {}
            mae = count.get("count_mae_5-6")
            cells = [pct(count.get(k)) for k in ("exact_P@5_1-4", "exact_P@5_5-6", "count_accuracy_1-4")]
            cells += [NONE if mae is None else f"{mae:.2f}", pct(negation.get("pairs_won")), pct(negation.get("P@5"))]
            rows.append([f"{label}: {ranking}", *cells, named(found)])
    header = [
        "scenes, ranking",
        "exact-count P@5, 1–4",
        "5–6",
        "count accuracy, 1–4",
        "mean abs. count error, 5–6",
        "negation pairs won",
        "negation P@5",
        "record",
    ]
    return table(header, rows)


def counting_cost() -> str:
    """What a count or a negation adds to a warm query at 1M regions (benchmarks/counting_cost.py)."""
    found = latest("counting_cost.jsonl")
    rows = []
    for query, ratio in (get(found, "over_plain") or {}).items():
        rows.append(
            [f"{query!r}", ms((get(found, "median_ms") or {}).get(query, 0) / 1000), f"{ratio:.2f}x", named(found)]
        )
    return table(["query", "median (ms)", "over the same query without the count or negation", "record"], rows)
