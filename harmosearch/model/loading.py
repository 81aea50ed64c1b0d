"""Model loading: a --model spec resolved to an open_clip model and its weights, and a trained
model written back as a folder that loads the same way.

Specs: the bundled models (harmo-mix, harmo-tiny, harmo-tiny-gc), NAME:TAG, NAME:/weights.pt, NAME:random, hf-hub:ID,
local-dir:PATH, or a path to a harmosearch checkpoint or open_clip folder. A checkpoint is an
open_clip local-dir folder plus harmosearch.json (its resolved config and vocabulary).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmosearch.config import BUNDLED_MODELS, DEFAULT_MODEL, SHAPES_MODEL, Config
from harmosearch.errors import ModelLoadError
from harmosearch.folders import is_dir, is_file, kind
from harmosearch.model.clip_adapter import architecture_config, create_model, preprocess_config

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).parent
BUNDLED_DIR = PACKAGE_DIR / "bundled"
CHECKPOINT_META = "harmosearch.json"
RANDOM_TAG = "random"
LOCAL_MODELS = "a local model: --model local-dir:PATH (an open_clip folder) or --model NAME:/path/to/weights.pt"
HINT = f"pretrained weights cannot be fetched offline: point at {LOCAL_MODELS}"
FETCH_HINT = f"use --model {SHAPES_MODEL} (the bundled model; it knows drawn shapes only) or {LOCAL_MODELS}"
# How long the model hub may take to answer before harmosearch takes the machine to be offline:
# without this, a first run offline spends most of a minute in huggingface_hub's retries.
HUB_TIMEOUT_S = 2.0
HUB_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class ModelSource:
    """A resolved --model spec: an open_clip name plus weights, or a local open_clip folder."""

    spec: str
    name: str  # open_clip model name, or "local-dir:PATH" / "hf-hub:ID"
    pretrained: str | None  # tag or weights file, for plain names


def bundled_models() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "open_clip_config.json").is_file())


def resolve_spec(spec: str) -> ModelSource:
    """Forms: harmo-mix (bundled), NAME:TAG, NAME:/weights.pt, NAME:random, hf-hub:ID,
    local-dir:PATH, or a path to a harmosearch checkpoint / open_clip folder."""
    spec = spec.strip()
    if not spec:
        raise ModelLoadError(f"empty model spec; try --model {SHAPES_MODEL}")
    if spec.startswith(("hf-hub:", "local-dir:")):
        if spec.startswith("local-dir:"):
            folder = Path(spec.removeprefix("local-dir:")).expanduser()
            if not is_file(folder / "open_clip_config.json"):
                raise ModelLoadError(f"model {spec!r}: {folder} holds no open_clip_config.json")
            return ModelSource(spec, f"local-dir:{folder}", None)
        return ModelSource(spec, spec, None)
    bundled = BUNDLED_DIR / spec
    if is_file(bundled / "open_clip_config.json"):
        return ModelSource(spec, f"local-dir:{bundled}", None)
    path = Path(spec).expanduser()
    if is_dir(path):
        if not is_file(path / "open_clip_config.json"):
            raise ModelLoadError(f"model {spec!r}: folder holds no open_clip_config.json")
        return ModelSource(spec, f"local-dir:{path}", None)
    if spec in BUNDLED_MODELS:
        raise ModelLoadError(
            f"the bundled model {spec} is missing from this installation; reinstall "
            "harmosearch or rebuild it with benchmarks/make_bundled.py (its docstring has the command)"
        )
    name, sep, tag = spec.partition(":")
    if not sep or not tag:
        raise ModelLoadError(
            f"model {spec!r} names no weights; use NAME:TAG (e.g. ViT-B-16:openai), "
            f"NAME:/path/to/weights.pt, NAME:random, local-dir:PATH or {SHAPES_MODEL}"
        )
    return ModelSource(spec, name, tag)


def load_model(source: ModelSource) -> tuple[Any, dict[str, Any]]:
    """The open_clip model behind a resolved spec, and the harmosearch.json beside a checkpoint's weights."""
    offline = fetches_from_hub(source) and not hub_reachable()
    if offline and not maybe_cached(source):
        raise ModelLoadError(fetch_failed(source.spec))  # before torch and open_clip load: at once
    import torch

    pretrained = None if source.pretrained == RANDOM_TAG else source.pretrained
    try:
        with quiet_hub(offline):
            if source.pretrained == RANDOM_TAG:
                # Random weights are for tests and training starts: reproducible, without
                # touching the caller's random state.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = create_model(source.name, None)
            else:
                model = create_model(source.name, pretrained)
    except Exception as exc:  # open_clip raises RuntimeError/ValueError/OSError variously
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if offline or "download" in reason.lower():
            # open_clip fetches through huggingface_hub, which says at length that it found no
            # connection and no cached copy: one line says that, the details go to --debug.
            logger.debug("fetching %s failed: %s", source.spec, reason)
            raise ModelLoadError(fetch_failed(source.spec)) from None
        if len(reason) > 200:
            reason = reason[:200] + "..."
        raise ModelLoadError(f"could not load model {source.spec!r}: {reason}; {HINT}") from None
    meta: dict[str, Any] = {}
    if source.name.startswith("local-dir:"):
        meta_file = Path(source.name.removeprefix("local-dir:")) / CHECKPOINT_META
        if meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ModelLoadError(f"model {source.spec!r}: cannot read {meta_file}: {exc}") from None
    return model, meta


