"""Benchmark tables, generated from the raw records in benchmarks/results/*.jsonl, so that no
figure in the documentation can drift from the record it comes from. Every row names its record
(file and time). Quality rows take the latest record whose resolved config matches today's
defaults (the row's own model, detail and --refine aside); a table row without such a record
says so instead of showing an older figure. docs/hooks.py puts the tables into the pages when the
site is built; the README's headline table is checked against `headline()` by tests/test_docs.py.
`python docs/gen_benchmarks.py` prints them all."""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmosearch.config import SHAPES_MODEL, Config
from harmosearch.config.fields import flatten
from harmosearch.search.calibration import CONFIDENT_QUANTILE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NONE = "–"
MISSING = object()
# Speed records name the first bundled model; the bundled models share its architecture.
SPEED_MODEL = "harmo-tiny"
# Sections whose settings change what a benchmark measures; of them, the keys that a row names
# itself, and the keys that only matter with --refine.
RESULT_SECTIONS = ("encoder", "regions", "search")
ROW_KEYS = frozenset({"encoder.model", "encoder.device", "encoder.batch_size", "regions.detail", "search.refine"})
REFINE_ONLY = frozenset(
    {"search.refine_scale", "search.rerank", "search.crop_weight", "search.refine_alpha", "search.refine_boxes"}
)
# Keys that only matter to queries that count or negate ("two red circles", "without a blue
# square"), and the tasks none of whose queries do (phrases, boxes, twin captions): for those
# tasks a record made before the keys existed is still at today's defaults. Retrieval's captions
# count ("three shapes: ..."), so a retrieval record must hold them.
COUNTING_ONLY = frozenset(
    {
        "search.count_quantile",
        "search.count_overlap",
        "search.count_weight",
        "search.negation_weight",
        "search.count_rival_share",
        "search.count_centres",
        "search.count_segments",
    }
)
# Keys added after records that lack them, with the value that does what the code did before
# them: a record without such a key was made at that value.
BEFORE_THEIR_TIME: dict[str, Any] = {
    "search.count_rival_share": 0.0,
    "search.count_centres": False,
    "search.count_segments": False,
}
# Settings that change only queries that negate something ("without", "no"): a query that
# negates nothing has no absence term (search/fuse.absence_term), and no task but negation asks
# such queries (the synthetic captions, phrases, pairs and counting queries negate nothing).
NEGATION_ONLY = frozenset({"search.negation_weight"})
UNCOUNTED_TASKS = frozenset({"boxcls", "grounding", "search", "compositional"})


@dataclass(frozen=True)
class Record:
    file: str
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return f"`{self.file}` {self.data['time']}"

    @property
    def config(self) -> dict[str, Any]:
        return flatten(self.data.get("config") or {})


@functools.cache
def records(file: str) -> tuple[Record, ...]:
    lines = (RESULTS / file).read_text(encoding="utf-8").splitlines()
    return tuple(Record(file, json.loads(line)) for line in lines if line.strip())


def latest(file: str, fits: Callable[[Record], bool] = lambda r: True) -> Record | None:
    found = [r for r in records(file) if fits(r)]
    return max(found, key=lambda r: r.data["time"]) if found else None


def of_bundled(record: Record) -> bool:
    """Whether the record was made with today's bundled model (SHAPES_MODEL)."""
    return (record.data.get("model") or {}).get("spec") == SHAPES_MODEL


def at_defaults(record: Record, besides: frozenset[str] = frozenset()) -> bool:
    """Whether the record was made with today's defaults for every setting that changes results
    but the keys `besides` (a setting it does not record counts as different, unless
    BEFORE_THEIR_TIME says what the code did before it existed) and, where it holds no negation
    task, NEGATION_ONLY."""
    stored = record.config
    refine = stored.get("search.refine", False)
    if "negation" not in (record.data.get("tasks") or {}):
        besides = besides | NEGATION_ONLY
    for key, value in flatten(Config().to_json()).items():
        if key.split(".")[0] not in RESULT_SECTIONS or key in ROW_KEYS or key in besides:
            continue
        if key in REFINE_ONLY and not refine:
            continue
        if stored.get(key, BEFORE_THEIR_TIME.get(key, MISSING)) != value:
            return False
    return True


def scenes(task: dict[str, Any]) -> int | None:
    found = re.search(r"(\d+) scenes", str(task.get("dataset", "")))
    return int(found.group(1)) if found else None


