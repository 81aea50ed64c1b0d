"""The front door and the documentation: every relative link resolves, the README's figures are
the records' figures, and the configuration reference is the configuration."""

import importlib.util
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from harmosearch.config import Config, load_config
from harmosearch.config.fields import flatten

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
INLINE = re.compile(r"!?\[(?:[^\]]*)\]\(([^)\s]+)\)")
DEFINED = re.compile(r"^\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def docs_module(name):
    """docs/NAME.py, loaded as the site build loads it: with docs/ importable (the benchmark
    tables' modules import each other)."""
    if str(DOCS) not in sys.path:
        sys.path.append(str(DOCS))
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it is being made
    spec.loader.exec_module(module)
    return module


def slug(heading):
    """An anchor as mkdocs (Python-Markdown's toc) makes it; GitHub agrees for these headings."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(line.lstrip("#").strip()) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def links(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans hold examples, not links
    return INLINE.findall(text) + DEFINED.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target) or target == "#":
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.name}")
    assert not broken, f"{page.name}:\n" + "\n".join(broken)


def test_link_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# There\n\n## A `code` heading\n")
    page.write_text("[ok](there.md#a-code-heading) [bad](missing.md) [bad anchor](there.md#nowhere)\n")
    assert links(page) == ["there.md#a-code-heading", "missing.md", "there.md#nowhere"]
    assert anchors(tmp_path / "there.md") == {"there", "a-code-heading"}


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_the_readme_figures_are_the_records_figures():
    """The headline table, the indexing time, the CPU paths' speeds, high detail's cost and the
    photo world's figures are what docs/gen_quality.py and docs/gen_speed.py make of the records
    today; a new record or a changed default shows here first."""
    quality, speed = docs_module("gen_quality"), docs_module("gen_speed")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert quality.headline() in readme
    minutes = speed.minutes_per_1000_photos()
    for page in ("README.md", "docs/getting-started.md"):
        assert f"about {minutes} per 1,000 photos" in " ".join((ROOT / page).read_text(encoding="utf-8").split()), page
    assert speed.cpu_paths_sentence() in " ".join(readme.split())  # images/s per CPU path
    assert speed.detail_sentence() in " ".join(readme.split())  # high detail's cost and quality
    assert quality.photo_sentence() in " ".join(readme.split())  # the photo world's default row


def test_every_generated_table_is_made_and_every_marker_known():
    sys.path.insert(0, str(DOCS))
    try:
        hooks = docs_module("hooks")
    finally:
        sys.path.remove(str(DOCS))
    markers = {m for page in DOCS.glob("*.md") for m in hooks.MARKER.findall(page.read_text(encoding="utf-8"))}
    assert set(docs_module("gen_benchmarks").TABLES) <= markers
    for name in markers:
        made = hooks.generated(name)
        assert made.strip() and "not measured at today's defaults" not in made, name


def test_the_config_reference_lists_every_key_with_its_default():
    config = docs_module("gen_config")
    reference = config.reference()
    for key, value in flatten(Config().to_json()).items():
        default = "unset" if value is None else config.toml_value(value)
        row = re.search(rf"^\| `{re.escape(key)}` \| [^|]+ \| `([^`]*)` \|", reference, re.MULTILINE)
        assert row, f"{key} is missing from the reference"
        assert row.group(1) == default.replace("|", "\\|"), key


def test_the_file_of_defaults_changes_nothing(tmp_path):
    config = docs_module("gen_config")
    (tmp_path / "defaults.toml").write_text(config.defaults_toml(), encoding="utf-8")
    loaded = load_config(tmp_path / "defaults.toml", environ={})
    assert loaded == Config()
    unset = {k for k, v in flatten(Config().to_json()).items() if v is None}
    assert set(flatten(Config().to_json())) - unset == set(loaded.given)


@pytest.mark.skipif(shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None, reason="docs extra")
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
