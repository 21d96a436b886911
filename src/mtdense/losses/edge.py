"""Binary cross-entropy losses for edge (contour) detection.

* :func:`balanced_bce_loss`: class-balanced, MTI-Net (seed 002, Sec. 3) trains edges "with a
  positively weighted ``w_pos = 0.95`` binary cross-entropy loss", as ASTMT and ATRC do; DenseMTL
  (seed 004) uses the same ``[0.05, 0.95]`` class weights.
* :func:`bce_loss`: plain (unweighted) binary cross-entropy, PAD-Net's "cross-entropy loss for the
  contour prediction task" (seed 001, Sec. 3.6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.errors import ConfigError
from mtdense.losses._masked import check_dense_pair, masked_mean

__all__ = ["BCELoss", "BalancedBCELoss", "balanced_bce_loss", "bce_loss"]


def balanced_bce_loss(pred: Tensor, target: Tensor, *, pos_weight: float = 0.95, ignore_index: float = 255.0) -> Tensor:
    """Balanced BCE with logits: ``−(w·y·log σ(x) + (1−w)·(1−y)·log(1−σ(x)))`` averaged over valid pixels.

    Computed stably as ``w·y·softplus(−x) + (1−w)·(1−y)·softplus(x)``. A pixel is valid unless its
    target equals ``ignore_index``; ``y = [target ≥ 0.5]`` (the authors binarise the same way).

    Convention, checked against the public MTI-Net/ATRC code (``BalancedCrossEntropyLoss`` with
    ``pos_weight=0.95, size_average=True``): the weight is fixed (not the per-batch HED ratio); the
    positive and negative terms are *summed* and then divided by the number of pixels, i.e. it is a
    per-pixel **mean**, which is what we return. Differences, on purpose: that code divides by all
    pixels and, with a fixed ``pos_weight``, does not mask void pixels (it would even count a 255 as
    an edge); we mask ``ignore_index`` (crop padding) and divide by the number of valid pixels. With
    no ignored pixel the two agree exactly, so the published edge weight (50) carries over.

    Args:
        pred: ``(B, 1, H, W)`` logits.
        target: ``(B, 1, H, W)`` float in ``{0, 1}``, ``ignore_index`` = ignore.
        pos_weight: ``w`` in ``[0, 1]``; negatives get ``1 − w``.
        ignore_index: target value that contributes nothing.

    Returns:
        A scalar; 0 (connected to the graph) when no pixel is valid.
    """
    check_dense_pair("balanced_bce_loss", pred, target, pred_channels=1, target_channels=1)
    valid = target != ignore_index
    positive = (target >= 0.5) & valid
    negative = valid & ~positive
    per_pixel = torch.where(
        positive,
        pos_weight * F.softplus(-pred),
        torch.where(negative, (1.0 - pos_weight) * F.softplus(pred), 0.0),
    )
    return masked_mean(per_pixel, valid)


class BalancedBCELoss(nn.Module):
    """Module twin of :func:`balanced_bce_loss`.

    Args:
        pos_weight: weight of the edge (positive) class; 0.95 in MTI-Net/ATRC/DenseMTL.
        ignore_index: target value to ignore (255 = crop padding).
    """

    def __init__(self, *, pos_weight: float = 0.95, ignore_index: float = 255.0):
        super().__init__()
        if not 0.0 <= pos_weight <= 1.0:
            raise ConfigError(f"BalancedBCELoss: pos_weight must be in [0, 1], got {pos_weight}")
        self.pos_weight = pos_weight
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred`` logits, ``target`` labels: ``(B, 1, H, W)`` → scalar."""
        return balanced_bce_loss(pred, target, pos_weight=self.pos_weight, ignore_index=self.ignore_index)


def bce_loss(pred: Tensor, target: Tensor, *, ignore_index: float = 255.0) -> Tensor:
    """Plain binary cross-entropy with logits ``−(y·log σ(x) + (1−y)·log(1−σ(x)))``, mean over valid pixels.

    PAD-Net (seed 001, Sec. 3.6) names "a cross-entropy loss for the contour prediction task" and no
    class weighting, so both classes weigh 1. Computed stably as ``y·softplus(−x) + (1−y)·softplus(x)``;
    ``y = [target ≥ 0.5]``; pixels whose target equals ``ignore_index`` count nothing. It equals
    ``2 ×`` :func:`balanced_bce_loss` with ``pos_weight = 0.5``.

    Args:
        pred: ``(B, 1, H, W)`` logits.
        target: ``(B, 1, H, W)`` float in ``{0, 1}``, ``ignore_index`` = ignore.
        ignore_index: target value that contributes nothing.

    Returns:
        A scalar; 0 (connected to the graph) when no pixel is valid.
    """
    check_dense_pair("bce_loss", pred, target, pred_channels=1, target_channels=1)
    valid = target != ignore_index
    positive = target >= 0.5
    per_pixel = torch.where(positive, F.softplus(-pred), F.softplus(pred))
    return masked_mean(per_pixel, valid)


class BCELoss(nn.Module):
    """Module twin of :func:`bce_loss` (PAD-Net's contour loss).

    Args:
        ignore_index: target value to ignore (255 = crop padding).
    """

    def __init__(self, *, ignore_index: float = 255.0):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred`` logits, ``target`` labels: ``(B, 1, H, W)`` → scalar."""
        return bce_loss(pred, target, ignore_index=self.ignore_index)
