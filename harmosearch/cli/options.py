"""Options that several commands take, declared once with their help, and the check every path
option and argument gets before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harmosearch.config import SHAPES_MODEL
from harmosearch.errors import ConfigError
from harmosearch.folders import kind


def checked_path(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A path whose state cannot even be read (a name too long for the file system, a link loop,
    a folder above it that cannot be entered) is an error naming the option, before any work."""
    if value is not None:
        found = kind(value)
        if found not in ("folder", "file", "missing"):
            name = max(param.opts, key=len) if param.param_type_name == "option" else param.metavar or param.name
            raise ConfigError(f"{name} {value}: {found}")
    return value


def checked_paths(param: typer.CallbackParam, values: list[Path] | None) -> list[Path] | None:
    """checked_path for an option given several times."""
    for value in values or ():
        checked_path(param, value)
    return values


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file overriding the default configuration.", callback=checked_path),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show full tracebacks and library logs.")]
ModelOption = Annotated[str | None, typer.Option("--model", help=f"Model spec (default: {SHAPES_MODEL}).")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
IndexOption = Annotated[
    Path | None,
    typer.Option("--index", help="Index folder (default: the newest under indexes/).", callback=checked_path),
]
IndexArgument = Annotated[
    Path | None,
    typer.Argument(metavar="INDEX", help="Index folder (default: the newest under indexes/).", callback=checked_path),
]
BatchOption = Annotated[int | None, typer.Option("--batch-size", help="Images per forward pass.")]
WorkersOption = Annotated[int | None, typer.Option("--workers", help="Worker processes.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
DetailOption = Annotated[
    str | None,
    typer.Option(
        "--detail",
        help="normal (default), or high: small regions pooled from a second pass at 1.5x the input size, "
        "smaller windows, 1.5 times the regions; finds small objects, indexing takes longer (README).",
    ),
]
RefineOption = Annotated[
    bool | None,
    typer.Option(
        "--refine/--no-refine",
        help="Look at the best results again on their re-encoded pictures: boxes that fit small things, "
        "and those results reordered by how well the crop around each box matches its words "
        "(search.rerank, 20; search.crop_weight); two image encodings per refined result and one per "
        "crop (default: off).",
    ),
]
RefineScaleOption = Annotated[
    float | None,
    typer.Option(
        "--refine-scale",
        help="Boxes are searched again on the dense map at this multiple of the model's input size (default: 1.5).",
    ),
]
