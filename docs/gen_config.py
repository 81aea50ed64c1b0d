"""The configuration reference, generated from the config dataclasses (harmosearch/config/sections.py):
every key with its type, bounds, default and the comments written beside it, so that what the
documentation says cannot drift from what the code does. docs/hooks.py puts it into
docs/configuration.md when the site is built; `python docs/gen_config.py` prints it."""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
import types
import typing
from typing import Annotated, Any, Literal

from harmosearch.config import ENVIRONMENT, Config
from harmosearch.config.fields import NonEmpty, Range


def sections() -> list[tuple[str, type]]:
    """(name, dataclass) of every section of Config, in its order."""
    return [(f.name, type(getattr(Config(), f.name))) for f in dataclasses.fields(Config) if f.name != "given"]


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(rule: Range) -> str:
    if rule.low is not None and rule.high is not None:
        return f"in {'(' if rule.low_open else '['}{_number(rule.low)}, {_number(rule.high)}]"
    if rule.low is not None:
        return f"{'>' if rule.low_open else '≥'} {_number(rule.low)}"
    return ""


def describe_type(hint: Any) -> str:
    """A field's type in words: "number in [0, 1]", "one of `value`, `plain`", "list of ..."."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        base = describe_type(args[0])
        rules = [_bounds(r) for r in hint.__metadata__ if isinstance(r, Range)]
        empty = any(isinstance(r, NonEmpty) for r in hint.__metadata__)
        return ("non-empty " if empty else "") + " ".join(part for part in [base, *rules] if part)
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(parts) + ("; may be unset" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is tuple:
        return f"list of {describe_type(args[0])}"
    return {int: "integer", float: "number", bool: "true or false", str: "text"}.get(hint, str(hint))


def toml_value(value: Any) -> str:
    """A default as it is written in a TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def comments(cls: type) -> dict[str, str]:
    """Field name -> the comments written beside it in the source: the block of comment lines
    just above the field and the comment at the end of its line."""
    source = inspect.getsource(cls)
    by_line: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            by_line[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    for number, text in enumerate(lines, start=1):
        name = text.strip().split(":", 1)[0]
        if not name.isidentifier() or ":" not in text or text.startswith((" " * 8, "\t\t")):
            continue
        above, row = [], number - 1
        while row in by_line and lines[row - 1].strip().startswith("#"):
            above.insert(0, by_line[row])
            row -= 1
        beside = by_line.get(number, "") if not text.strip().startswith("#") else ""
        found[name] = " ".join(part for part in [*above, beside] if part)
    return found


def rows(name: str, cls: type) -> list[tuple[str, str, str, str]]:
    """(key, type, default, comment) for every field of a section."""
    hints = typing.get_type_hints(cls, include_extras=True)
    notes = comments(cls)
    default = getattr(Config(), name)
    return [
        (f"{name}.{f.name}", describe_type(hints[f.name]), _default(getattr(default, f.name)), notes.get(f.name, ""))
        for f in dataclasses.fields(cls)
    ]


def _default(value: Any) -> str:
    return "unset" if value is None else toml_value(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def environment() -> str:
    """The environment variables that set config keys."""
    lines = ["| variable | sets |", "|---|---|"]
    lines += [f"| `{variable}` | `{key}` |" for variable, key in ENVIRONMENT.items()]
    return "\n".join(lines)


def reference() -> str:
    """Markdown: one table per section, every key with its type, default and comment."""
    out = []
    for name, cls in sections():
        out.append(f"### [{name}]\n")
        doc = inspect.getdoc(cls)
        if doc and not doc.startswith(cls.__name__ + "("):
            out.append(" ".join(doc.split()) + "\n")
        out.append("| key | type | default | what it does |\n|---|---|---|---|")
        for key, kind, default, note in rows(name, cls):
            out.append(f"| `{key}` | {_cell(kind)} | `{_cell(default)}` | {_cell(note)} |")
        out.append("")
    return "\n".join(out)


def defaults_toml() -> str:
    """A TOML file holding every key at its default: copied as is, it changes nothing. Keys whose
    default is unset are commented out (TOML has no null)."""
    out = []
    for name, cls in sections():
        out.append(f"[{name}]")
        for f in dataclasses.fields(cls):
            value = getattr(getattr(Config(), name), f.name)
            line = f"{f.name} = {toml_value(value)}" if value is not None else f"# {f.name} =   (unset)"
            out.append(line)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(reference())