def bench(
    file: str, task: str, objects: str = "mixed", detail: str = "normal", refine: bool = False, n: int | None = None
) -> Record | None:
    """The latest synthetic test record of `harmosearch bench` with the bundled model at today's
    defaults, for this object set, detail and --refine, holding `task` (on n scenes)."""

    def fits(r: Record) -> bool:
        d, config = r.data, r.config
        return (
            d.get("split") == "test"
            and d.get("objects") == objects
            and (d.get("world") or "flat") == "flat"
            and of_bundled(r)
            and task in d.get("tasks", {})
            and (n is None or scenes(d["tasks"][task]) == n)
            and config.get("regions.detail") == detail
            and config.get("search.refine") == refine
            and at_defaults(r, COUNTING_ONLY if task in UNCOUNTED_TASKS else frozenset())
        )

    return latest(file, fits)


def captions(detail: str = "normal", refine: bool = False) -> Record | None:
    """The latest caption retrieval record on the 500 test scenes at today's defaults, of the
    full bench or of the retrieval runs beside the counting parser's introduction."""
    found = [bench(f, "retrieval", detail=detail, refine=refine, n=500) for f in CAPTION_FILES]
    return max((r for r in found if r), key=lambda r: r.data["time"], default=None)


CAPTION_FILES = ("bench.jsonl", "counting_retrieval.jsonl")


def pct(value: Any) -> str:
    return NONE if value is None else f"{100 * value:.1f}"


def get(record: Record | None, *path: str) -> Any:
    node: Any = record.data if record else None
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def named(*found: Record | None) -> str:
    names = [r.name for r in found if r is not None]
    return "; ".join(dict.fromkeys(names)) or "not measured at today's defaults"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


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


def ms(seconds: float | None) -> str:
    return NONE if seconds is None else f"{1000 * seconds:,.0f}"


def number(value: float | None, digits: int = 1) -> str:
    return NONE if value is None else f"{value:,.{digits}f}"


def per_1000(images_per_s: float | None) -> str:
    """The time 1,000 pictures take at this rate."""
    if not images_per_s:
        return NONE
    seconds = 1000 / images_per_s
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.1f} s"


def on_cpu(r: Record) -> bool:
    return not (r.data.get("machine") or {}).get("cuda")


def indexing() -> str:
    """Images per second, end to end, by model and machine."""
    default_model = latest("footprint.jsonl")
    rows = []
    if default_model:
        d = default_model.data
        rows.append(
            [
                "ViT-B-16 (the default model's architecture), 320 px scenes",
                f"{d['cores']} CPU cores, load average {d['load_average_after'][0]:.0f}",
                number(d["images_per_s"], 2),
                per_1000(d["images_per_s"]),
                default_model.name,
            ]
        )
    for fmt in ("png", "jpg"):
        found = latest(
            "encode.jsonl",
            lambda r, fmt=fmt: on_cpu(r) and r.data.get("format") == fmt and r.data.get("model") == SPEED_MODEL,
        )
        rate = get(found, "images_per_s", "end-to-end build_index")
        without_trust = get(found, "images_per_s", "end-to-end build_index, region trust taken out")
        cores = get(found, "machine", "cpus")
        rows.append(
            [
                f"harmo-tiny, 224 px {fmt.upper()} scenes",
                f"{cores} CPU cores"
                + (f", load average {load[0]:.0f}" if (load := get(found, "load_average_before")) else ""),
                number(rate or without_trust),
                per_1000(rate or without_trust),
                named(found) + ("" if rate or found is None else " (per photo: region trust, a fixed cost, left out)"),
            ]
        )
    gpu = latest("encode.jsonl", lambda r: not on_cpu(r) and r.data.get("model") == SPEED_MODEL)
    rate = get(gpu, "images_per_s", "end-to-end build_index")
    rows.append(
        [
            "harmo-tiny, 224 px PNG scenes",
            str(get(gpu, "machine", "cuda")),
            number(rate),
            per_1000(rate),
            named(gpu),
        ]
    )
    return table(["model, pictures", "machine", "images/s, end to end", "1,000 pictures", "record"], rows)


def detail_cost() -> str:
    """What --detail high and --refine cost with the bundled model."""
    found = latest("small_objects_cost.jsonl")
    d = found.data if found else {}
    rows = []
    for detail in ("normal", "high"):
        queries = (d.get("query_seconds") or {}).get(detail) or {}
        rows.append(
            [
                f"`--detail {detail}`",
                number((d.get("regions_over_global_time") or {}).get(detail), 2),
                number((d.get("regions_per_image") or {}).get(detail)),
                number((d.get("index_bytes_per_image") or {}).get(detail, 0) / 1024),
                ms(queries.get("off")),
                ms(queries.get("1.5")),
                named(found),
            ]
        )
    header = [
        "harmo-tiny, 2 CPU cores",
        "indexing time over `--global-only`",
        "regions per image",
        "KiB per image",
        "ms per query",
        "ms per query with `--refine`",
        "record",
    ]
    return table(header, rows)


