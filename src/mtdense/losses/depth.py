"""Depth regression losses: masked L1, L2 (PAD-Net's Euclidean) and berHu (TRL eq. 5).

All three take ``pred`` and ``target`` of shape ``(B, 1, H, W)`` in metres. A pixel is valid where
the target is finite and strictly positive (0 = no measurement, by the data contract); the loss is
the mean over valid pixels, and invalid pixels receive exactly zero gradient.

Note on the reference code: the MTI-Net/ATRC public code masks depth with ``label != 255`` only, so
on NYUD-MT it also regresses the invalid zeros. We follow the data contract (0 = invalid) instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtdense.losses._masked import check_dense_pair, masked_mean

__all__ = ["BerHuLoss", "DepthL1Loss", "DepthL2Loss", "berhu_loss", "depth_l1_loss", "depth_l2_loss"]


def _residual(name: str, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes; return ``d = pred − target`` (0 where the target is invalid) and the mask."""
    check_dense_pair(name, pred, target, pred_channels=1, target_channels=1)
    valid = torch.isfinite(target) & (target > 0)
    # Replacing invalid targets by the (detached) prediction keeps d finite everywhere, so a NaN or
    # inf in the target can never leak into the backward pass.
    safe_target = torch.where(valid, target.to(pred.dtype), pred.detach())
    return pred - safe_target, valid


def depth_l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error ``mean_i |pred_i − target_i|`` over valid pixels (MTI-Net's depth loss).

    Args:
        pred: ``(B, 1, H, W)`` predicted depth in metres.
        target: ``(B, 1, H, W)`` ground truth in metres; ``0`` or non-finite = invalid.

    Returns:
        A scalar in metres; 0 (connected to the graph) when no pixel is valid.
    """
    d, valid = _residual("depth_l1_loss", pred, target)
    return masked_mean(d.abs(), valid)


def depth_l2_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error ``mean_i (pred_i − target_i)²`` over valid pixels (PAD-Net's Euclidean loss).

    PAD-Net (Sec. 3.4 of seed 001) uses a Euclidean loss for depth and normals without stating its
    normalisation. Caffe's EuclideanLoss is ``Σ‖d‖² / (2N)`` with N the batch size; we take the
    per-pixel mean without the 1/2 so that the value does not depend on the image size, and the
    same loss weights can be used across resolutions. The factor only rescales the task weight.

    Args:
        pred: ``(B, 1, H, W)`` predicted depth in metres.
        target: ``(B, 1, H, W)`` ground truth in metres; ``0`` or non-finite = invalid.

    Returns:
        A scalar in square metres; 0 (connected to the graph) when no pixel is valid.
    """
    d, valid = _residual("depth_l2_loss", pred, target)
    return masked_mean(d.square(), valid)


def berhu_loss(pred: Tensor, target: Tensor, *, threshold_fraction: float = 0.2) -> Tensor:
    """Reverse Huber (berHu) loss, Eq. (5) of TRL (seed 003), after Laina et al. 2016.

    With ``d_i = pred_i − target_i`` and ``c = threshold_fraction · max_i |d_i|`` taken over the
    valid pixels of the whole batch (TRL: ``c = max(d_i)/5``)::

        L(d_i) = |d_i|                   if |d_i| ≤ c
                 (d_i² + c²) / (2c)      if |d_i| > c

    averaged over valid pixels. The two branches meet at ``|d| = c`` with value ``c`` and slope 1.

    ``c`` is **detached** (treated as a per-batch constant). TRL is silent on this. We detach because
    ``c`` plays the role of a threshold recomputed at every step, not of a quantity to optimise, and
    because its gradient points the wrong way: on the quadratic branch
    ``∂L/∂c = (c² − d²) / (2c²) < 0``, so back-propagating through ``c = max|d|/5`` would push the
    largest residual to grow. With ``c`` detached the gradient is ``sign(d)`` on the L1 branch and
    ``d / c`` on the quadratic branch.

    When ``c = 0`` (a perfect prediction) every valid pixel is on the L1 branch and the loss is 0.

    Args:
        pred: ``(B, 1, H, W)`` predicted depth (metres, or whatever space the caller regresses, e.g.
            DenseMTL's inverse normalised depth).
        target: ``(B, 1, H, W)`` ground truth in the same space; ``0`` or non-finite = invalid.
        threshold_fraction: ``c / max|d|``; TRL's default is 1/5.

    Returns:
        A scalar; 0 (connected to the graph) when no pixel is valid.
    """
    d, valid = _residual("berhu_loss", pred, target)
    abs_d = d.abs()
    c = (threshold_fraction * torch.where(valid, abs_d, 0.0).detach().amax()).to(pred.dtype)
    # c = 0 would make the (unselected) quadratic branch 0/0; any positive stand-in is harmless.
    safe_c = torch.where(c > 0, c, torch.ones_like(c))
    per_pixel = torch.where(abs_d <= c, abs_d, (d.square() + c * c) / (2 * safe_c))
    return masked_mean(per_pixel, valid)


class DepthL1Loss(nn.Module):
    """Module twin of :func:`depth_l1_loss`."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred``, ``target``: ``(B, 1, H, W)`` metres → scalar."""
        return depth_l1_loss(pred, target)


class DepthL2Loss(nn.Module):
    """Module twin of :func:`depth_l2_loss`."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred``, ``target``: ``(B, 1, H, W)`` metres → scalar."""
        return depth_l2_loss(pred, target)


class BerHuLoss(nn.Module):
    """Module twin of :func:`berhu_loss` (TRL eq. 5).

    Args:
        threshold_fraction: ``c / max|d|``, 1/5 in TRL.
    """

    def __init__(self, *, threshold_fraction: float = 0.2):
        super().__init__()
        self.threshold_fraction = threshold_fraction

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred``, ``target``: ``(B, 1, H, W)`` → scalar."""
        return berhu_loss(pred, target, threshold_fraction=self.threshold_fraction)
