"""Plumbing shared by the per-task losses: shape checks and the masked mean.

Every dense loss follows the same recipe: compute a per-pixel loss on *sanitised* inputs (invalid
target values replaced by finite ones, so that no NaN or inf can enter the backward pass through a
zero upstream gradient), keep the valid pixels with :func:`torch.where`, and divide by the number
of valid pixels. A batch without any valid pixel gives an exact 0 that is still connected to the
graph (its gradient is 0 everywhere), never 0/0 = NaN. No host synchronisation is needed: the count
stays a tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtdense.errors import ShapeError, check_shape


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over the positions where ``valid`` is true.

    Args:
        values: per-position losses, any shape; values at invalid positions are ignored, even NaN.
        valid: bool tensor of the same shape.

    Returns:
        A scalar: ``sum(values[valid]) / count(valid)``, or 0 (with zero gradients) when nothing is
        valid.
    """
    total = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / valid.sum().clamp(min=1)


def check_dense_pair(
    name: str, pred: Tensor, target: Tensor, *, pred_channels: int | None, target_channels: int | None
) -> None:
    """Check ``pred`` is ``(B, pred_channels, H, W)`` floating point and ``target`` matches it.

    ``pred_channels=None`` accepts any channel count (e.g. K classes).

    ``target_channels=None`` means a label map ``(B, H, W)`` of an integer dtype; otherwise the
    target is ``(B, target_channels, H, W)`` (any real dtype).

    Raises:
        ShapeError: naming ``name``, the expected layout and the received shape or dtype.
    """
    check_shape(
        f"{name}: pred",
        pred.shape,
        f"(B, {'C' if pred_channels is None else pred_channels}, H, W)",
        pred.ndim == 4 and (pred_channels is None or pred.shape[1] == pred_channels),
    )
    if not pred.is_floating_point():
        raise ShapeError(f"{name}: pred: expected a floating-point tensor, got dtype {pred.dtype}")
    b, _, h, w = pred.shape
    if target_channels is None:
        check_shape(
            f"{name}: target", target.shape, f"({b}, {h}, {w}) to match pred", target.shape == (b, h, w)
        )
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ShapeError(f"{name}: target: expected an integer label tensor, got dtype {target.dtype}")
    else:
        expected = (b, target_channels, h, w)
        check_shape(f"{name}: target", target.shape, f"{expected} to match pred", target.shape == expected)
