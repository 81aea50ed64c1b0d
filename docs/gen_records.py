"""The records behind the benchmark tables (benchmarks/results/*.jsonl) and what every table
shares: which record is at today's defaults, the latest that fits, and how figures are written.
The tables themselves are in gen_quality (what the model and the ranking find), gen_speed (what
things cost) and gen_ranking (calibration, transfer, rivals, counting); gen_benchmarks names them."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmosearch.config import SHAPES_MODEL, Config
from harmosearch.config.fields import flatten

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
