"""harmosearch query: search an index, through its running server when there is one, and print
the results (a table or JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from harmosearch.cli.core import err, line, out, resolve
from harmosearch.cli.options import (
    DeviceOption,
    IndexOption,
    JsonOption,
    RefineOption,
    RefineScaleOption,
    checked_path,
)

if TYPE_CHECKING:
    from harmosearch.config import Config
    from harmosearch.search import Index, SearchResponse


def query(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(metavar="TEXT", help='What to look for, e.g. "red umbrella near bench".')] = "",
    index_path: IndexOption = None,
    k: Annotated[int | None, typer.Option("-k", "--top", help="Number of results (default: 10).")] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            "--alpha", help="Weight of the global score in [0, 1] (default: 0.5, and 0.15 for a query of one lexeme)."
        ),
    ] = None,
    global_only: Annotated[bool, typer.Option("--global-only", help="Plain CLIP ranking, no regions.")] = False,
    image: Annotated[
        Path | None, typer.Option("--image", help="Use an image file as (part of) the query.", callback=checked_path)
    ] = None,
    negatives: Annotated[
        list[str] | None, typer.Option("--not", help="Push down images showing this (repeatable).")
    ] = None,
    min_score: Annotated[
        str | None,
        typer.Option("--min-score", help="Drop results scoring below this; auto: keep only confident results."),
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Taken on or after this date: 2024, 2024-07, 2024-07-15.")
    ] = None,
    before: Annotated[str | None, typer.Option("--before", help="Taken before this date (same forms).")] = None,
    under: Annotated[
        list[str] | None,
        typer.Option("--under", help="Only files in this folder, relative to the photo folder (repeatable)."),
    ] = None,
    sort: Annotated[str, typer.Option("--sort", help="Order of the k best: score, or date (newest first).")] = "score",
    relation_weight: Annotated[
        float | None,
        typer.Option("--relation-weight", help="Weight of relations such as 'left of' (in spreads; default 5)."),
    ] = None,
    no_relations: Annotated[
        bool, typer.Option("--no-relations", help="Ignore relations: rank the lexemes independently.")
    ] = False,
    refine: RefineOption = None,
    refine_scale: RefineScaleOption = None,
    as_json: JsonOption = False,
    save_annotated: Annotated[
        Path | None,
        typer.Option(
            "--save-annotated", help="Write annotated results and a contact sheet here.", callback=checked_path
        ),
    ] = None,
    device: DeviceOption = None,
) -> None:
    """Search an index: lexemes are matched to regions and fused with the global score.

    When a `harmosearch serve` for the index is running, the search is sent there (the model is
    already loaded) and printed the same way."""
    options = QueryOptions(
        settings={"k": k, "alpha": alpha, "min_score": min_score, "relation_weight": relation_weight, "refine": refine},
        filters={
            "global_only": global_only,
            "negatives": tuple(negatives or ()),
            "relations": not no_relations,
            "after": after,
            "before": before,
            "under": tuple(under or ()),
            "sort": sort,
        },
    )
    config = resolve(ctx, **options.overrides(), **{"search.refine_scale": refine_scale})
    # A server searches with its own settings: only plain command-line options travel to it.
    warm = image is None and save_annotated is None and device is None and ctx.obj is None and refine_scale is None
    body = _warm_search(index_path, config, text, options) if warm else None
    response = None
    if body is None:
        from harmosearch.search import open_index

        idx = open_index(index_path, config, device=device)
        response = _local_search(idx, config, text, image, options)
        body = {**response.to_dict(), "index": str(idx.path), "warnings": response.warnings}
    _print_answer(body, as_json)
    if save_annotated is not None and response is not None:
        _save_annotated(response, save_annotated, idx.path)


@dataclass(frozen=True)
class QueryOptions:
    """What one query asks beyond its text and image, built once from the command line.

    settings: the search settings given (k, alpha, min_score, relation_weight, refine; None: not
    given). In this process they reach the search through the config, checked like the config
    file before any model loads; a server searches with its own config, so they travel with the
    query. filters: the rest, which either search takes as it is."""

    settings: dict[str, Any]
    filters: dict[str, Any]

    def overrides(self) -> dict[str, Any]:
        """The settings as config keys; --alpha weighs the global score of every query, so it
        also sets search.phrase_alpha, the weight for a query of one lexeme."""
        keys = {f"search.{name}": value for name, value in self.settings.items()}
        return {**keys, "search.phrase_alpha": self.settings["alpha"]}

    def for_server(self) -> dict[str, Any]:
        return {**self.filters, **self.settings}


def _local_search(idx: Index, config: Config, text: str, image: Path | None, options: QueryOptions) -> SearchResponse:
    """The search in this process. The settings are in `config` already; min_score is passed only
    when given (as the config resolved it, "auto" or a number), because a given "auto" is refused
    for an image query while a configured one is ignored."""
    given_min_score = options.settings["min_score"] is not None
    return idx.search(
        text,
        image=image,
        min_score=config.search.min_score if given_min_score else None,
        refine=options.settings["refine"],
        **options.filters,
    )


def _warm_search(index_path: Path | None, config: Config, text: str, options: QueryOptions) -> dict[str, Any] | None:
    """The answer of a running server for the index, or None when there is none (the caller then
    searches in-process). Imports nothing heavier than the standard library."""
    from harmosearch.indexes import latest_index
    from harmosearch.serve.client import find_server, remote_search

    path = index_path or latest_index(config.paths.indexes_dir)
    url = find_server(path)
    body = remote_search(url, text, **options.for_server()) if url else None
    if body is not None:
        body["index"] = str(path)
        body["results"] = [
            {k: v for k, v in r.items() if k not in ("image_id", "width", "height")} for r in body["results"]
        ]
    return body


def _print_answer(body: dict[str, Any], as_json: bool) -> None:
    """The search's warnings on stderr, then its results as a table or one JSON object."""
    import json

    for warning in body.get("warnings", []):
        err.print(line(f"warning: {warning}"), highlight=False)
    if as_json:
        print(json.dumps({k: body[k] for k in ("query", "lexemes", "confident_match", "results")}, ensure_ascii=False))
    else:
        print_results(body)


