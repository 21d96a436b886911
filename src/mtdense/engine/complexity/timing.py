"""Wall-clock seconds of train steps and inference passes of a model on random data (CPU)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mtdense._allocator import reuse_freed_memory
from mtdense.engine.complexity.batch import random_batch
from mtdense.engine.evaluator import autocast_context
from mtdense.engine.trainer import compute_losses
from mtdense.losses.balancing import LossBalancer
from mtdense.tasks import Task


def _seconds(fn: Callable[[], Any], *, repeats: int, warmup: int) -> tuple[float, float]:
    """``(median, min)`` wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def time_model(
    model: nn.Module,
    *,
    tasks: dict[str, Task],
    balancer: LossBalancer,
    optimizer: torch.optim.Optimizer,
    size: tuple[int, int],
    batch: int,
    bf16: bool = False,
    channels_last: bool = False,
    repeats: int = 5,
    warmup: int = 2,
) -> dict[str, float]:
    """Median seconds of a train step and of an inference pass on random data (CPU).

    Train step, exactly as :meth:`mtdense.engine.trainer.Trainer.train_step` does it: forward (under
    bf16 autocast when ``bf16``) → :func:`compute_losses` (outside autocast, as the trainer) →
    ``balancer`` → ``zero_grad`` → ``balancer.backward(total, losses, model=model)`` (so gradient-level
    balancers time their per-task backward passes) → ``optimizer.step()``. ``balancer`` must already be
    attached to ``model`` (:meth:`~mtdense.losses.balancing.LossBalancer.attach`). Inference: eval mode, ``no_grad``,
    same autocast. Each is run ``warmup`` times untimed (allocator and oneDNN primitive caches), then
    ``repeats`` times; returns the medians ``{"train_step_s", "infer_s"}`` and the minima
    ``{"train_step_min_s", "infer_min_s"}`` (on a machine shared with other work the minimum is the
    least disturbed run). The optimiser really steps, so ``model``'s weights change.
    """
    reuse_freed_memory()  # as the trainer does (mtdense._allocator)
    device = torch.device("cpu")
    data = random_batch(tasks, batch=batch, size=size)
    image = data["image"]
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)

    def train_step() -> None:
        with autocast_context(device, bf16):
            outputs = model(image)
        losses = compute_losses(outputs, data, tasks)
        total, _ = balancer(losses)
        optimizer.zero_grad(set_to_none=True)
        balancer.backward(total, losses, model=model)
        optimizer.step()

    def infer() -> None:
        with torch.no_grad(), autocast_context(device, bf16):
            model(image)

    was_training = model.training
    try:
        model.train()
        train_s, train_min = _seconds(train_step, repeats=repeats, warmup=warmup)
        model.eval()
        infer_s, infer_min = _seconds(infer, repeats=repeats, warmup=warmup)
    finally:
        model.train(was_training)
    return {
        "train_step_s": train_s,
        "infer_s": infer_s,
        "train_step_min_s": train_min,
        "infer_min_s": infer_min,
    }
