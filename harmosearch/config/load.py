"""Where a Config comes from: the defaults, environment variables, a TOML file and flags, or a
config stored in an index manifest or checkpoint."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from harmosearch.config.fields import Range, coerce, flatten, merge
from harmosearch.config.sections import MAX_LOSS_WEIGHT, SHAPES_MODEL, Config
from harmosearch.errors import ConfigError

# Environment variables and the config keys they set (between the defaults and a TOML file).
ENVIRONMENT = {
    "HARMOSEARCH_INDEXES": "paths.indexes",
    "HARMOSEARCH_CACHE": "paths.cache",
    "HARMOSEARCH_STATE": "paths.state",
    "HARMOSEARCH_MODEL": "encoder.model",
}


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Config | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults (or `base`), the environment (ENVIRONMENT), the TOML file, then dotted overrides
    such as {"search.k": 5} (None: not given). Every key set on the way is recorded as given."""
    config = base or Config()
    environ = os.environ if environ is None else environ
    from_env = {key: environ[name] for name, key in ENVIRONMENT.items() if environ.get(name)}
    if from_env:
        config = config.with_values(from_env)
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a folder") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            config = merge(config, data, "")
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        config = dataclasses.replace(config, given=config.given | frozenset(flatten(data)))
    if overrides:
        config = config.with_values(overrides)
    return config


def shapes_model_unless_named(config: Config) -> Config:
    """The config with the bundled model unless a model was named (a flag, HARMOSEARCH_MODEL or
    the config file): the demo, bench and train work in the synthetic world it knows."""
    return config if "encoder.model" in config.given else config.with_values({"encoder.model": SHAPES_MODEL})


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Rebuild a Config written by `Config.to_dict` (manifests, checkpoints); keys that older or
    newer versions wrote and this one does not know are ignored."""
    return merge(Config(), data, "", strict=False)


def parse_weights(text: str | None) -> dict[str, float]:
    """Loss weights as given on the command line: "lrc=0.5,gr=2,tight=1" or "0.5,2" (w_lrc, w_gr)
    -> {"train.w_lrc": 0.5, "train.w_gr": 2.0, ...}."""
    if not text:
        return {}
    named: dict[str, float] = {}
    for i, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep:
            key, value = ("lrc", "gr")[i] if i < 2 else "?", part
        key = key.strip()
        if key not in ("lrc", "gr", "tight"):
            raise ConfigError(f"unknown loss weight {key!r} in {text!r}; use lrc=W,gr=W,tight=W")
        named[f"train.w_{key}"] = coerce(value.strip(), Annotated[float, Range(0, MAX_LOSS_WEIGHT)], f"weight {key}")
    return named
