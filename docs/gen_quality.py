"""Benchmark tables of what search finds: the headline, retrieval, regions, relations, objects
by size, the photo world, the ablation, near-duplicates and proposals (see gen_benchmarks)."""

from __future__ import annotations

import ast
from pathlib import Path

from gen_records import (
    COUNTING_ONLY,
    RESULTS,
    ROOT,
    Record,
    at_defaults,
    bench,
    captions,
    get,
    latest,
    named,
    number,
    of_bundled,
    pct,
    records,
    table,
)

from harmosearch.config import SHAPES_MODEL

DETAILS = (("default", "normal", False), ("`--detail high`", "high", False), ("`--detail high --refine`", "high", True))


def detail_records(detail: str, refine: bool) -> dict[str, Record | None]:
    """The records of the headline's figures at one detail: the default set's phrase search,
    small objects, grounding and captions."""
    return {
        "search": bench("bench.jsonl", "search", detail=detail, refine=refine, n=500)
        or bench("small_objects.jsonl", "search", detail=detail, refine=refine, n=500),
        "small": bench("small_objects.jsonl", "search", "small", detail, refine),
        "grounding": bench("bench.jsonl", "grounding", detail=detail, refine=refine, n=500),
        "captions": captions(detail, refine),
    }


def detail_figures(detail: str, refine: bool = False) -> dict[str, str]:
    """The headline's figures at one detail, as shown."""
    r = detail_records(detail, refine)
    return {
        "P@5": pct(get(r["search"], "tasks", "search", "P@5")),
        "small P@5": pct(get(r["small"], "tasks", "search", "P@5")),
        "grounding": pct(get(r["grounding"], "tasks", "grounding", "accuracy")),
        "R@1": pct(get(r["captions"], "tasks", "retrieval", "modes", "relations", "t2i_R@1")),
    }


def headline() -> str:
    """The README's one table: the bundled model on unseen synthetic test scenes."""
    rows = []
    for label, detail, refine in DETAILS:
        r, f = detail_records(detail, refine), detail_figures(detail, refine)
        named_records = named(r["search"], r["grounding"], r["captions"], r["small"])
        rows.append([label, f["P@5"], f["small P@5"], f["grounding"], f["R@1"], named_records])
    header = [
        f"{SHAPES_MODEL}, unseen synthetic test scenes",
        "phrase search P@5",
        "small objects P@5",
        "box fits (grounding)",
        "caption search R@1",
        "records",
    ]
    return table(header, rows)


def retrieval() -> str:
    rows = []
    for label, detail, _ in DETAILS[:2]:
        found = captions(detail)
        for mode, ranking in (("global", "global (plain CLIP)"), ("fused", "fused"), ("relations", "relation-aware")):
            modes = get(found, "tasks", "retrieval", "modes", mode) or {}
            keys = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10")
            rows.append([f"{ranking}, {label}", *(pct(modes.get(k)) for k in keys), named(found)])
    header = ["ranking, detail", "text→image R@1", "R@5", "R@10", "image→text R@1", "R@5", "R@10", "record"]
    return table(header, rows)


def regions() -> str:
    rows = []
    for label, detail, refine in DETAILS:
        found = bench("bench.jsonl", "boxcls", detail=detail, refine=refine, n=500)
        search = bench("bench.jsonl", "search", detail=detail, refine=refine, n=500) or bench(
            "small_objects.jsonl", "search", detail=detail, refine=refine, n=500
        )
        tasks = get(found, "tasks") or {}
        rows.append(
            [
                label,
                pct(get(found, "tasks", "boxcls", "top1")),
                pct(get(found, "tasks", "boxcls", "top1_per_class")),
                pct(get(found, "tasks", "grounding", "accuracy")),
                pct(get(found, "tasks", "grounding", "proposal_ceiling")),
                pct(get(search, "tasks", "search", "P@5")),
                pct(get(search, "tasks", "search", "hit@5")),
                pct(get(search, "tasks", "search", "box@0.5")),
                named(found if tasks else None, search),
            ]
        )
    header = [
        f"{SHAPES_MODEL}, 500 test scenes",
        "box classification top-1",
        "per class",
        "grounding",
        "proposal ceiling",
        "phrase search P@5",
        "hit@5",
        "box IoU ≥ 0.5",
        "records",
    ]
    return table(header, rows)


def compositional() -> str:
    rows = []
    for label, detail, _ in DETAILS[:2]:
        found = bench("bench.jsonl", "compositional", detail=detail)
        rankings = ("global", "fused", "relations") if detail == "normal" else ("relations",)
        for ranking in rankings:
            pairs = get(found, "tasks", "compositional", ranking) or {}
            cells = [pct((pairs.get(kind) or {}).get(k)) for kind in ("relation", "attribute") for k in COMPOSED]
            rows.append([f"{ranking}, {label}", *cells, named(found)])
    header = [
        "ranking, detail",
        "relation pairs: caption wins",
        "both captions win",
        "R@1 among pair images",
        "attribute pairs: caption wins",
        "both captions win",
        "R@1 among pair images",
        "record",
    ]
    return table(header, rows)


