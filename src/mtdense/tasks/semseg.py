"""Semantic segmentation: per-pixel classification into ``num_classes`` classes (255 = ignore)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from mtdense.errors import DataError
from mtdense.losses import build_loss
from mtdense.metrics import SegmentationMeter
from mtdense.tasks.base import Metric, Task, as_numpy

if TYPE_CHECKING:
    from mtdense.config.schema import Config


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
    metrics = (Metric("mIoU", False), Metric("mAcc", False), Metric("pixAcc", False))
    primary_metric = metrics[0]  # MTI-Net Sec. 4.1: mIoU
    target_key = "semseg"

    @classmethod
    def from_config(cls, cfg: Config, meta: Mapping[str, Any]) -> SemsegTask:
        """``num_classes`` (required), ``class_names`` and ``palette`` come from the dataset's ``meta.json``.

        There is no default class count: a head of the wrong width would train silently on wrong labels.
        """
        if "num_classes" not in meta:
            raise DataError(
                f"semseg needs the dataset's number of classes, but the dataset meta (meta.json in "
                f"data.root = {cfg.data.root}) has no 'num_classes' (keys: {sorted(meta)})"
            )
        return cls(int(meta["num_classes"]), class_names=meta.get("class_names"), palette=meta.get("palette"))

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
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.palette = np.asarray(palette, dtype=np.uint8) if palette is not None else default_palette(num_classes)

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

    def random_target(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
        """Class labels int64 ``(B, H, W)`` uniform in ``0..K−1`` (no ignore pixels)."""
        return torch.randint(0, self.num_classes, (batch, *size), generator=generator, dtype=torch.int64)

    def to_array(self, pred: Tensor) -> np.ndarray:
        """Class labels ``(H, W)`` as uint8 (uint16 beyond 255 classes)."""
        dtype = np.uint8 if self.num_classes <= 255 else np.uint16
        return pred.argmax(0).cpu().numpy().astype(dtype)
