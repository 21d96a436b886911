"""Multi-process training with ``torchrun`` (DDP): NCCL on CUDA, Gloo on CPU.

``torchrun --nproc_per_node=N -m mtdense.cli.main train CONFIG --out OUT`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` reads them. Each rank takes its own
slice of every global batch (:class:`~mtdense.engine.data.ResumableBatchSampler`) and evaluates its
own shard of the val split; meters are all-reduced before ``compute``; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Initialise the default process group when launched by ``torchrun`` (no-op otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def select_device(info: DistInfo) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is available, else the CPU."""
    return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