COMPOSED = ("caption_wins", "image_score", "r1")


def objects() -> str:
    rows = []
    for label, detail, refine in DETAILS:
        for size in ("small", "large"):
            found = bench("small_objects.jsonl", "search", size, detail, refine)
            grounding = get(found, "tasks", "grounding") or {}
            rows.append(
                [
                    f"{size}, {label}",
                    pct(get(found, "tasks", "search", "P@5")),
                    pct(get(found, "tasks", "search", "box@0.5")),
                    pct(grounding.get("accuracy")),
                    pct(grounding.get("proposal_ceiling")),
                    pct(get(found, "tasks", "boxcls", "top1")),
                    named(found),
                ]
            )
    header = ["objects, detail", "phrase search P@5", "box IoU ≥ 0.5", "grounding", "proposal ceiling", "box cls"]
    header.append("record")
    return table(header, rows)


def fresh() -> str:
    rows = []
    for r in sorted(records("small_objects_fresh.jsonl"), key=lambda r: r.data["time"]):
        size = Path(r.data["dataset"]).name
        refine = "`--refine`" if r.config.get("search.refine") else "no `--refine`"
        detail = f"`--detail {r.config.get('regions.detail')}`"
        rows.append(
            [
                f"{size}, {detail}, {refine}",
                pct(get(r, "tasks", "search", "P@5")),
                pct(get(r, "tasks", "grounding", "accuracy")),
                "yes" if at_defaults(r) else "no",
                r.name,
            ]
        )
    return table(["objects, settings", "phrase search P@5", "grounding", "at today's defaults", "record"], rows)


def photo_record(file: str, detail: str, refine: bool) -> Record | None:
    """The latest test record in `file` of the bundled model on the photo world's photographs at
    this detail and --refine, at today's defaults (the counting settings aside: these tasks do
    not count)."""
    return latest(
        file,
        lambda r: (
            r.data.get("world") == "photo"
            and r.data.get("split") == "test"
            and of_bundled(r)
            and r.config.get("regions.detail") == detail
            and bool(r.config.get("search.refine")) == refine
            and at_defaults(r, COUNTING_ONLY)
        ),
    )


def refine_photo() -> str:
    """--refine on the photo world's test photographs, per detail: the latest records of
    harmosearch bench --world photo --split test at today's defaults."""
    rows = []
    for detail in ("normal", "high"):
        for refine in (False, True):
            found = photo_record("refine_photo.jsonl", detail, refine)
            if found is None:
                continue  # a detail not measured yet
            rows.append(
                [
                    f"{'`--detail high`' if detail == 'high' else 'default detail'}{', `--refine`' if refine else ''}",
                    pct(get(found, "tasks", "search", "P@5")),
                    pct(get(found, "tasks", "search", "hit@5")),
                    pct(get(found, "tasks", "search", "box@0.5")),
                    pct(get(found, "tasks", "grounding", "accuracy")),
                    named(found),
                ]
            )
    header = [f"{SHAPES_MODEL}, photo world test photographs", "phrase P@5", "hit@5", "box fits (search)", "grounding"]
    return table([*header, "record"], rows)


def photo_world() -> str:
    """The bundled model on the photo world's test photographs (issue #29's goals), per detail:
    the latest records of `harmosearch bench --world photo --split test --n 500` at today's
    defaults; the --refine row from refine_photo.jsonl (phrase search and grounding only)."""
    rows = []
    for label, detail, refine in DETAILS:
        found = photo_record("refine_photo.jsonl" if refine else "photo_world.jsonl", detail, refine)
        modes = get(found, "tasks", "retrieval", "modes") or {}
        relation = (get(found, "tasks", "compositional", "relations") or {}).get("relation") or {}
        rows.append(
            [
                label,
                pct(get(found, "tasks", "search", "P@5")),
                pct(get(found, "tasks", "grounding", "accuracy")),
                pct(relation.get("caption_wins")),
                *(pct((modes.get(m) or {}).get("t2i_R@1")) for m in ("global", "fused", "relations")),
                named(found),
            ]
        )
    header = [f"{SHAPES_MODEL}, photo world test photographs", "phrase P@5", "grounding", "relation pairs won"]
    header += ["t2i R@1 global", "fused", "relation-aware", "record"]
    return table(header, rows)


def photo_sentence() -> str:
    """The README's photo-world figures: the default row of photo_world()."""
    found = photo_record("photo_world.jsonl", "normal", False)
    relation = (get(found, "tasks", "compositional", "relations") or {}).get("relation") or {}
    return (
        f"phrase P@5 {pct(get(found, 'tasks', 'search', 'P@5'))}, grounding "
        f"{pct(get(found, 'tasks', 'grounding', 'accuracy'))} and relation pairs won "
        f"{pct(relation.get('caption_wins'))} ({named(found)})"
    )


