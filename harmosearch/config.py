"""Configuration: a tree of frozen dataclasses with defaults.

Precedence, lowest to highest: the defaults below, a TOML file (`--config FILE`), CLI flags.
The resolved tree is written into every index manifest, checkpoint and bench result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmosearch.errors import ConfigError

DEFAULT_MODEL = "harmo-tiny"


@dataclass(frozen=True)
class EncoderConfig:
    model: str = DEFAULT_MODEL
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16
    dense_mode: str = "value"  # value (CLIPSelf/FineCLIP value path) | plain (last block as is)
    resize: str = "squash"  # squash (whole photo, aspect not kept) | shortest (centre crop, as CLIP)
    lexeme_mode: str = "token"  # token (text token space) | prompt (lexeme as its own prompt)
    lexeme_pool: str = "last"  # token mode: last (the span's final token) | mean (of the span's tokens)
    lexeme_prompt: str = "a photo of a {}"
    parser: str = "auto"  # auto (spaCy when installed) | rules | spacy
    batch_size: int = 32


@dataclass(frozen=True)
class RegionConfig:
    scales: tuple[float, ...] = (1.0, 0.5, 0.33, 0.25)  # window side as a fraction of the short side
    overlap: float = 0.5  # fraction of a window shared with its neighbour
    segments: tuple[float, ...] = (0.3, 0.5, 0.7)  # cosine thresholds for dense-map segment boxes; () = off
    max_regions: int = 96
    nms_iou: float = 0.7  # boxes overlapping more than this with a kept box are dropped
    dedup_cosine: float = 0.98  # region vectors this similar to a kept one are dropped


@dataclass(frozen=True)
class IndexConfig:
    index_type: str = "auto"  # auto | any faiss index_factory string
    exact_below: int = 200_000  # vectors; above this "auto" picks an approximate index
    include_hidden: bool = False
    workers: int = 2
    global_only: bool = False
    encode_in: str = "auto"  # auto | main | workers: where images are encoded (auto: workers on CPU)


@dataclass(frozen=True)
class SearchConfig:
    k: int = 10
    alpha: float = 0.5  # fused = alpha * global + (1 - alpha) * mean over lexemes of the best region
    region_candidates: int = 200  # regions fetched per lexeme before exact rescoring
    global_candidates: int = 100
    box_margin: float = 0.05  # the box shown is the largest region scoring within this of the best
    nprobe: int = 16
    ef_search: int = 64
    min_score: float | None = None


@dataclass(frozen=True)
class SynthConfig:
    n: int = 100
    seed: int = 0
    size: int = 224
    min_objects: int = 1
    max_objects: int = 4


@dataclass(frozen=True)
class TrainConfig:
    losses: tuple[str, ...] = ("gc", "lrc", "gr")
    w_lrc: float = 1.0
    w_gr: float = 1.0
    w_tight: float = 1.0
    loose_factor: float = 2.0  # TIGHT's loose box: the object's box grown this many times (side)
    # TIGHT's off-object boxes, drawn around every linked object: loose (the box grown
    # loose_factor times), part (a random box inside it, 35-65% of each side), shift (the box
    # moved by 50-90% of its size, so it covers part object, part background).
    distractors: tuple[str, ...] = ("loose", "part", "shift")
    gr_variant: str = "caption"  # caption (a) | crop (b)
    lexeme_source: str = "caption"  # caption (its parsed lexemes linked to boxes) | annotations (every phrase)
    match: str = "largest"  # several boxes fit a lexeme equally: largest | skip
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    workers: int = 2
    # Keep the decoded, resized training images in shared memory when they fit in this many MB
    # (the first epoch fills it; 0: decode every epoch).
    pixel_cache_mb: int = 4096
    precision: str = "auto"  # auto (bf16 autocast on CPU, fp16 on GPU) | fp32 | bf16 | fp16


@dataclass(frozen=True)
class Config:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> dict[str, Any]:
        """to_dict() as it reads back from JSON (tuples become lists), for comparisons with manifests."""
        return json.loads(json.dumps(self.to_dict(), default=list))

    def digest(self) -> str:
        """A short stable hash of the resolved values."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    return value


def _merge(node: Any, updates: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(type(node))
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else key
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"unknown config key {path!r} (known here: {known})")
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path} must be a table")
            changes[key] = _merge(current, value, path)
        else:
            changes[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(node, **changes)


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


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Config | None = None,
) -> Config:
    """Defaults (or `base`), then the TOML file, then dotted overrides such as {"search.k": 5}."""
    config = base or Config()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        config = _merge(config, data, "")
    if overrides:
        config = _merge(config, nest(overrides), "")
    validate(config)
    return config


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Rebuild a Config written by `Config.to_dict` (manifests, checkpoints)."""
    return _merge(Config(), data, "")


def validate(config: Config) -> None:
    enc, reg, sea, syn, tr = config.encoder, config.regions, config.search, config.synth, config.train
    checks = [
        (enc.dense_mode in ("value", "plain"), "encoder.dense_mode must be value or plain"),
        (enc.lexeme_mode in ("token", "prompt"), "encoder.lexeme_mode must be token or prompt"),
        (enc.lexeme_pool in ("mean", "last"), "encoder.lexeme_pool must be mean or last"),
        (enc.parser in ("auto", "rules", "spacy"), "encoder.parser must be auto, rules or spacy"),
        (enc.resize in ("squash", "shortest"), "encoder.resize must be squash or shortest"),
        (config.index.encode_in in ("auto", "main", "workers"), "index.encode_in must be auto, main or workers"),
        (
            enc.precision in ("auto", "fp32", "fp16", "bf16"),
            "encoder.precision must be auto, fp32, fp16 or bf16",
        ),
        (enc.batch_size >= 1, "encoder.batch_size must be at least 1"),
        (bool(reg.scales) and all(0 < s <= 1 for s in reg.scales), "regions.scales must lie in (0, 1]"),
        (0 <= reg.overlap < 1, "regions.overlap must lie in [0, 1)"),
        (reg.max_regions >= 1, "regions.max_regions must be at least 1"),
        (0 < reg.nms_iou <= 1, "regions.nms_iou must lie in (0, 1]"),
        (0 <= sea.alpha <= 1, "search.alpha must lie in [0, 1]"),
        (sea.k >= 1, "search.k must be at least 1"),
        (sea.region_candidates >= 1, "search.region_candidates must be at least 1"),
        (sea.box_margin >= 0, "search.box_margin must not be negative"),
        (syn.n >= 0, "synth.n must not be negative"),
        (syn.size >= 64, "synth.size must be at least 64 pixels"),
        (
            1 <= syn.min_objects <= syn.max_objects <= 4,
            "synth objects must satisfy 1 <= min_objects <= max_objects <= 4",
        ),
        (
            bool(tr.losses) and set(tr.losses) <= {"gc", "lrc", "gr", "tight"},
            "train.losses must be a non-empty subset of gc, lrc, gr, tight",
        ),
        (
            bool(tr.distractors) and set(tr.distractors) <= {"loose", "part", "shift"},
            "train.distractors must be a non-empty subset of loose, part, shift",
        ),
        (tr.gr_variant in ("caption", "crop"), "train.gr_variant must be caption or crop"),
        (tr.lexeme_source in ("caption", "annotations"), "train.lexeme_source must be caption or annotations"),
        (tr.match in ("largest", "skip"), "train.match must be largest or skip"),
        (tr.pixel_cache_mb >= 0, "train.pixel_cache_mb must not be negative"),
        (tr.batch_size >= 2, "train.batch_size must be at least 2 (contrastive losses need negatives)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
