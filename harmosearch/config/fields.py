"""Typed config fields, and values coerced into a tree of them.

Every field's type says what it accepts: `Literal` choices, and `Annotated` bounds (`Range`,
`NonEmpty`), checked whenever a section is built, so `Config()`, `dataclasses.replace(...)`, a
TOML file and a flag all pass the same checks. `merge` sets values from a TOML table, flags or a
stored config into a tree of sections, coercing each to its field's type.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from harmosearch.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Bounds of a number: low <= x (low < x when low_open), x <= high."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def check(self, value: float, where: str) -> None:
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        if self.high is not None and self.low is not None:
            if value > self.high or value < self.low or (self.low_open and value == self.low):
                left = "(" if self.low_open else "["
                raise ConfigError(f"{where} must lie in {left}{_num(self.low)}, {_num(self.high)}], got {_num(value)}")
        elif self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            if self.low == 0 and not self.low_open:
                raise ConfigError(f"{where} must not be negative, got {_num(value)}")
            bound = "above" if self.low_open else "at least"
            raise ConfigError(f"{where} must be {bound} {_num(self.low)}, got {_num(value)}")


@dataclass(frozen=True)
class NonEmpty:
    """A tuple that must hold at least one item."""


def _num(x: float) -> str:
    """Integers as written (2**64 stays exact); floats short (1e+300, 0.001)."""
    return str(x) if isinstance(x, int) else f"{x:g}"


Positive = Annotated[int, Range(1)]
NonNegative = Annotated[int, Range(0)]
Seed = Annotated[int, Range(0, 2**32 - 1)]  # what every random generator used here accepts
# More processes than this only exhaust memory (each holds a copy of the model or the decoders).
Workers = Annotated[int, Range(0, 64)]
Fraction = Annotated[float, Range(0, 1)]
Device = str  # auto | cpu | cuda | cuda:N, checked when the device is resolved
Precision = Literal["auto", "fp32", "fp16", "bf16"]
# The encoder's: int8 runs on CPUs (model.runtimes), with weights and activations quantised.
InferencePrecision = Literal["auto", "fp32", "fp16", "bf16", "int8"]


class Section:
    """Base of the config sections: on construction every field is coerced to its type and checked."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if not dataclasses.is_dataclass(value):
                object.__setattr__(self, f.name, coerce(value, hints[f.name], f"{self.SECTION}.{f.name}"))
        self.check()

    def check(self) -> None:
        """Rules that tie several fields together."""


def coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` converted to `hint` (a str from a flag or TOML, a list for a tuple), or ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        value = coerce(value, args[0], where)
        for rule in hint.__metadata__:
            if isinstance(rule, Range):
                rule.check(value, where)
            elif isinstance(rule, NonEmpty) and not value:
                raise ConfigError(f"{where} must not be empty")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        words = [w for a in inner if typing.get_origin(a) is Literal for w in typing.get_args(a)]
        if value in words:
            return value
        try:
            return coerce(value, inner[0], where)
        except ConfigError:
            if words and isinstance(value, str):
                raise ConfigError(f"{where} must be a number or {' or '.join(words)}, got {value!r}") from None
            raise
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(f"{where} must be one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(v, args[0], where) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if hint is int and isinstance(value, int):
            return value  # exact, however large: a float would round it
        if hint is int and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if hint is int:
            if not math.isfinite(number) or not number.is_integer():
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            return int(number)
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"search": {"alpha": 0.3}} -> {"search.alpha": 0.3}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, dotted + ".")
        else:
            flat[dotted] = value
    return flat


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"search.alpha": 0.3} -> {"search": {"alpha": 0.3}}; None values mean "not given"."""
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def merge(node: Any, updates: Mapping[str, Any], where: str, strict: bool = True) -> Any:
    """A copy of the section tree `node` with the nested `updates` set, each coerced to its field's
    type; a key the tree does not know is an error, or with `strict` False is left out."""
    hints = _hints(type(node))
    names = {f.name for f in dataclasses.fields(node)} - {"given"}
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            if not strict:
                continue
            raise ConfigError(f"unknown config key {path!r} (known here: {', '.join(sorted(names))})")
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path} must be a table")
            changes[key] = merge(current, value, path, strict)
        else:
            changes[key] = coerce(value, hints[key], path)
    return dataclasses.replace(node, **changes)