def ablation_variants() -> list[str]:
    """The variants benchmarks/ablation.py can run today (its VARIANTS), read without importing it."""
    tree = ast.parse((ROOT / "benchmarks" / "ablation.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "VARIANTS":
            return [ast.literal_eval(key) for key in node.value.keys]
    return []


def ablation() -> str:
    """HarmoCLIP's losses against the global loss alone, from the same weights and budget: the
    latest run of each variant the script still has, per budget (runs of code that was not
    kept say so in their note and are left out)."""
    rows = []
    kept = [r for r in records("ablation.jsonl") if "not kept" not in r.data.get("note", "")]
    for steps in sorted({r.data["steps"] for r in kept}):
        for name in ablation_variants():
            found = latest(
                "ablation.jsonl", lambda r, n=name, s=steps: r in kept and r.data["steps"] == s and n in r.data["rows"]
            )
            if found is None:
                continue
            row = found.data["rows"][name]
            cells = [row.get(k) for k in ("boxcls_top1", "t2i_R@1", "i2t_R@1", "t2i_R@1_fused", "search_P@5")]
            rows.append([f"{name}, {steps} steps", *(pct(c) for c in cells), found.name])
    header = [
        "losses (batch 64, seed 0, validation scenes)",
        "box cls top-1",
        "text→image R@1",
        "image→text R@1",
        "t→i R@1, fused",
        "phrase search P@5",
        "record",
    ]
    return table(header, rows)


def dupes() -> str:
    found = latest("dupes.jsonl")
    rows = []
    checks = (("vectors and pixel check (the default)", "test_at_defaults"), ("vectors alone", "test_vectors_only"))
    for label, key in checks:
        result = get(found, key) or {}
        cells = [number(result.get("threshold"), 2), pct(result.get("precision")), pct(result.get("recall"))]
        rows.append([label, *cells])
    note = f"\n\nRecord: {named(found)}; test set of {get(found, 'test_images')} pictures."
    return table(["duplicates, harmo-tiny", "threshold", "pair precision", "pair recall"], rows) + note


def proposals() -> str:
    """Whether the proposals fit objects on flat grounds and over photographs (validation)."""
    variants = ("dense-map segments", "pixel segments at 300", "pixel segments at 100, 300, 1000")
    found = latest("proposals_clutter.jsonl", lambda r: all(f"photo, {v}" in r.data for v in variants))
    rows = []
    for world, label in (("flat", "flat"), ("photo", "over photographs")):
        for variant in variants:
            row = get(found, f"{world}, {variant}") or {}
            keys = ("proposal_ceiling", "grounding", "P@5", "box@0.5")
            rows.append([f"{label}, {variant}", *(pct(row.get(k)) for k in keys)])
    cost = get(found, "cost", "ViT-B-16:random") or {}
    share = cost.get("pixel segments at 100, 300, 1000 / encoding")
    note = (
        f"\n\nRecord: {named(found)}; validation scenes ({get(found, 'n')} per world), default detail. "
        f"The three scales take {pct(share)}% of a ViT-B/16 image encoding's time (fp32, this CPU)."
    )
    header = ["world, segment boxes", "proposal ceiling", "grounding", "phrase P@5", "box IoU ≥ 0.5"]
    return table(header, rows) + note


def training_curve() -> str:
    """The bundled model trained on (benchmarks/training_curve.py): validation figures of its
    latest run at each checkpoint, both worlds."""
    run = list(records("training_curve.jsonl")) if (RESULTS / "training_curve.jsonl").is_file() else []
    if not run:
        return "Not measured yet: `python benchmarks/training_curve.py`."
    newest = max(run, key=lambda r: r.data["time"])
    same = [r for r in run if r.data["commit"] == newest.data["commit"] and r.data["start"] == newest.data["start"]]
    figures = {(r.data["steps_beyond_start"], r.data["world"]): r for r in same}
    rows = []
    for steps in sorted({s for s, _ in figures}):
        cells = []
        for world in ("photo", "flat"):
            found = figures.get((steps, world))
            cells += [pct(get(found, "phrase_p5")), pct(get(found, "grounding"))]
            if world == "photo":
                cells.append(pct(get(found, "proposal_ceiling")))
        minutes = get(figures.get((steps, "photo")), "training_seconds")
        rows.append([f"{steps:,}", number(minutes / 60 if minutes is not None else None, 0), *cells])
    header = [
        f"steps beyond {newest.data['start']}",
        "training minutes",
        "photo P@5",
        "photo grounding",
        "its proposal ceiling",
        "flat P@5",
        "flat grounding",
    ]
    first, last = min(same, key=lambda r: r.data["time"]), newest
    return table(header, rows) + f"\n\nRecords: `training_curve.jsonl` {first.data['time']} to {last.data['time']}."
