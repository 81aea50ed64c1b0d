"""The command line: parses, calls the library, prints. The only part of harmosearch that prints
and exits.

One module per command; `core` holds the typer app and what the commands share, `options` the
options several commands take. Heavy libraries (torch, open_clip, faiss, pyarrow) are imported
inside the commands that need them, so `harmosearch --help` answers at once.
"""

from harmosearch.cli import bench, demo, dupes, index, info, query, serve, synth, train
from harmosearch.cli.core import app, main

__all__ = ["app", "main"]

# In the order `harmosearch --help` lists them.
COMMANDS = (
    synth.synth,
    index.index,
    query.query,
    info.info,
    dupes.dupes,
    bench.bench,
    demo.demo,
    serve.serve,
    train.train,
)
for command in COMMANDS:
    # The whole first paragraph as the command list's line, wrapped: Click cuts its own to the
    # terminal's width with "...".
    summary = " ".join((command.__doc__ or "").split("\n\n")[0].split())
    app.command(short_help=summary)(command)