def search_latency() -> str:
    """Warm Index.search over a million region vectors, at the region counts per image of today's
    normal and high detail (the detail-cost record)."""
    counts = get(latest("small_objects_cost.jsonl"), "regions_per_image") or {}
    rows = []
    for detail, per_image in sorted(counts.items(), key=lambda item: item[1]):
        wanted = round(per_image)
        found = latest("search.jsonl", lambda r, w=wanted: get(r, "end_to_end", "regions_per_image") == w)
        e2e = get(found, "end_to_end") or {}
        rows.append(
            [
                f"{e2e.get('n_regions', 0):,}",
                f"{wanted} (`--detail {detail}`)",
                (e2e.get("index_types") or {}).get("regions", NONE),
                number(e2e.get("p50_ms")),
                number(e2e.get("p95_ms")),
                number(e2e.get("relations_over_no_relations"), 2),
                named(found),
            ]
        )
    header = ["region vectors", "per image", "FAISS index", "p50 ms", "p95 ms", "relations / none", "record"]
    return table(header, rows)


def vector_search() -> str:
    """FAISS and numpy searches of one query at 1M 512-d vectors: latency, recall, bytes."""
    found = latest("search.jsonl", lambda r: any(row["n"] == 1_000_000 for row in r.data["rows"]))
    rows = [
        [
            row["method"],
            number(row["p50_ms"], 2),
            number(row["p95_ms"], 2),
            number(row["recall@10"], 3),
            number(row["bytes_per_vector"], 0),
        ]
        for row in (found.data["rows"] if found else [])
        if row["n"] == 1_000_000
    ]
    note = f"\n\nRecord: {named(found)}; vectors of {found.data['rows'][0]['dim']} dimensions." if found else ""
    return table(["1,000,000 vectors", "p50 ms", "p95 ms", "recall@10", "bytes per vector"], rows) + note


def query_costs() -> str:
    """The rivals, and queries through a running server."""
    rivals = latest("contrast_cost.jsonl")
    served = latest("serve.jsonl")
    median = get(rivals, "median_ms") or {}
    ratio = get(rivals, "over_off") or {}
    warm = get(served, "warm_ms") or {}
    kinds = (
        ("off", "off"),
        ("the model's own 48 (`trained`)", "own"),
        ("everyday, ~1,500 (the default)", "everyday"),
        ("everyday, every region of an image weighed", "everyday, every region"),
        ("a file of 4,096", "file 4096"),
    )
    rows = [
        [f"rivals: {name}", number(median.get(key)), f"{ratio[key]:.2f}x" if key in ratio else NONE, named(rivals)]
        for name, key in kinds
        if key in median
    ]
    rows += [
        [f"demo index: {name}", number((warm.get(key) or {}).get("p50")), NONE, named(served)]
        for name, key in (("in-process", "in-process"), ("through `harmosearch serve` (HTTP)", "http, client"))
    ]
    return table(["warm query", "p50 ms", "over no rivals", "record"], rows)


def startup() -> str:
    """How long `--help` takes against the interpreter's own start (benchmarks/startup.py)."""
    found = latest("startup.jsonl")
    wall, cpu = get(found, "median_wall_s") or {}, get(found, "median_cpu_s") or {}
    rows = [[f"`{name}`", number(wall.get(name), 3), number(cpu.get(name), 3), named(found)] for name in wall]
    heavy = get(found, "heavy_imports")
    note = "" if heavy is None else f"\n\nHeavy modules imported by `--help`: {', '.join(heavy) or 'none'}."
    return table(["command", "wall (s)", "CPU (s)", "record"], rows) + note


def query_threads() -> str:
    """A warm query at one thread per OpenMP and BLAS pool (the default) against the pools as
    they are (benchmarks/query_threads.py)."""
    found = latest("query_threads.jsonl")
    one, own = "one thread per pool", "pools as they are"
    rows = [
        [f"{query!r}", number(times.get(one)), number(times.get(own)), named(found)]
        for query, times in (get(found, "median_ms_per_query") or {}).items()
    ]
    ratio = get(found, "own_counts_over_one")
    note = f"\n\nThe pools as they are: {ratio:.2f}x the time at one thread each (paired over rounds)." if ratio else ""
    return table(["warm query", f"{one} (ms)", f"{own} (ms)", "record"], rows) + note


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


