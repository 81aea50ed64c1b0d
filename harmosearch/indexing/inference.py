"""The inference path an index keeps: its image vectors are all made one way.

An index records how its image vectors were made (the encoder identity's precision and runtime,
e.g. int8 through ONNX Runtime) and writes the resolved settings into its manifest. An update
makes new vectors the same way unless the user names another precision or runtime, which is
refused with a request for --rebuild: vectors made at two precisions would sit in one index,
their scores a little apart. Queries may be encoded any way (search/index.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from harmosearch.config import Config
from harmosearch.errors import ConfigError, IndexStoreError

KEYS = ("encoder.precision", "encoder.runtime")
# What an index that records no path was made with: auto meant fp32 on a CPU before the CPU
# runtimes existed, and fp32 is the reference on any device.
UNRECORDED = {"precision": "fp32", "runtime": "torch"}


def made_with(identity: dict[str, Any]) -> dict[str, str]:
    """The precision and runtime an index's encoder identity records (UNRECORDED for older ones)."""
    if not identity.get("precision"):
        return dict(UNRECORDED)
    return {"precision": identity["precision"], "runtime": identity["runtime"]}


def kept_settings(config: Config, identity: dict[str, Any]) -> Config:
    """`config` with the index's precision and runtime, where the user set neither (one set
    names a way of its own: the other is not taken from the index)."""
    if any(key in config.user_keys() for key in KEYS):
        return config
    return config.over({"encoder": made_with(identity)}, KEYS)


def load_like_index(config: Config, index: Path) -> Any:
    """The encoder for an update that keeps the index's path, or an error that says why the path
    cannot run here and how to go on."""
    from harmosearch.model.encoder import load_encoder

    try:
        return load_encoder(config)
    except ConfigError as exc:
        path = f"{config.encoder.precision} ({config.encoder.runtime})"
        raise IndexStoreError(
            f"index {index} was built with {path} image vectors, which cannot be made here: {exc}; "
            "or re-run with --rebuild to re-encode everything here"
        ) from None


def check_same_path(index: Path, identity: dict[str, Any], encoder: Any) -> None:
    """Refuse an update whose encoder makes image vectors otherwise than the index's were made."""
    stored, here = made_with(identity), made_with(encoder.identity.to_dict())
    if stored != here and encoder.identity.precision:
        was, now = (f"{p['precision']} ({p['runtime']})" for p in (stored, here))
        raise IndexStoreError(
            f"index {index} holds image vectors made in {was}, and this update would make them in {now}; "
            "leave encoder.precision and encoder.runtime unset to keep the index's way, "
            "or re-run with --rebuild to re-encode everything"
        )


def recorded(config: Config, encoder: Any) -> Config:
    """`config` with the precision and runtime the encoder resolved them to, as the manifest
    records them (an encoder that records none leaves them as they are)."""
    identity = encoder.identity
    if not identity.precision:
        return config
    return replace(config, encoder=replace(config.encoder, precision=identity.precision, runtime=identity.runtime))
