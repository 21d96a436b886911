"""The :class:`Task` contract.

A task is a first-class object that owns everything task-specific: the number of output channels,
the ignore value of its targets, its loss, its post-processing, its evaluation meter and its
visualisation. The engine, the evaluator and the predictor only ever call these methods, so adding
a task never means adding ``if task == "depth"`` branches elsewhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.errors import MtdenseError, check_shape

if TYPE_CHECKING:
    from mtdense.config.schema import Config


@dataclass(frozen=True)
class Metric:
    """A number a task's meter reports, and its direction: ``lower_is_better`` for errors."""

    name: str
    lower_is_better: bool


class Task(ABC):
    """Base class of a dense prediction task.

    Subclasses set ``name``, ``target_key`` (the sample key of the target), ``metrics`` (every
    number the meter reports, with its direction) and ``primary_metric`` (the one of them used for
    the multi-task gain Δm, MTI-Net eq. 2, and for report tables), and implement
    :meth:`from_config` (the task configured from the config and the dataset meta) and
    :meth:`random_target` (a target of the data contract, for timing without a dataset). Adding a
    task is one file with such a class plus one entry in :data:`mtdense.tasks.TASKS`.

    A prediction at a lower resolution than its target is upsampled bilinearly before the loss, as
    the MTI-Net reference does for deep supervision.

    Partially labelled data (TRL and PSD train on frames with depth but no segmentation): a sample
    that lacks this task's target carries the target filled entirely with :attr:`ignore_value`
    (a dataset writes it so, and joint transforms pad with the same value, so it survives them and
    the default collate). :meth:`labelled_samples` finds such samples; the training loss path
    (:func:`mtdense.engine.trainer.compute_losses`) computes the task's losses over the labelled
    samples only and drops them for a batch without any, and :meth:`update_meter` skips them.
    A target whose every pixel is invalid (e.g. a depth map without a valid pixel) means the same.
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]
    primary_metric: ClassVar[Metric]
    target_key: ClassVar[str]
    out_channels: int
    ignore_value: float

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: Config, meta: Mapping[str, Any]) -> Task:
        """The task as ``cfg`` (loss and eval sections) and the dataset's ``meta.json`` ask for it."""

    @classmethod
    def metric(cls, name: str) -> Metric:
        """The metric ``name`` of this task; :class:`MtdenseError` listing the known ones otherwise."""
        for m in cls.metrics:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in cls.metrics)
        raise MtdenseError(f"task {cls.name!r} has no metric {name!r}; its metrics: {known}")

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

    def labelled_samples(self, target: Tensor) -> Tensor | None:
        """``None`` when every sample of the batch ``target`` is labelled, else a ``(B,)`` bool mask
        of the samples whose target holds a value other than :attr:`ignore_value` (see the class
        docstring). One host synchronisation."""
        keep = (target != self.ignore_value).reshape(target.shape[0], -1).any(dim=1)
        return None if bool(keep.all()) else keep

    def update_meter(self, meter: Any, pred: Tensor, target: Tensor) -> None:
        """Feed a raw prediction at full resolution and its target to ``meter``; unlabelled samples
        (target all :attr:`ignore_value`) are skipped."""
        keep = self.labelled_samples(target)
        if keep is not None:
            if not keep.any():
                return
            pred, target = pred[keep], target[keep]
        meter.update(self.postprocess(pred.float()), target)

    @abstractmethod
    def visualize(self, x: Tensor | np.ndarray) -> np.ndarray:
        """A prediction (post-processed, one sample ``(C, H, W)``) or a target → ``(H, W, 3)`` uint8 RGB."""

    def to_array(self, pred: Tensor) -> np.ndarray:
        """One post-processed prediction ``(C, H, W)`` → the raw array saved by ``mtdense predict``."""
        return pred.detach().float().cpu().numpy()

    # -- timing without a dataset -----------------------------------------------------------------
    @abstractmethod
    def random_target(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
        """A random target batch of the data contract's shape, dtype and value range, at ``size`` = (H, W)."""


def single_channel(x: Tensor | np.ndarray) -> np.ndarray:
    """A one-channel map ``(1, H, W)`` or ``(H, W)`` → float32 ``(H, W)``."""
    a = as_numpy(x).astype(np.float32)
    return a[0] if a.ndim == 3 else a


def as_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    """Detach a tensor to a numpy array (numpy arrays pass through)."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)
