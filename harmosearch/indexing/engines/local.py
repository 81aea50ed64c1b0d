"""The local engine: this process (and its DataLoader workers) encodes the files an index update
needs through the shared pipeline (`indexing.encode.encode_files`) and stages them in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harmosearch.config import Config
from harmosearch.indexing.encode import Encoded, Progress, encode_files
from harmosearch.store import save_chunk

CHUNK = 256  # images per staged chunk (a video's frames are never split between chunks)


def encode_locally(
    pending: Sequence[tuple[Path, str, list[list[float]] | None]],
    encoder: Any,
    config: Config,
    stage: Path,
    progress: Progress | None,
) -> dict[str, str]:
    """Encode `pending` (file, content hash, its user boxes; one file per hash), staging about
    every CHUNK images, a video's frames always together (nothing is kept in memory: assembly
    reads the staged chunks); returns hash -> reason for the files that could not be decoded."""
    failed: dict[str, str] = {}
    chunk_number = len(list(stage.glob("chunk_*.npz")))
    buffer: list[tuple[str, Encoded]] = []
    stream = encode_files(
        [path for path, _, _ in pending],
        encoder,
        config,
        user_boxes=[boxes for _, _, boxes in pending],
        progress=progress,
    )
    for position, outcome in _by_file(stream):
        sha = pending[position][1]
        if isinstance(outcome, str):
            failed[sha] = outcome
            continue
        buffer.extend((sha, item) for item in outcome)
        if len(buffer) >= CHUNK:
            save_chunk(stage, chunk_number, buffer)
            chunk_number, buffer = chunk_number + 1, []
    save_chunk(stage, chunk_number, buffer)
    return failed


def _by_file(stream: Any) -> Iterator[tuple[int, list[Encoded] | str]]:
    """encode_files' stream with each file's pictures together: (position, [Encoded, ...]) per
    file, or (position, reason) for a file that failed."""
    current, pictures = None, []
    for position, outcome in stream:
        if isinstance(outcome, str):
            yield position, outcome
            continue
        if position != current and current is not None:
            yield current, pictures
            pictures = []
        current = position
        pictures.append(outcome)
    if current is not None:
        yield current, pictures