def training() -> str:
    rows = []
    for where, fits in (("CPU", on_cpu), ("GPU", lambda r: not on_cpu(r))):
        found = latest("train_step.jsonl", fits)
        for losses, seconds in (get(found, "seconds_per_step") or {}).items():
            batch = get(found, "batch")
            label = losses.replace("+", " + ").replace("(a)", " (caption)").replace("(b)", " (crop)")
            rows.append([where, label, ms(seconds), number(batch / seconds, 0), named(found)])
    return table(["device", "losses (batch 64, harmo-tiny-vit)", "ms per step", "samples/s", "record"], rows)


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


def cpu_runtime_record() -> Record | None:
    """The latest record of benchmarks/cpu_runtime.py that compares the default path with fp32."""
    return latest(
        "cpu_runtime.jsonl",
        lambda r: "fp32 (torch)" in r.data["images_per_s"] and "default" in r.data["settings"],
    )


def features_in_words(features: list[str], probe: float | None = None) -> str:
    """What a record's CPU does natively, and the int8 probe's speed-up where it measured one."""
    words = {"bf16": "native bf16", "vnni": "VNNI"}
    found = [words[f] for f in features if f in words]
    said = " and ".join(found) if found else "neither native bf16 nor VNNI"
    return said if probe is None or "vnni" in features else f"{said} (int8 measured {probe:.2f}× fp32 by its probe)"


def emulated_bf16(d: dict[str, Any], path: str) -> bool:
    return path.startswith("bf16") and "bf16" not in d["cpu_features"] and bool(d.get("emulated_images"))


def cpu_paths() -> str:
    """Indexing speed and fidelity of each CPU inference path, on one CPU in one run."""
    found = cpu_runtime_record()
    if found is None:
        return "not measured"
    d = found.data
    rows = []
    for path, rate in d["images_per_s"].items():
        fidelity = d["fidelity_to_fp32"][path]
        taken_by = [f"`{name}`" for name, resolved in d["settings"].items() if resolved == path]
        emulated = emulated_bf16(d, path)
        regions = fidelity["region_cosine"]
        rows.append(
            [
                path + (" (emulated: no native bf16)" if emulated else ""),
                f"{rate:.2f} ({d['emulated_images'] if emulated else d['images']} photos)",
                number((d.get("images_per_s_whole_build") or {}).get(path), 2),
                f"{d['speed_over_fp32'][path]:.2f}×",
                f"{fidelity['global_cosine']:.4f}",
                f"{regions:.4f}" if regions == regions else "– (other regions)",
                ", ".join(taken_by),
            ]
        )
    cpu = f"{d['machine']['cpus']} CPU cores with {features_in_words(d['cpu_features'], d.get('int8_probe'))}"
    load = d.get("load_average_before")
    cpu += f", load average {load[0]:.0f}" if load else ""
    header = [
        "path",
        "images/s per photo",
        "images/s, whole build",
        "over fp32",
        "cosine to fp32: global",
        "regions",
        "settings that take it",
    ]
    if d.get("trust_skipped_in_rounds"):
        note = (
            "\n\nImages/s per photo: builds without their region trust measurement, a fixed cost per build "
            "(up to 96 pictures encoded, whatever the library's size)."
        )
    elif "per_image" in d:
        note = (
            "\n\nImages/s per photo: the build's own time less its region trust measurement, a fixed cost "
            "per build (up to 96 pictures encoded, whatever the library's size); the whole build's rate beside."
        )
    else:
        note = ""
    high = d["settings"].get("default, high detail")
    if high in d["speed_over_fp32"]:
        note += (
            f" At `--detail high` along this CPU's default path a photo takes {1 / d['speed_over_fp32'][high]:.1f}× "
            "its time at the default detail in fp32; issue #32 makes high detail the default only where it costs "
            "no more than that, so the default detail stays normal."
        )
    return f"{d['model']} on {cpu}, record {found.name}:\n\n" + table(header, rows) + note


