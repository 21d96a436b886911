"""Streaming meters: the common ``reset / update / sync / compute`` interface.

A meter accumulates *sufficient statistics* (sums and counts, never per-sample lists) in float64 /
int64 numpy arrays, so that

* streaming over N batches gives the same result as one big batch, and
* under DDP every rank evaluates its shard, :meth:`Meter.sync` all-reduces (sums) the statistics and
  :meth:`Meter.compute` on any rank then equals a single process evaluating the whole split.

``sync()`` is collective: every rank must call it, after its last ``update``. It keeps the local
statistics untouched and stores the global sum separately, so calling it twice does not double-count;
a later ``update`` or ``reset`` drops the synced copy.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch

from mtdense.errors import MtdenseError, ShapeError

__all__ = ["Meter", "all_reduce_arrays"]


def all_reduce_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sum each array over all ranks of the default process group (copies when not distributed).

    Uses the device of the backend: CUDA for NCCL, CPU otherwise. float64 and int64 travel exactly.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return {k: v.copy() for k, v in arrays.items()}
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    out = {}
    for key, value in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(value)).to(device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        # np.ascontiguousarray turns 0-d counters into 1-d: restore the accumulator's own shape
        out[key] = t.cpu().numpy().astype(value.dtype, copy=False).reshape(np.shape(value))
    return out


class Meter(abc.ABC):
    """Base class: subclasses define :meth:`_zero_state`, :meth:`update` and :meth:`_compute`."""

    def __init__(self) -> None:
        self.reset()

    @abc.abstractmethod
    def _zero_state(self) -> dict[str, np.ndarray]:
        """Fresh accumulators (float64 / int64 arrays) keyed by name."""

    @abc.abstractmethod
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate one batch."""

    @abc.abstractmethod
    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics from accumulated statistics."""

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._state = self._zero_state()
        self._synced: dict[str, np.ndarray] | None = None

    def _accumulate(self, **values: np.ndarray | float | int) -> None:
        for key, value in values.items():
            self._state[key] += value
        self._synced = None

    def sync(self) -> None:
        """All-reduce the statistics over the DDP process group (collective; no-op when not distributed)."""
        self._synced = all_reduce_arrays(self._state)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The statistics :meth:`compute` uses: the synced sum after :meth:`sync`, else the local ones."""
        return self._synced if self._synced is not None else self._state

    def compute(self) -> dict[str, float]:
        """Metric name -> value (Python floats; ratios and accuracies in percent)."""
        return {k: float(v) for k, v in self._compute(self.state).items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def as_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Accept a tensor or an array; detach (meters never track gradients)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise ShapeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def squeeze_channel(x: torch.Tensor, name: str, expected: str) -> torch.Tensor:
    """``(B, 1, H, W)`` or ``(B, H, W)`` -> ``(B, H, W)``; anything else raises :class:`ShapeError`."""
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 3:
        return x
    raise ShapeError(f"{name}: expected {expected}, got shape {tuple(x.shape)}")


def check_same_shape(where: str, pred: Sequence[int], target: Sequence[int]) -> None:
    """Prediction and target (after channel squeezing) must have the same batch and spatial sizes."""
    if tuple(pred) != tuple(target):
        raise ShapeError(
            f"{where}: pred has shape {tuple(pred)} but target has shape {tuple(target)}; they must match"
        )


def require_data(count: float, meter: str) -> None:
    """Raise when ``compute`` is called on a meter that has seen no valid sample."""
    if count <= 0:
        raise MtdenseError(f"{meter}.compute(): no valid sample was accumulated (call update() first)")
