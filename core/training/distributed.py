"""Distributed data parallel helpers (``torchrun``; gloo on CPU, nccl on CUDA).

``torchrun --nproc_per_node=N -m core.train --config ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them.  Without
them (plain ``python -m core.train``) everything runs in one process.

Data parallelism in the trainer: every rank draws the *same* global batch from the same seeded
generator and keeps its own slice (``global_batch // world_size`` samples), so rank 0's RNG
states describe the whole run and a resumed DDP run is exact like a single-process one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed", "cleanup", "replicas_identical"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: str = "auto", backend: str | None = None) -> DistContext:
    """Initialise the process group from torchrun's environment (if any) and pick the device.

    ``device``: ``auto`` (CUDA if available, else CPU), ``cpu`` or ``cuda``.  ``backend`` defaults
    to nccl on CUDA and gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank % max(torch.cuda.device_count(), 1))
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"), rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def replicas_identical(module: torch.nn.Module) -> bool:
    """True when every rank holds bit-identical parameters (checked by all-reducing max and min of
    each parameter's difference to rank 0's copy). Single process: True."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return True
    flat = torch.cat([p.detach().reshape(-1).float() for p in module.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return bool(diff.item() == 0.0)
