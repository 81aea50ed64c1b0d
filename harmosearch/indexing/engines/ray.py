"""The Ray engine: actors on a Ray cluster encode shards of the files an index update needs.

Each actor loads the model once and runs the shared pipeline (`encode.encode_files`) over one
shard of files at a time. It stages the shard's vectors beside the index as one chunk, in the
format the local engine stages (`store.save_chunk`), named after the shard's content hashes: a
retried shard rewrites the same chunk, and a re-run resumes from the staged chunks with either
engine. The driver hands shards to actors as they free up (Ray's `ActorPool`), reports progress as
shards finish, then reads the chunks back; `indexing.assemble` makes the generation exactly as
for the local engine, so an update keeps, reuses and removes rows the same way.

Ray restarts an actor whose process dies (`ray.max_retries` times) and runs the shard it held
again; staged shards stay whatever happens, so nothing encoded is lost. The photos and the index
folder must be at the same paths on every node (a shared file system): each actor checks that it
sees both before any work, and that it loaded the same weights as the driver.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from harmosearch.config import Config, RayConfig
from harmosearch.errors import EngineError

Shard = list[tuple[str, str, list[list[float]] | None]]  # (file, content hash, its user boxes)
Progress = Callable[[str, int, int], None]
CONNECT_TIMEOUT = 5.0  # seconds to reach the head at ray.address before giving up
TOKEN = ".ray-engine"  # the driver writes a fresh token into the staging folder; every actor reads it back


def encode_on_ray(
    pending: Sequence[tuple[Path, str, list[list[float]] | None]],
    identity: Any,
    config: Config,
    stage: Path,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Encode `pending` (file, content hash, user boxes or None; one file per hash) on Ray actors
    configured by config.ray, staging each shard in `stage` (where the driver's assembly reads
    them); returns hash -> the reason for files that could not be decoded. `identity` is the
    driver's EncoderIdentity: every actor must match it."""
    ray = _import_ray()
    shards = make_shards(pending, config.ray.shard_size)
    if not shards:
        return {}
    token = secrets.token_hex(8)
    (stage / TOKEN).write_text(token)
    started = _connect(ray, config.ray)
    try:
        actors = _start_actors(ray, config, stage, token, min(config.ray.workers, len(shards)))
        _check_actors(ray, actors, shards[0][0][0], identity)
        failed = _run(ray, actors, shards, len(pending), progress)
    except ray.exceptions.RayError as exc:
        raise EngineError(
            f"the Ray engine failed ({_last_line(exc)}); the shards encoded so far are staged, "
            "and a re-run resumes from them"
        ) from None
    finally:
        if started:
            ray.shutdown()
    return failed


def make_shards(pending: Sequence[tuple[Path, str, list[list[float]] | None]], size: int) -> list[Shard]:
    """`pending` in order, `size` files per shard (a video is one file, its frames never split)."""
    items = [(str(path), sha, boxes) for path, sha, boxes in pending]
    return [items[i : i + size] for i in range(0, len(items), size)]


def shard_key(shard: Shard) -> str:
    """A shard's chunk name: a digest of its content hashes, the same whenever it is encoded again."""
    return hashlib.sha256("\n".join(sha for _, sha, _ in shard).encode()).hexdigest()[:20]


class ShardEncoder:
    """A Ray actor: one model, loaded when the actor starts (again after a restart), that encodes
    one shard per call."""

    def __init__(self, config: Config, stage: str, token: str, gpus: float) -> None:
        from harmosearch.model.device import device_for_gpus
        from harmosearch.model.encoder import load_encoder

        # A CPU actor is one of many Ray runs side by side: it decodes and encodes in its own
        # process. A GPU actor keeps the DataLoader workers that feed its GPU.
        workers = config.index.workers if gpus > 0 else 0
        self.config = replace(
            config,
            encoder=replace(config.encoder, device=device_for_gpus(gpus)),
            index=replace(config.index, workers=workers),
        )
        self.stage = Path(stage)
        self.token = token
        self.encoder = load_encoder(self.config)

    def check(self, photo: str) -> tuple[str, dict[str, Any]]:
        """(the problem this actor has with its files, or "", the identity of its model)."""
        where = f"{socket.gethostname()} (pid {os.getpid()})"
        marker = self.stage / TOKEN
        if not marker.is_file() or marker.read_text().strip() != self.token:
            return (
                f"the Ray worker on {where} cannot see the index folder {self.stage.parent}; "
                "put the index on storage every node mounts at the same path",
                {},
            )
        if not Path(photo).is_file():
            return (
                f"the Ray worker on {where} cannot see {photo}; the photos must be at the same path on every node",
                {},
            )
        return "", self.encoder.identity.to_dict()

    def encode(self, shard: Shard) -> tuple[int, dict[str, str]]:
        """Encode a shard and stage it as one chunk: (files done, hash -> reason for each file
        that could not be decoded)."""
        from harmosearch.indexing.encode import encode_files
        from harmosearch.store import save_chunk

        records: list[tuple[str, Any]] = []
        failed: dict[str, str] = {}
        stream = encode_files(
            [Path(path) for path, _, _ in shard], self.encoder, self.config, user_boxes=[b for _, _, b in shard]
        )
        for position, outcome in stream:
            sha = shard[position][1]
            if isinstance(outcome, str):
                failed[sha] = outcome
            else:
                records.append((sha, outcome))  # a video's frames arrive together, in time order
        save_chunk(self.stage, shard_key(shard), records)
        return len(shard), failed


