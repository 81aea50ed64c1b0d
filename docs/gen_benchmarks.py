"""Benchmark tables, generated from the raw records in benchmarks/results/*.jsonl, so that no
figure in the documentation can drift from the record it comes from. Every row names its record
(file and time). Quality rows take the latest record whose resolved config matches today's
defaults (the row's own model, detail and --refine aside); a table row without such a record
says so instead of showing an older figure. docs/hooks.py puts the tables into the pages when the
site is built; the README's headline table is checked against `headline()` by tests/test_docs.py.
`python docs/gen_benchmarks.py` prints them all.

This module names the tables (TABLES, the names the pages' markers use); they are made in
gen_quality (what search finds), gen_speed (what it costs) and gen_ranking (calibration,
transfer, rivals, counting), from the records as gen_records reads and picks them."""

from __future__ import annotations

from collections.abc import Callable

from gen_quality import (
    ablation,
    compositional,
    dupes,
    fresh,
    headline,
    objects,
    photo_world,
    proposals,
    refine_photo,
    regions,
    retrieval,
    training_curve,
)
from gen_ranking import calibration, counting, counting_cost, rivals, transfer
from gen_speed import (
    cpu_fidelity,
    cpu_paths,
    detail_cost,
    indexing,
    query_costs,
    query_threads,
    search_latency,
    startup,
    training,
    vector_search,
)

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
    "training-curve": training_curve,
}


if __name__ == "__main__":
    for name, make in TABLES.items():
        print(f"## {name}\n\n{make()}\n")
