"""The training's processes: torchrun's environment, the process group and the only collectives the
trainer calls (:class:`Collectives`, every tensor on the model's device)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (1 process without it)."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device, timeout_s: float) -> None:
    """Join torchrun's process group: NCCL for CUDA tensors on a GPU (``cuda:nccl``), gloo for CPU
    tensors on CPUs (``cpu:gloo``); either serves only its device type. ``timeout_s`` bounds every
    wait, including the other processes' wait for process 0's validation."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # all_gather_object's tensors go to the current CUDA device
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(
        backend=f"{device.type}:{backend}", timeout=timedelta(seconds=timeout_s)
    )


def leave_distributed(world: int) -> None:
    """Leave the process group joined by :func:`init_distributed` (nothing with one process)."""
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class Collectives:
    """The trainer's collectives over ``world`` processes, every tensor placed on ``device`` (the
    model's) first: NCCL serves CUDA tensors only, so a CPU tensor would fail there. With one
    process nothing is communicated."""

    def __init__(self, device: torch.device | str, world: int):
        self.device, self.world = torch.device(device), world

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Process ``src``'s ``tensor`` on every process (a copy on ``device``)."""
        out = tensor.detach().to(self.device, copy=True)
        if self.world > 1:
            torch.distributed.broadcast(out, src)
        return out

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``tensor`` over the processes (a copy on ``device``)."""
        out = tensor.detach().to(self.device, copy=True)
        if self.world > 1:
            torch.distributed.all_reduce(out)
            out = out / self.world
        return out

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order. torch places the pickled bytes on the
        current CUDA device under NCCL (set by :func:`init_distributed`), on the CPU under gloo."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out
