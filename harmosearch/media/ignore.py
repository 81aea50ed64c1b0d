"""What in a photo folder is not a photo: system, thumbnail and trash files, and the user's rules.

All rules are gitignore lines, matched by pathspec's GitIgnoreSpec against paths relative to the
photo root, the later overriding the earlier:

1. hidden names (`.*`), unless include_hidden;
2. DEFAULT_RULES: files and folders that operating systems, NAS boxes and photo tools leave
   beside photos (AppleDouble `._*` files, `.DS_Store`, `@eaDir`, `Thumbs.db` ...), skipped
   even with include_hidden;
3. the lines of `.harmosearchignore` in the photo root, when there is one;
4. each `--exclude` pattern, in order.

So `!pattern` in the ignore file or an `--exclude` brings back what an earlier rule skipped,
except inside a skipped folder: a walk never enters one, as git never does.

    rules = IgnoreRules.load(root, excludes)
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not rules.skips_dir((here / d).as_posix())]
        files = [f for f in files if not rules.skips_file((here / f).as_posix())]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from harmosearch.errors import ConfigError

IGNORE_FILE = ".harmosearchignore"
HIDDEN_RULE = ".*"
DEFAULT_RULES: tuple[str, ...] = (
    "._*",  # AppleDouble: the resource forks macOS writes beside every file on non-Mac drives
    ".DS_Store",
    ".AppleDouble/",
    ".AppleDB/",
    ".AppleDesktop/",
    ".Spotlight-V100/",
    ".Trashes/",
    ".fseventsd/",
    ".TemporaryItems/",
    ".DocumentRevisions-V100/",
    "__MACOSX/",  # what macOS's zip adds
    "Thumbs.db",
    "ehthumbs.db",
    "ehthumbs_vista.db",
    "desktop.ini",
    "$RECYCLE.BIN/",
    "System Volume Information/",
    "@eaDir/",  # Synology's thumbnails
    "\\#recycle/",  # Synology's recycle bin
    "@Recycle/",  # QNAP's recycle bin
    ".@__thumb/",  # QNAP's thumbnails
    ".thumbnails/",  # freedesktop and Android thumbnails
    "*.lrdata/",  # Lightroom's previews
)


@dataclass(frozen=True)
class IgnoreRules:
    """Which paths under a photo root to skip; build with `load`."""

    lines: tuple[str, ...]
    origins: tuple[str, ...]  # where each line comes from, for `reason`
    spec: Any = field(repr=False, compare=False)

    @classmethod
    def load(cls, root: str | Path, excludes: Sequence[str] = (), include_hidden: bool = False) -> IgnoreRules:
        """The rules for a photo root: hidden names unless include_hidden, the defaults, the
        root's .harmosearchignore and the --exclude patterns. ConfigError (one line) when the
        ignore file cannot be read or a pattern is not valid gitignore syntax."""
        lines: list[str] = []
        origins: list[str] = []
        if not include_hidden:
            lines.append(HIDDEN_RULE)
            origins.append("hidden")
        lines.extend(DEFAULT_RULES)
        origins.extend(f"default rule {rule!r}" for rule in DEFAULT_RULES)
        ignore_file = Path(root) / IGNORE_FILE
        if ignore_file.is_file():
            try:
                text = ignore_file.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read {ignore_file}: {getattr(exc, 'strerror', None) or exc}") from None
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip() and not line.startswith("#"):
                    lines.append(line)
                    origins.append(f"{IGNORE_FILE} line {number}: {line.strip()!r}")
        for pattern in excludes:
            if pattern.strip():
                lines.append(pattern)
                origins.append(f"--exclude {pattern!r}")
        return cls(tuple(lines), tuple(origins), _compile(lines, origins))

    def skips_dir(self, rel_path: str) -> bool:
        """Whether a walk should not enter this folder (path relative to the root, "/"-separated)."""
        return self.spec.match_file(_relative(rel_path) + "/")

    def skips_file(self, rel_path: str) -> bool:
        """Whether this file (path relative to the root, "/"-separated) is not a photo to index."""
        return self.spec.match_file(_relative(rel_path))

    def reason(self, rel_path: str, is_dir: bool = False) -> str | None:
        """The rule that skips a path ("default rule '._*'", "--exclude 'raw/'" ...), or None."""
        result = self.spec.check_file(_relative(rel_path) + ("/" if is_dir else ""))
        return self.origins[result.index] if result.include else None


def _relative(rel_path: str) -> str:
    """The form patterns are matched against: "./a/b/" -> "a/b"."""
    return PurePosixPath(rel_path.strip("/")).as_posix()


def _compile(lines: list[str], origins: list[str]) -> Any:
    """One spec whose pattern i is line i (blank and comment lines were left out before, so
    `check_file(...).index` names the line's origin); each line compiled alone first, so an
    invalid one is reported by where it came from."""
    import re

    from pathspec import GitIgnoreSpec

    for line, origin in zip(lines, origins, strict=True):
        try:
            GitIgnoreSpec.from_lines([line])
        except (ValueError, re.error) as exc:
            raise ConfigError(f"not a valid ignore pattern ({origin}): {exc}") from None
    return GitIgnoreSpec.from_lines(lines)