def _save_annotated(response: SearchResponse, folder: Path, index_path: Path) -> None:
    from harmosearch.annotate import save_annotated

    written = save_annotated(response, folder, index_path)
    err.print(f"wrote {len(written)} annotated images to {folder}")


def print_results(body: dict[str, Any]) -> None:
    """A results table from the JSON form of a search (in-process or from a server alike)."""
    from rich.table import Table

    if body.get("confident_match") is False:
        weak = "; the results below score like unrelated queries on this index" if body["results"] else ""
        out.print(f"no confident match for {body['query']!r}{weak}", highlight=False)
    if not body["results"]:
        if body.get("confident_match") is None:
            out.print(f"no results for {body['query']!r}")
        return
    title = f"{body['query']!r} in {body['index']}"
    if body["lexemes"]:
        title += "  lexemes: " + ", ".join(body["lexemes"])
    table = Table(title=title, title_justify="left")
    for name, justify in (("#", "right"), ("path", "left"), ("score", "right"), ("global", "right")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    calibrated = body.get("confident_match") is not None
    if calibrated:
        table.add_column("match")
    for lexeme, shown in zip(body["lexemes"], body["results"][0]["lexemes"], strict=True):
        table.add_column(f"no {lexeme}: presence" if shown.get("negated") else f"{lexeme}: score (box)")
    for relation in body["results"][0]["relations"]:
        what = f"{'not ' if relation['negated'] else ''}{relation['relation']}"
        table.add_column(f"{relation['subject']} {what} {relation['object']}", justify="right")
    from types import SimpleNamespace

    from harmosearch.annotate import shown_path

    for r in body["results"]:
        cells: list[Any] = ["confident" if r.get("confident") else Text("weak", style="dim")] if calibrated else []
        cells += [_lexeme_cell(m) for m in r["lexemes"]]
        cells += [f"{relation['score']:.2f}" for relation in r["relations"]]
        score = Text(f"{r['score']:.3f}", style="dim" if r.get("confident") is False else "")
        shown = shown_path(SimpleNamespace(path=r["path"], frame_time=r.get("frame_time")))
        table.add_row(str(r["rank"]), line(shown), score, f"{r['global_score']:.3f}", *cells)
    out.print(table)


def _lexeme_cell(match: dict[str, Any]) -> str:
    """A lexeme's score and box; with the instances counted ("x2") when the query counts it, its
    presence when the query negates it."""
    if match.get("negated"):
        return f"{match['presence']:.2f}"
    cell = f"{match['score']:.3f} ({','.join(f'{v:.0f}' for v in match['box'])})"
    return cell if match.get("count") is None else f"{cell} x{match['count']}"
