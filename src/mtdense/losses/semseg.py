"""Cross-entropy with an ignore label, for semantic segmentation (and other per-pixel labellings).

Used by every seed paper for segmentation (PAD-Net Sec. 3.4, TRL Sec. 3.3 ``L^S``, MTI-Net Sec. 3,
PSD, DenseMTL ``L_S``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.errors import ShapeError
from mtdense.losses._masked import check_dense_pair

__all__ = ["CrossEntropyLoss", "cross_entropy_loss"]


def cross_entropy_loss(
    pred: Tensor, target: Tensor, *, ignore_index: int = 255, class_weights: Tensor | None = None
) -> Tensor:
    """Per-pixel softmax cross-entropy averaged over the pixels whose label is not ``ignore_index``.

    ``L = Σ_i w_{y_i} · (−log softmax(x_i)_{y_i}) / Σ_i w_{y_i}`` over the valid pixels ``i``; without
    class weights every ``w = 1`` and the denominator is the number of valid pixels. With class
    weights the denominator is the sum of the valid pixels' weights, the convention of
    :class:`torch.nn.CrossEntropyLoss`, so that scaling every weight by a constant changes nothing.
    A batch with no valid pixel gives 0 (connected to the graph), where PyTorch's own mean gives NaN.

    Args:
        pred: logits ``(B, K, H, W)``, at the target's resolution.
        target: labels ``(B, H, W)`` int64 in ``0..K−1``, or ``ignore_index``. Labels outside this set
            are reported by PyTorch (an index error); checking them here would cost a host sync.
        ignore_index: the label that contributes nothing.
        class_weights: optional ``(K,)`` non-negative weights.

    Returns:
        A scalar tensor.
    """
    check_dense_pair("cross_entropy_loss", pred, target, pred_channels=None, target_channels=None)
    num_classes = pred.shape[1]
    if class_weights is not None and class_weights.shape != (num_classes,):
        raise ShapeError(
            f"cross_entropy_loss: class_weights: expected ({num_classes},) for {num_classes} classes, "
            f"got shape {tuple(class_weights.shape)}"
        )
    valid = target != ignore_index
    # reduction="none" already yields w_y * nll at valid pixels and exactly 0 (with zero gradient) at
    # ignored ones; only the denominator needs care.
    per_pixel = F.cross_entropy(
        *_pixels_by_class(pred, target.long()), weight=class_weights, ignore_index=ignore_index, reduction="none"
    )
    if class_weights is None:
        denominator = valid.sum().clamp(min=1).to(per_pixel.dtype)
    else:
        safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
        weight_sum = torch.where(valid, class_weights.to(per_pixel)[safe_target], 0.0).sum()
        denominator = torch.where(weight_sum > 0, weight_sum, torch.ones_like(weight_sum))
    return per_pixel.sum() / denominator


def _pixels_by_class(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(pred, target)`` in the layout where the softmax over classes is cheapest; same values.

    A channels-last ``(B, K, H, W)`` map is stored as ``(B, H, W, K)``: viewed as ``(B*H*W, K)`` rows
    (no copy) the softmax runs over contiguous rows. PyTorch's CPU softmax over dim 1 of the 4-D
    channels-last tensor would first copy it to NCHW, which at full resolution (e.g. 40 x 288 x 384
    per image) costs more than the loss itself. Any other layout is passed through unchanged.
    """
    if pred.is_contiguous() or not pred.is_contiguous(memory_format=torch.channels_last):
        return pred, target
    k = pred.shape[1]
    return pred.permute(0, 2, 3, 1).reshape(-1, k), target.reshape(-1)


class CrossEntropyLoss(nn.Module):
    """Module twin of :func:`cross_entropy_loss`; ``class_weights`` is kept as a buffer.

    Args:
        ignore_index: label that contributes nothing (255 by the data contract).
        class_weights: optional per-class weights, length K.
    """

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | Tensor | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", weights)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """See :func:`cross_entropy_loss`: ``pred (B, K, H, W)``, ``target (B, H, W)``."""
        return cross_entropy_loss(pred, target, ignore_index=self.ignore_index, class_weights=self.class_weights)
