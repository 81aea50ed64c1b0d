"""mkdocs hooks: fill the generated parts of the pages, and point links to the code at it.

A line `<!-- generated: NAME -->` becomes the table NAME of gen_benchmarks.TABLES, or, for
`config-reference`, `config-environment` and `config-defaults`, the configuration reference, the
environment variables and a TOML file of every default (gen_config). They are made from the
records and the config dataclasses at build time, so the site cannot disagree with them. Links
from a page to what is not on the site (the code, the benchmark records, these scripts) resolve
in a checkout, where tests/test_docs.py checks them; on the site they point at the repository
when mkdocs.yml names `repo_url`, and become plain code text otherwise.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))

import gen_benchmarks  # noqa: E402
import gen_config  # noqa: E402

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
SITE_FILES = (".md", ".png", ".jpg", ".svg")  # what the site is made of; docs/*.py are not on it
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def generated(name: str) -> str:
    if name == "config-reference":
        return gen_config.reference()
    if name == "config-environment":
        return gen_config.environment()
    if name == "config-defaults":
        return "```toml\n" + gen_config.defaults_toml() + "```"
    if name in gen_benchmarks.TABLES:
        return gen_benchmarks.TABLES[name]()
    raise ValueError(
        f"unknown generated part {name!r}; known: config-reference, config-environment, config-defaults, "
        + ", ".join(gen_benchmarks.TABLES)
    )


def outside_links(markdown: str, page_file: Path, repo_url: str | None) -> str:
    """Links to what is not on the site (code, records, docs/*.py) as repository links, or as
    code text."""

    def rewrite(match: re.Match[str]) -> str:
        text, target = match.groups()
        path = target.split("#", 1)[0]
        resolved = (page_file.parent / path).resolve()
        if not path or (resolved.is_relative_to(DOCS) and resolved.suffix in SITE_FILES):
            return match.group(0)
        relative = resolved.relative_to(DOCS.parent).as_posix()
        if repo_url:
            kind = "tree" if resolved.is_dir() else "blob"
            return f"[{text}]({repo_url.rstrip('/')}/{kind}/main/{relative})"
        return text if text.startswith("`") else f"`{text}`"

    return LINK.sub(rewrite, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = MARKER.sub(lambda m: generated(m.group(1)), markdown)
    return outside_links(markdown, Path(page.file.abs_src_path), config.get("repo_url"))
