"""What `harmosearch index` reports when it is done: what changed, what was encoded, how fast."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class IndexReport:
    """What one `build_index` run did, counted as it goes; `harmosearch index` prints it."""

    index: Path
    images: int = 0
    regions: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    renamed: int = 0
    unchanged: int = 0
    encoded: int = 0
    resumed: int = 0  # images taken from an interrupted run's staged work
    videos: int = 0  # of the files indexed
    frames: int = 0  # image rows that are video frames
    moved_from: str = ""  # the photo folder the index was built from, when it was elsewhere
    moved: int = 0  # images of a moved photo folder recognised by content, not encoded again
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    committed: bool = False
    model: str = ""
    made_with: str = ""  # how the index's image vectors are made, e.g. "int8 (onnxruntime)"

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0
