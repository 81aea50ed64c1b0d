"""harmosearch info: what an index holds, and with --verify whether its files are intact."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from harmosearch.cli.core import err, line, out, plural, resolve
from harmosearch.cli.options import IndexArgument, JsonOption


def info(
    ctx: typer.Context,
    index_path: IndexArgument = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check checksums and row alignment of every file.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show what an index holds: counts, model, configuration, size on disk."""
    import json

    from harmosearch.indexes import latest_index
    from harmosearch.store import describe
    from harmosearch.store import verify as verify_index

    config = resolve(ctx)  # a bad --config is reported even when the index is named
    path = index_path or latest_index(config.paths.indexes_dir)
    facts = describe(path)
    problems = verify_index(path) if verify else []
    if as_json:
        print(json.dumps({**facts, **({"problems": problems} if verify else {})}, default=list))
    else:
        _print_info(facts, config.search)
    if not facts["photos_found"]:
        err.print(
            line(
                f"warning: the photo folder {facts['photos']} no longer exists; if it moved, run: "
                f"harmosearch index NEW_PLACE --index {path}"
            ),
            highlight=False,
        )
    for problem in problems:
        err.print(Text.assemble(("problem:", "bold red"), " ", line(problem)))
    if problems:
        raise typer.Exit(2)
    if verify and not as_json:
        out.print("verify: every file matches its checksum and all tables are row-aligned")


def regions_line(facts: dict[str, Any]) -> str:
    """The regions an index holds, how many a picture may keep, and, where the index keeps fewer
    than today's default would (it keeps its own cap on every update), what re-encodes at it."""
    import math

    from harmosearch.config import RegionConfig
    from harmosearch.regions.proposals import high_detail_cap

    regions = facts["config"]["regions"]
    detail, cap = regions.get("detail", "normal"), int(regions["max_regions"])
    if detail == "high":  # the share its version kept: twice the cap before it was recorded as 1.5
        share = ((facts.get("proposals") or {}).get("high") or [2] * 4)[3]
        kept, today = math.ceil(cap * share), high_detail_cap(RegionConfig().max_regions)
    else:
        kept, today = cap, RegionConfig().max_regions
    text = f"{facts['regions']} (at most {kept} per picture, {detail} detail)"
    if 1 < kept < today:  # not a global-only index, which keeps the whole picture alone
        text += f"; today's default keeps {today}: `harmosearch index PHOTOS --rebuild` re-encodes at it"
    return text


def _print_info(facts: dict[str, Any], search: Any) -> None:
    import json

    from rich.table import Table

    table = Table(title=f"index {facts['index']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    frames = f", {facts['frames']} of them frames of {plural(facts['videos'], 'video')}" if facts["videos"] else ""
    rows = [
        ("photos", facts["photos"]),
        ("images", f"{facts['images']}{frames}"),
        ("regions", regions_line(facts)),
        (
            "model",
            f"{facts['model']} (weights {facts['weights']}, dim {facts['embed_dim']}, "
            f"{facts['image_size']} px, grid {tuple(facts['grid'])})",
        ),
        ("vectors", f"made in {facts['vectors']}; an update makes new ones the same way"),
        ("faiss", f"global {facts['faiss']['global']}, regions {facts['faiss']['regions']}"),
        ("created", facts["created"]),
        ("updated", facts["updated"]),
        ("generation", str(facts["generation"])),
        ("calibrated", "yes" if facts["calibrated"] else "no (update the index to compute it)"),
        ("region trust", _trust_line(facts["region_trust"], search)),
        ("dense map", _dense_line(facts["config"], facts["dense_mode_choice"])),
        ("size on disk", f"{facts['bytes'] / 1e6:.2f} MB"),
        ("last update", ", ".join(f"{k} {v}" for k, v in facts["last_update"].items())),
        ("config", json.dumps(facts["config"], default=list)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def _dense_line(config: dict[str, Any], choice: dict[str, Any] | None) -> str:
    """The index's dense mode, and where encoder.dense_mode auto chose it, every mode's trust."""
    mode = config.get("encoder", {}).get("dense_mode", "value")
    if not choice:
        return f"{mode}; an update keeps it"
    trusts = ", ".join(
        f"{name} {trust:.2f}" if trust is not None else f"{name} not measured"
        for name, trust in choice["trust"].items()
    )
    return f"{mode}, chosen by auto for the highest region trust ({trusts}); an update keeps it"


def _trust_line(trust: dict[str, Any] | None, search: Any) -> str:
    """How far ranking believes the index's regions (harmosearch.regions.trust), and the weight
    the region part gets at these search settings."""
    from harmosearch.regions.trust import measured_the_current_way, region_weight

    if trust is None:
        return "not measured (made before it was: the next `harmosearch index` measures it); regions fully weighed"
    if trust.get("trust") is None:
        return "not measured (too few images or regions to sample); regions fully weighed"
    weight = region_weight(trust["trust"], search.trust_low, search.trust_high)
    weighed = (
        "regions fully weighed"
        if weight >= 1
        else "regions not weighed: ranks as --global-only"
        if weight <= 0
        else f"regions weighed {weight:.2f}"
    )
    earlier = not measured_the_current_way(trust)
    again = "; measured the way of an earlier version: the next `harmosearch index` measures it again"
    sample = f"{trust['regions']} regions of {trust['images']} images, {trust['seconds']:.1f} s"
    spread = f" ± {trust['spread']:.2f}" if trust.get("spread") is not None else ""
    meaning = "0: chance, 1: every sampled region picks its own box"
    return f"{trust['trust']:.2f}{spread}, {weighed} ({meaning}; {sample})" + (again if earlier else "")
