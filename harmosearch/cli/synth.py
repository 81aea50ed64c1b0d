"""harmosearch synth: synthetic scenes to train and benchmark on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from harmosearch.cli.core import interruptible, out, progress_bars, resolve
from harmosearch.cli.options import checked_path


@interruptible
def synth(
    ctx: typer.Context,
    out_dir: Annotated[
        Path,
        typer.Argument(
            metavar="OUT_DIR", help="Folder to write images/ and annotations.json into.", callback=checked_path
        ),
    ],
    n: Annotated[int | None, typer.Option("--n", help="Number of scenes (default: 100).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default: 0).")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Image side in pixels (default: 224).")] = None,
    objects: Annotated[
        str | None,
        typer.Option(
            "--objects",
            help="mixed (default: 1-4 objects of 17-36% of the side), small (2-5 of 22-48 px in 224) "
            "or large (1-3 of 50-95 px).",
        ),
    ] = None,
    world: Annotated[
        str | None,
        typer.Option(
            "--world",
            help="flat (default: shapes on drawn textures), photo (shaded, overlapping shapes on photographs, "
            "with clutter, blur, noise and JPEG) or mixed (either, one scene in two).",
        ),
    ] = None,
    photos: Annotated[
        str | None,
        typer.Option("--photos", help="Photo world: the photographs of the train (default), val or test split."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes used to draw.", min=1, max=64)] = 1,
) -> None:
    """Generate synthetic scenes (coloured shapes with boxes, phrases and captions)."""
    config = resolve(
        ctx,
        **{
            "synth.n": n,
            "synth.seed": seed,
            "synth.size": size,
            "synth.objects": objects,
            "synth.world": world,
            "synth.photos": photos,
        },
    )
    from harmosearch.synth import generate

    with progress_bars() as progress:
        data = generate(
            out_dir, config.synth, workers=workers, progress=_counter(progress, "drawing scenes", config.synth.n)
        )
    out.print(
        f"wrote {len(data['images'])} scenes, {len(data['annotations'])} objects and "
        f"{len(data['captions'])} captions to {out_dir}"
    )


def _counter(progress: Callable[[str, int, int], None], stage: str, total: int) -> Callable[[int], None]:
    """A progress(advanced_by) callback that keeps the running count for a stage."""
    done = 0

    def advance(k: int) -> None:
        nonlocal done
        done += k
        progress(stage, done, total)

    return advance
