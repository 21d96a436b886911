"""Surface normal estimation: unit vectors in the camera frame (x right, y down, z forward)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from mtdense.losses import build_loss
from mtdense.metrics import NormalsMeter
from mtdense.tasks.base import Task, as_numpy


class NormalsTask(Task):
    """Surface normals.

    Output: three channels ``(B, 3, H, W)``. Loss: ``"l1"`` on L2-normalised predictions (MTI-Net
    reference) or ``"cosine"`` = 1 − cos (DenseMTL, seed 004); PAD-Net's Euclidean loss is
    ``"l2"``. Valid where the target's norm > 0. Postprocess: L2 normalisation. Meter: angular error.
    """

    name = "normals"
    primary_metric = "mean"
    target_key = "normals"

    def __init__(self, *, loss: Literal["l1", "cosine", "l2"] = "l1") -> None:
        loss_name = {"l1": "normals_l1", "cosine": "cosine", "l2": "normals_l2"}[loss]
        super().__init__(out_channels=3, ignore_value=0.0, loss_fn=build_loss(loss_name))

    def postprocess(self, pred: Tensor) -> Tensor:
        return F.normalize(pred, dim=1)

    def make_meter(self) -> NormalsMeter:
        return NormalsMeter()

    def visualize(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Normals ``(3, H, W)`` → RGB ``(n + 1) / 2``; invalid (zero) vectors are black."""
        n = as_numpy(x).astype(np.float32)
        valid = np.linalg.norm(n, axis=0) > 0
        rgb = np.clip((n.transpose(1, 2, 0) + 1) / 2, 0, 1)
        rgb[~valid] = 0
        return (rgb * 255).round().astype(np.uint8)
