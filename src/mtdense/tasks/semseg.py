"""Semantic segmentation: per-pixel classification into ``num_classes`` classes (255 = ignore)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mtdense.losses import build_loss
from mtdense.metrics import SegmentationMeter
from mtdense.tasks.base import Task, as_numpy


def default_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC bit-interleaved colour map: ``(num_classes, 3)`` uint8, distinct for ≤ 256 classes."""
    ids = np.arange(num_classes)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


class SemsegTask(Task):
    """Semantic segmentation.

    Output: logits ``(B, K, H, W)``. Target: int64 ``(B, H, W)``, 255 = ignore. Loss: cross-entropy
    with ignore (all five papers). Postprocess: softmax. Meter: mIoU / mAcc / pixAcc.
    """

    name = "semseg"
    primary_metric = "mIoU"
    target_key = "semseg"

    def __init__(
        self,
        num_classes: int,
        *,
        class_names: Sequence[str] | None = None,
        palette: np.ndarray | Sequence[Sequence[int]] | None = None,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        super().__init__(
            out_channels=num_classes,
            ignore_value=ignore_index,
            loss_fn=build_loss("cross_entropy", ignore_index=ignore_index, class_weights=weight),
        )
        self.num_classes = num_classes
        self.class_names = (
            list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        )
        self.palette = (
            np.asarray(palette, dtype=np.uint8) if palette is not None else default_palette(num_classes)
        )

    def postprocess(self, pred: Tensor) -> Tensor:
        return pred.softmax(dim=1)

    def make_meter(self) -> SegmentationMeter:
        return SegmentationMeter(self.num_classes, ignore_index=int(self.ignore_value))

    def visualize(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Probabilities ``(K, H, W)`` (argmax taken) or labels ``(H, W)`` → palette colours; ignore is black."""
        a = as_numpy(x)
        labels = a.argmax(0) if a.ndim == 3 else a.astype(np.int64)
        out = np.zeros((*labels.shape, 3), dtype=np.uint8)
        valid = (labels >= 0) & (labels < self.num_classes)
        out[valid] = self.palette[labels[valid]]
        return out

    def to_array(self, pred: Tensor) -> np.ndarray:
        """Class labels ``(H, W)`` as uint8 (uint16 beyond 255 classes)."""
        dtype = np.uint8 if self.num_classes <= 255 else np.uint16
        return pred.argmax(0).cpu().numpy().astype(dtype)
