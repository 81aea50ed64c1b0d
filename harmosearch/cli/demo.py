"""harmosearch demo: synthetic scenes indexed with the bundled model and searched, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harmosearch.cli.core import interruptible, out, progress_bars, resolve
from harmosearch.cli.options import ModelOption, checked_path
from harmosearch.cli.query import print_results
from harmosearch.config import SHAPES_MODEL


@interruptible
def demo(
    ctx: typer.Context,
    folder: Annotated[
        Path, typer.Argument(metavar="FOLDER", help="Where to put scenes/, index/ and results/.", callback=checked_path)
    ] = Path("samples/demo"),
    n: Annotated[int, typer.Option("--n", help="Number of scenes to draw.", min=1)] = 120,
    model: ModelOption = None,
) -> None:
    """Draw synthetic scenes, index them with the bundled model, run compositional queries."""
    config = resolve(ctx, **{"encoder.model": model or SHAPES_MODEL})
    from harmosearch.demo import run_demo, slug

    with progress_bars() as progress:
        responses, report = run_demo(folder, config, n, progress=progress)
    out.print(f"indexed {report.images} scenes ({report.regions} regions) with {report.model} into {folder / 'index'}")
    for response in responses:
        print_results({**response.to_dict(), "index": str(folder / "index")})
        out.print(f"annotated: {folder / 'results' / slug(response.query) / 'contact_sheet.png'}\n")
    out.print(f'try your own: harmosearch query "red circle above a blue star" --index {folder / "index"}')