def fetches_from_hub(source: ModelSource) -> bool:
    """Whether loading the spec may download from the Hugging Face hub: hf-hub:ID, and NAME:TAG
    where TAG is a pretrained tag rather than a weights file."""
    if source.name.startswith("hf-hub:"):
        return True
    tag = source.pretrained
    if source.name.startswith("local-dir:") or tag in (None, RANDOM_TAG):
        return False
    return not (os.sep in tag or "/" in tag or Path(tag).suffix)


def fetch_failed(spec: str) -> str:
    """The one line that says a model's weights are neither cached nor downloadable now."""
    default = " (the default model)" if spec == DEFAULT_MODEL else ""
    return (
        f"could not fetch model {spec!r}{default}: it is not in the Hugging Face cache and "
        f"cannot be downloaded now (no connection?); {FETCH_HINT}"
    )


def maybe_cached(source: ModelSource) -> bool:
    """Whether the Hugging Face cache may hold the spec's weights: the repository's folder for
    hf-hub:ID; for NAME:TAG, whose repository only open_clip's registry knows (and importing
    open_clip takes seconds), any open_clip weights at all. False only when they cannot be there."""
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    if source.name.startswith("hf-hub:"):
        return (cache / ("models--" + source.name.removeprefix("hf-hub:").replace("/", "--"))).is_dir()
    return any(cache.glob("models--*/snapshots/*/open_clip_*"))


def hub_offline_by_choice() -> bool:
    """HF_HUB_OFFLINE, as huggingface_hub reads it: the user said there is no hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the model hub (HF_ENDPOINT, or the proxy that reaches it) accepts a connection
    within `timeout` seconds: the name lookup and the connect each get that long. HF_HUB_OFFLINE
    counts as unreachable."""
    import urllib.parse
    import urllib.request

    if hub_offline_by_choice():
        return False
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    addresses = _lookup(host, port, timeout)
    for family, socket_type, protocol, _, address in addresses or []:
        with contextlib.suppress(OSError), socket.socket(family, socket_type, protocol) as probe:
            probe.settimeout(timeout)
            probe.connect(address)
            return True
    return False


def _lookup(host: str, port: int, timeout: float) -> list[Any] | None:
    """getaddrinfo with a time limit (it has none of its own): None when it fails or is too
    slow. It runs in a daemon thread, which a lookup that hangs cannot keep the process alive in."""
    found: list[Any] = []

    def look() -> None:
        with contextlib.suppress(OSError, UnicodeError):
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))

    worker = threading.Thread(target=look, name="harmosearch-hub-lookup", daemon=True)
    worker.start()
    worker.join(timeout)
    return None if worker.is_alive() else found


@contextlib.contextmanager
def quiet_hub(offline: bool) -> Iterator[None]:
    """Around open_clip's loading: huggingface_hub offline when the hub is unreachable (a cached
    copy still loads; a missing one fails at once instead of after minutes of retries), and the
    libraries' warnings and log lines kept off the screen unless --debug asked for them."""
    debugging = logging.getLogger().isEnabledFor(logging.DEBUG)
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    with warnings.catch_warnings(), _hub_offline(offline):
        if not debugging:
            warnings.simplefilter("ignore")
            hub_log.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            hub_log.setLevel(level)


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub's offline mode (what HF_HUB_OFFLINE=1 sets when it is imported) for the
    duration, whether or not it was imported before."""
    if not offline or hub_offline_by_choice():
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def canonical_spec(spec: str) -> str:
    """A spec naming a local folder, made absolute, so an index or checkpoint that stores it
    works from any working directory; other specs are returned unchanged."""
    prefix = "local-dir:" if spec.startswith("local-dir:") else ""
    path = Path(spec.removeprefix(prefix)).expanduser()
    if spec in bundled_models() or kind(path) not in ("file", "folder"):
        return spec
    return f"{prefix}{path.resolve()}"


def model_config_of(source: ModelSource) -> dict[str, Any]:
    """The open_clip architecture config behind a resolved spec (to write loadable bundles)."""
    if source.name.startswith("local-dir:"):
        folder = Path(source.name.removeprefix("local-dir:"))
        return json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))["model_cfg"]
    cfg = architecture_config(source.name)
    if cfg is None:
        raise ModelLoadError(f"no open_clip config for {source.spec!r}; cannot write a loadable checkpoint")
    return cfg


def write_model_bundle(
    model: Any,
    model_cfg: dict[str, Any],
    out_dir: Path,
    config: Config,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Save `model` as an open_clip local-dir folder plus harmosearch.json (resolved config),
    so `--model local-dir:OUT` or `--model OUT` loads it. Files are written then renamed."""
    import torch
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pre = preprocess_config(model)
    open_clip_cfg = {"model_cfg": model_cfg, "preprocess_cfg": pre}
    dtype = torch.float16 if half else torch.float32
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {"config": config.to_dict(), **(extra or {})}
    for name, write in (
        ("open_clip_model.safetensors", lambda p: save_file(state, str(p))),
        ("open_clip_config.json", lambda p: p.write_text(json.dumps(open_clip_cfg, indent=2, default=list))),
        (CHECKPOINT_META, lambda p: p.write_text(json.dumps(meta, indent=2, default=list))),
    ):
        tmp = out_dir / (name + ".tmp")
        write(tmp)
        tmp.replace(out_dir / name)
    return out_dir
