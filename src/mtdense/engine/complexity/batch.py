"""Random batches of the data contract, for timing a model without a dataset."""

from __future__ import annotations

import torch
from torch import Tensor

from mtdense.tasks import Task


def random_batch(tasks: dict[str, Task], *, batch: int, size: tuple[int, int], seed: int = 0) -> dict[str, Tensor]:
    """``image`` float32 ``(B, 3, H, W)`` uniform in [0, 1] and each task's :meth:`~mtdense.tasks.Task.random_target`
    under its ``target_key``, all drawn from one generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    out = {"image": torch.rand((batch, 3, *size), generator=gen)}
    for task in tasks.values():
        out[task.target_key] = task.random_target(batch, size, gen)
    return out
