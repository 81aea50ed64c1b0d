"""harmosearch dupes: exact copies and near-duplicates among an index's photos."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from harmosearch.cli.core import err, line, out, resolve
from harmosearch.cli.options import IndexArgument, JsonOption

if TYPE_CHECKING:
    from harmosearch.dupes import IndexDuplicates


def dupes(
    ctx: typer.Context,
    index_path: IndexArgument = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Cosine of global vectors from which two photos may be near-duplicates."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List exact copies and near-duplicates (resized, re-encoded, cropped a little) among the
    indexed photos, each group with the copy to keep."""
    import json

    from harmosearch.dupes import DEFAULT_THRESHOLD, index_duplicates
    from harmosearch.errors import QueryError
    from harmosearch.indexes import latest_index
    from harmosearch.store import IndexReader

    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise QueryError(f"--threshold {threshold} is not a cosine in [-1, 1]")
    config = resolve(ctx)  # a bad --config is reported even when the index is named
    path = index_path or latest_index(config.paths.indexes_dir)
    reader = IndexReader(path, load_indexes=False)
    photos = Path(reader.manifest["photos_root"])
    if not photos.is_dir():
        err.print(
            f"warning: the photo folder {photos} no longer exists; only exact copies can be told apart",
            highlight=False,
        )
    found = index_duplicates(reader, photos, DEFAULT_THRESHOLD if threshold is None else threshold)
    if as_json:
        print(json.dumps({"index": str(path), **found.to_dict()}, ensure_ascii=False))
        return
    _print_dupes(found, path)


def _print_dupes(found: IndexDuplicates, index_path: Path) -> None:
    from rich.table import Table

    if not found.groups:
        out.print(f"no duplicates among the {found.stills} photos in {index_path}")
        return
    table = Table(title=f"duplicates in {index_path}", title_justify="left")
    for name, justify in (("#", "right"), ("kind", "left"), ("keep", "left"), ("copies", "left"), ("cosine", "right")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for n, group in enumerate(found.groups, start=1):
        copies = "\n".join(line(found.paths[i]) for i in group.members if i != group.keeper)
        table.add_row(str(n), group.kind, line(found.paths[group.keeper]), copies, f"{group.similarity:.3f}")
    out.print(table)
    copies = sum(len(g.members) - 1 for g in found.groups)
    out.print(
        f"{len(found.groups)} groups among {found.stills} photos; removing the {copies} copies would free "
        f"{found.removable_bytes() / 1e6:.1f} MB",
        highlight=False,
    )
