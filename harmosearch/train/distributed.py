"""Training on several processes: `harmosearch train` under torchrun, with DDP.

torchrun starts one process per GPU (or per CPU group) and tells each its rank in the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `join` turns that into a
process group (NCCL between GPUs, gloo between CPUs). Each global batch of train.batch_size
samples is split between the ranks in order, and each rank runs the towers on its part inside
DistributedDataParallel. The loss inputs of all ranks are then gathered with their gradients
(`torch.distributed.nn.functional.all_gather`, as open_clip's ClipLoss does with
gather_with_grad), so every rank computes the loss of the whole global batch: the negatives of
GC, LRC, GR and TIGHT are those of the global batch, as in one process.

Why the gradients equal one process's: every rank's loss is the global loss L; the gather's
backward sums over the ranks, so rank r's local outputs get W * dL/d(its outputs), and DDP
averages the W ranks' parameter gradients, which leaves dL/dparameters. Rank 0 writes the
checkpoints, metrics and the final model; the other ranks wait for it at a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from harmosearch.errors import ConfigError, EngineError
from harmosearch.train.forward import forward_batch

# Loss inputs with one row per (region, lexeme) pair: their count differs between ranks.
PAIR_KEYS = ("regions", "lexemes", "lexeme_ids", "distractors", "crops")
# Loss inputs with one row per image of the batch.
IMAGE_KEYS = ("image", "text")


def launched_world_size() -> int:
    """How many processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank among those torchrun started (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


@dataclass
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process created the process group and destroys it

    @property
    def main(self) -> bool:
        return self.rank == 0

    def part(self, batch: list[int], batch_size: int) -> list[int]:
        """This rank's share of a global batch: consecutive, in rank order."""
        share = batch_size // self.world
        return batch[self.rank * share : (self.rank + 1) * share]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """The loss inputs of the whole global batch, in rank order, with gradients flowing back
        to the rank that computed each row; `owner` indexes the images of the global batch."""
        if self.world == 1:
            return outputs
        gathered = dict(outputs)
        for key in IMAGE_KEYS:
            gathered[key] = torch.cat(_all_gather(outputs[key]))
        counts = _all_gather_sizes(len(outputs["regions"]), outputs["regions"].device)
        for key in PAIR_KEYS:
            if key in outputs:
                gathered[key] = _gather_ragged(outputs[key], counts)
        images = len(outputs["image"])
        owners = _gather_ragged(outputs["owner"], counts)
        starts = torch.repeat_interleave(
            torch.arange(self.world, device=owners.device) * images,
            torch.as_tensor(counts, device=owners.device),
        )
        gathered["owner"] = owners + starts
        return gathered

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def join(device: Any, batch_size: int) -> tuple[Ranks, Any]:
    """This process's Ranks and its device: the process group torchrun describes, joined (or the
    one already joined), with cuda:LOCAL_RANK as the device on GPUs; one rank outside torchrun."""
    from harmosearch.model.device import distributed_backend, rank_device

    world = launched_world_size()
    if world == 1:
        return Ranks(), device
    if batch_size % world:
        raise ConfigError(f"train.batch_size {batch_size} must be a multiple of the {world} training processes")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(device, local_rank)
    owns = not dist.is_initialized()
    if owns:
        try:
            gpu = device if device.type != "cpu" else None
            dist.init_process_group(backend=distributed_backend(device), device_id=gpu)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"cannot join the training processes: {str(exc).splitlines()[0]}") from None
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, owns), device


class BatchForward(nn.Module):
    """The forward pass of one training step as a module, so that DDP sees it run (DDP prepares
    its gradient reduction in its own forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any], *options: Any) -> dict[str, Any]:
        return forward_batch(self.model, batch, *options)


def data_parallel(model: nn.Module, device: Any) -> nn.Module:
    """The model's training forward wrapped in DistributedDataParallel (parameters broadcast
    from rank 0 now, gradients averaged after every backward)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type != "cpu" else None
    return DistributedDataParallel(BatchForward(model), device_ids=ids, broadcast_buffers=False)


def _all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    from torch.distributed.nn.functional import all_gather

    return list(all_gather(tensor.contiguous()))


def _all_gather_sizes(size: int, device: Any) -> list[int]:
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([size], dtype=torch.long, device=device))
    return [int(s.item()) for s in sizes]


def _gather_ragged(tensor: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Rows of every rank (counts[r] from rank r) in rank order: padded to the longest for the
    collective, cut back after."""
    longest = max(counts)
    padding = torch.zeros((longest - len(tensor), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    pieces = _all_gather(torch.cat([tensor, padding]))
    return torch.cat([piece[:count] for piece, count in zip(pieces, counts, strict=True)])