def cpu_fidelity() -> str:
    """Today's bundled model's bench on test scenes along each CPU path (its latest record each)."""
    rows = []
    for precision in ("fp32", "bf16", "int8"):
        found = latest(
            "bench_cpu_paths.jsonl",
            lambda r, p=precision: of_bundled(r) and (r.data.get("model") or {}).get("precision") == p,
        )
        if found is None:
            continue
        modes = get(found, "tasks", "retrieval", "modes") or {}
        rows.append(
            [
                f"{precision} ({found.data['model']['runtime']})",
                *(pct((modes.get(mode) or {}).get("t2i_R@1")) for mode in ("global", "fused", "relations")),
                pct((modes.get("fused") or {}).get("i2t_R@1")),
                pct(get(found, "tasks", "search", "P@5")),
                pct(get(found, "tasks", "grounding", "accuracy")),
                found.name,
            ]
        )
    header = ["path", "R@1 global", "R@1 fused", "R@1 relations", "image→text R@1 fused", "phrase P@5", "grounding"]
    return table([*header, "record"], rows)


def cpu_paths_sentence() -> str:
    """The README's sentence on the CPU paths' speeds, from the latest cpu_runtime record."""
    found = cpu_runtime_record()
    if found is None:
        return NONE
    d = found.data
    default = d["settings"].get("default", "fp32 (torch)")
    rates, ratios, fp32 = d["images_per_s"], d["speed_over_fp32"], d["images_per_s"]["fp32 (torch)"]
    bf16 = next((p for p in rates if p.startswith("bf16")), None)
    if bf16 is not None and not emulated_bf16(d, bf16):
        bf16_words = f", {rates[bf16]:.2f} in bf16 ({ratios[bf16]:.2f}×)"
    else:
        bf16_words = "; bf16 is not measurable here, for want of native bf16"
    high = d["settings"].get("default, high detail")
    high_words = f", and {rates[high]:.2f} at `--detail high` ({ratios[high]:.2f}×)" if high in rates else ""
    if d.get("trust_skipped_in_rounds"):
        per_photo = "per photo: builds without their region trust measurement, a fixed cost per build; "
    elif "per_image" in d:
        per_photo = "per photo: the fixed cost of a build's region trust taken out; "
    else:
        per_photo = ""
    cpu = features_in_words(d["cpu_features"], d.get("int8_probe"))
    return (
        f"On {d['machine']['cpus']} CPU cores with {cpu}, {d['model']} indexed "
        f"synthetic JPEG scenes at {rates[default]:.2f} photos/s along this CPU's default path, {default}, against "
        f"{fp32:.2f} in fp32 ({ratios[default]:.2f}×){high_words}{bf16_words} ({per_photo}record "
        f"`cpu_runtime.jsonl` {d['time']})"
    )


def detail_sentence() -> str:
    """The README's sentence on what high detail costs and buys, beside the default detail."""
    found = cpu_runtime_record()
    high = get(found, "settings", "default, high detail")
    if found is None or high is None:
        return NONE
    d = found.data
    cost = d["speed_over_fp32"][d["settings"]["default"]] / d["speed_over_fp32"][high]
    normal, fine = detail_figures("normal"), detail_figures("high")
    return (
        f"`--detail high` takes {cost:.1f}× the default detail's indexing time per photo (ViT-B-16 along this "
        f"CPU's default path, record `cpu_runtime.jsonl` {d['time']}) for small objects P@5 {fine['small P@5']} "
        f"against {normal['small P@5']}, phrase search P@5 {fine['P@5']} against {normal['P@5']} and box fits "
        f"{fine['grounding']} against {normal['grounding']}"
    )


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


TABLES: dict[str, Callable[[], str]] = {
    "headline": headline,
    "retrieval": retrieval,
    "regions": regions,
    "compositional": compositional,
    "objects": objects,
    "fresh": fresh,
    "indexing": indexing,
    "cpu-paths": cpu_paths,
    "cpu-fidelity": cpu_fidelity,
    "detail-cost": detail_cost,
    "search-latency": search_latency,
    "vector-search": vector_search,
    "query-costs": query_costs,
    "query-threads": query_threads,
    "startup": startup,
    "training": training,
    "ablation": ablation,
    "dupes": dupes,
    "calibration": calibration,
    "counting": counting,
    "proposals": proposals,
    "transfer": transfer,
    "counting-cost": counting_cost,
    "rivals": rivals,
    "refine-photo": refine_photo,
    "photo-world": photo_world,
}


def minutes_per_1000_photos() -> str:
    """The README's time per 1,000 photos for the default model's architecture on a CPU, along
    this CPU's default path, from the CPU paths' record."""
    found = cpu_runtime_record()
    return per_1000(found.data["images_per_s"][found.data["settings"]["default"]]) if found else NONE


if __name__ == "__main__":
    for name, make in TABLES.items():
        print(f"## {name}\n\n{make()}\n")