def _import_ray() -> Any:
    try:
        import ray
        import ray.util
    except ImportError:
        raise EngineError("the ray engine needs Ray: pip install 'harmosearch[dist]'") from None
    return ray


def _connect(ray: Any, rc: RayConfig) -> bool:
    """Join the cluster at rc.address, or start a local Ray sized for the actors; False when Ray
    was already initialised in this process (the caller's cluster is used as it is)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if rc.address:
        check_reachable(rc.address)
    try:
        if rc.address:
            ray.init(address=rc.address, **quiet)
        else:
            cpus = max(len(os.sched_getaffinity(0)), math.ceil(rc.workers * rc.cpus_per_worker))
            ray.init(num_cpus=cpus, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {rc.address}" if rc.address else "a local Ray"
        raise EngineError(f"cannot start {where}: {_last_line(exc)}") from None
    return True


def check_reachable(address: str) -> None:
    """EngineError unless something answers at a host:port `address` (ray://host:port too):
    Ray itself retries an unreachable head for minutes, printing warnings."""
    if address == "auto":
        return  # the cluster this machine started; Ray reports at once when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EngineError(f"bad --address {address!r}: give host:port of a Ray head, ray://host:10001 or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise EngineError(
            f"cannot reach the Ray cluster at --address {address}: {exc.strerror or exc}; "
            "is its head running (ray start --head) and the port open?"
        ) from None


def _start_actors(ray: Any, config: Config, stage: Path, token: str, count: int) -> list[Any]:
    rc = config.ray
    available = ray.cluster_resources()
    if not rc.address and rc.gpus_per_worker > available.get("GPU", 0):
        raise EngineError(
            f"ray.gpus_per_worker is {rc.gpus_per_worker:g}, but the local Ray has "
            f"{available.get('GPU', 0):g} GPUs; use --gpus-per-worker 0 or --address of a cluster with GPUs"
        )
    actor = ray.remote(ShardEncoder)
    options = {
        "num_cpus": rc.cpus_per_worker,
        "num_gpus": rc.gpus_per_worker,
        "max_restarts": rc.max_retries,
        "max_task_retries": rc.max_retries,
    }
    # Named, so that `ray list actors` shows what runs; the token keeps concurrent runs apart.
    return [
        actor.options(name=f"harmosearch-encoder-{token}-{i}", **options).remote(
            config, str(stage), token, rc.gpus_per_worker
        )
        for i in range(count)
    ]


def _check_actors(ray: Any, actors: list[Any], photo: str, identity: Any) -> None:
    """Every actor sees the files and loaded the driver's model, or EngineError."""
    from harmosearch.model.encoder import EncoderIdentity

    for problem, theirs in ray.get([a.check.remote(photo) for a in actors]):
        if problem:
            raise EngineError(problem)
        made = EncoderIdentity.from_dict(theirs)
        differs = made.mismatch(identity)
        if differs:
            raise EngineError(
                f"a Ray worker loaded {identity.spec!r} with other weights or settings ({differs}); "
                "install the same harmosearch and model files on every node"
            )
        # Actors are handed the driver's resolved path (build._settings), so this guards against a
        # node whose runtimes make it otherwise, and against a path left to auto on each node.
        if made.made_with != identity.made_with:
            raise EngineError(
                f"a Ray worker makes image vectors in {made.made_with}, the driver in {identity.made_with}, "
                "and one index holds one kind; name the path for every node: "
                f'[encoder] precision = "{identity.precision}", runtime = "{identity.runtime}" (or fp32 and torch)'
            )


def _run(ray: Any, actors: list[Any], shards: list[Shard], files: int, progress: Progress | None) -> dict[str, str]:
    """Hand the shards to the actors as they free up; progress counts files as shards finish."""
    from ray.util import ActorPool

    failed: dict[str, str] = {}
    done = 0
    if progress:
        progress("encoding", 0, files)
    for count, reasons in ActorPool(actors).map_unordered(lambda a, shard: a.encode.remote(shard), shards):
        failed.update(reasons)
        done += count
        if progress:
            progress("encoding", done, files)
    return failed


def _last_line(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip()
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), type(exc).__name__)
