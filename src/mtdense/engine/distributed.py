"""Multi-process training with ``torchrun`` (DDP): NCCL on CUDA, Gloo on CPU.

``torchrun --nproc_per_node=N -m mtdense.cli.main train CONFIG --out OUT`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` reads them. Each rank takes its own
slice of every global batch (:class:`~mtdense.engine.data.ResumableBatchSampler`) and evaluates its
own shard of the val split; meters are all-reduced before ``compute``; only rank 0 writes files.
Checkpoints hold every rank's RNG state (:func:`gather_to_all`), and a stop signal seen by any rank
stops all of them after the same step (:func:`any_rank`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

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


def gather_to_all(info: DistInfo, obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (a one-element list without DDP).

    Collective: every rank must call it at the same point. Used to put each rank's RNG state into
    rank 0's checkpoint.
    """
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def any_rank(info: DistInfo, flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (collective; ``flag`` itself without DDP).

    A signal may reach the ranks of a job at different steps; agreeing on it each step makes all of
    them stop after the same step, so none waits forever in a collective that the others have left.
    """
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
