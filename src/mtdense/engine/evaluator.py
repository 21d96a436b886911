"""Evaluation: stream a split through the model and every task's meter (reset / process / evaluate)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mtdense.models import upsample_to
from mtdense.tasks import Task


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA when ``enabled``, otherwise a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def training_forward(model: nn.Module, image: Tensor, *, device: torch.device, channels_last: bool, bf16: bool) -> Any:
    """``model(image)`` as a training step runs it: channels_last when asked, under bf16 autocast when ``bf16``."""
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with autocast_context(device, bf16):
        return model(image)


class MultiTaskEvaluator:
    """Holds one meter per evaluated task. ``process`` takes raw model outputs and a batch."""

    def __init__(self, tasks: Mapping[str, Task]) -> None:
        self.tasks = dict(tasks)
        self.meters = {name: task.make_meter() for name, task in self.tasks.items()}

    def reset(self) -> None:
        for m in self.meters.values():
            m.reset()

    def process(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any]) -> None:
        for name, task in self.tasks.items():
            target = batch[task.target_key]
            pred = upsample_to(outputs[name].float(), target.shape[-2:])
            task.update_meter(self.meters[name], pred, target)

    def evaluate(self) -> dict[str, dict[str, float]]:
        results = {}
        for name, meter in self.meters.items():
            if hasattr(meter, "sync"):
                meter.sync()
            results[name] = {k: float(v) for k, v in meter.compute().items()}
        return results


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    tasks: Mapping[str, Task],
    *,
    device: torch.device,
    bf16: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of ``model`` on ``loader`` for the main ``tasks``."""
    was_training = model.training
    model.eval()
    ev = MultiTaskEvaluator(tasks)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="eval", leave=False, dynamic_ncols=True)
    for batch in loader:
        image = batch["image"].to(device)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, bf16):
            outputs = model(image)
        ev.process(outputs, {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()})
    model.train(was_training)
    return ev.evaluate()
