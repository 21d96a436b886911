"""The :class:`Task` contract.

A task is a first-class object that owns everything task-specific: the number of output channels,
the ignore value of its targets, its loss, its post-processing, its evaluation meter and its
visualisation. The engine, the evaluator and the predictor only ever call these methods, so adding
a task never means adding ``if task == "depth"`` branches elsewhere (GUIDE.md, Contracts).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.errors import check_shape


class Task(ABC):
    """Base class of a dense prediction task.

    Subclasses set ``name``, ``primary_metric`` (the metric used for the multi-task gain Δm,
    MTI-Net eq. 2) and ``resize_mode`` (how a low-resolution prediction is brought to the target
    size before the loss: ``"bilinear"`` for every task here, as the MTI-Net reference does for deep
    supervision).
    """

    name: ClassVar[str]
    primary_metric: ClassVar[str]
    target_key: ClassVar[str]
    out_channels: int
    ignore_value: float

    def __init__(self, *, out_channels: int, ignore_value: float, loss_fn: nn.Module) -> None:
        self.out_channels = int(out_channels)
        self.ignore_value = ignore_value
        self.loss_fn = loss_fn

    def __repr__(self) -> str:
        return f"{type(self).__name__}(out_channels={self.out_channels}, loss={type(self.loss_fn).__name__})"

    # -- training -------------------------------------------------------------------------------
    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Loss of a raw prediction ``(B, C, h, w)`` against the target at full resolution.

        A prediction at a lower resolution (deep supervision) is upsampled bilinearly to the
        target's size first, so every scale is supervised against the same ground truth.
        """
        check_shape(
            f"{self.name} prediction",
            pred.shape,
            f"(B, {self.out_channels}, h, w)",
            pred.dim() == 4 and pred.shape[1] == self.out_channels,
        )
        size = target.shape[-2:]
        if pred.shape[-2:] != size:
            pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
        return self.loss_fn(pred.float(), target)

    # -- inference ------------------------------------------------------------------------------
    @abstractmethod
    def postprocess(self, pred: Tensor) -> Tensor:
        """Raw output ``(B, C, H, W)`` → the task's prediction (probabilities, metres, unit vectors)."""

    @abstractmethod
    def make_meter(self) -> Any:
        """A fresh streaming meter with ``reset/update/compute`` (see :mod:`mtdense.metrics`)."""

    def update_meter(self, meter: Any, pred: Tensor, target: Tensor) -> None:
        """Feed a raw prediction at full resolution and its target to ``meter``."""
        meter.update(self.postprocess(pred.float()), target)

    @abstractmethod
    def visualize(self, x: Tensor | np.ndarray) -> np.ndarray:
        """A prediction (post-processed, one sample ``(C, H, W)``) or a target → ``(H, W, 3)`` uint8 RGB."""

    def to_array(self, pred: Tensor) -> np.ndarray:
        """One post-processed prediction ``(C, H, W)`` → the raw array saved by ``mtdense predict``."""
        return pred.detach().float().cpu().numpy()


def single_channel(x: Tensor | np.ndarray) -> np.ndarray:
    """A one-channel map ``(1, H, W)`` or ``(H, W)`` → float32 ``(H, W)``."""
    a = as_numpy(x).astype(np.float32)
    return a[0] if a.ndim == 3 else a


def as_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    """Detach a tensor to a numpy array (numpy arrays pass through)."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)
