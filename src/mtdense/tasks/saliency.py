"""Saliency estimation (PASCAL-Context, distilled labels): per-pixel probability of being salient.

MTI-Net (Vandenhende et al., ECCV 2020) Sec. 4.1 / Table 1 trains saliency on PASCAL-Context with the
setup of ASTMT (Maninis et al., CVPR 2019) and evaluates it by mIoU (maxF is reported too). The loss is
ASTMT's class-balanced binary cross-entropy without a fixed positive weight: per batch, the positives
weigh the share of negative pixels and the negatives the share of positives (HED's balancing), i.e.
``w = n_neg / (n_pos + n_neg)`` over the valid pixels in :func:`~mtdense.losses.balanced_bce_loss`.
That is the choice here too, as the paper gives no other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from mtdense.losses import balanced_bce_loss
from mtdense.metrics import SaliencyMeter
from mtdense.tasks.base import Metric, Task, single_channel

if TYPE_CHECKING:
    from mtdense.config.schema import Config


class AutoBalancedBCELoss(nn.Module):
    """Balanced BCE whose positive weight is the batch's share of negative pixels (module docstring).

    ``pred`` logits and ``target`` in {0, 1} (255 = ignore), both ``(B, 1, H, W)`` → scalar. With
    ``w = n_neg / n_valid`` the per-pixel mean is ``(w·Σ_pos softplus(−x) + (1−w)·Σ_neg softplus(x)) / n_valid``.
    """

    def __init__(self, *, ignore_index: float = 255.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = target != self.ignore_index
        negatives = (valid & (target < 0.5)).sum()
        w = negatives.float() / valid.sum().clamp(min=1).float()
        return balanced_bce_loss(pred, target, pos_weight=w, ignore_index=self.ignore_index)


class SaliencyTask(Task):
    """Saliency.

    Output: one logit channel ``(B, 1, H, W)``. Target: float32 ``(B, 1, H, W)`` in {0, 1}, 255 = ignore.
    Loss: :class:`AutoBalancedBCELoss`. Postprocess: sigmoid. Meter: :class:`~mtdense.metrics.SaliencyMeter`
    (``mIoU`` and ``maxF`` over thresholds ``linspace(0.2, 0.9, 15)``; mIoU is primary, MTI-Net Sec. 4.1).
    """

    name = "saliency"
    metrics = (Metric("mIoU", False), Metric("maxF", False))
    primary_metric = metrics[0]
    target_key = "saliency"

    @classmethod
    def from_config(cls, cfg: Config, meta: Mapping[str, Any]) -> SaliencyTask:
        """Nothing to configure: the loss and the meter's thresholds are the benchmark's."""
        return cls()

    def __init__(self, *, beta2: float = 0.3) -> None:
        super().__init__(out_channels=1, ignore_value=255.0, loss_fn=AutoBalancedBCELoss(ignore_index=255.0))
        self.beta2 = beta2

    def postprocess(self, pred: Tensor) -> Tensor:
        return pred.sigmoid()

    def make_meter(self) -> SaliencyMeter:
        return SaliencyMeter(beta2=self.beta2)

    def visualize(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Saliency probability or target ``(1, H, W)`` → grey (white = salient); ignore (255) is mid-grey."""
        s = single_channel(x)
        grey = np.where(s == 255, 0.5, np.clip(s, 0, 1))
        return np.repeat((grey * 255).round().astype(np.uint8)[..., None], 3, axis=2)

    def random_target(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
        """Float32 ``(B, 1, H, W)`` in {0, 1}, about a third salient."""
        return (torch.rand((batch, 1, *size), generator=generator) < 0.3).float()
