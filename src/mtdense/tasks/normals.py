"""Surface normal estimation: unit vectors in the camera frame (x right, y down, z forward)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mtdense.losses import build_loss
from mtdense.metrics import NormalsMeter
from mtdense.tasks.base import Metric, Task, as_numpy

if TYPE_CHECKING:
    from mtdense.config.schema import Config


class NormalsTask(Task):
    """Surface normals.

    Output: three channels ``(B, 3, H, W)``. Loss: ``"l1"`` on L2-normalised predictions (MTI-Net
    reference) or ``"cosine"`` = 1 − cos (DenseMTL, seed 004); PAD-Net's Euclidean loss is
    ``"l2"``. Valid where the target's norm > 0. Postprocess: L2 normalisation. Meter: angular error.
    """

    name = "normals"
    metrics = (
        Metric("mean", True),
        Metric("median", True),
        Metric("rmse", True),
        Metric("a11", False),
        Metric("a22", False),
        Metric("a30", False),
    )
    primary_metric = metrics[0]  # MTI-Net Sec. 4.1: mean angular error
    target_key = "normals"

    @classmethod
    def from_config(cls, cfg: Config, meta: Mapping[str, Any]) -> NormalsTask:
        """``loss.normals``; nothing from the dataset meta."""
        return cls(loss=cfg.loss.normals)

    def __init__(self, *, loss: Literal["l1", "cosine", "l2"] = "l1") -> None:
        loss_name = {"l1": "normals_l1", "cosine": "cosine", "l2": "normals_l2"}[loss]
        super().__init__(out_channels=3, ignore_value=0.0, loss_fn=build_loss(loss_name))

    def postprocess(self, pred: Tensor) -> Tensor:
        return F.normalize(pred, dim=1)

    def make_meter(self) -> NormalsMeter:
        return NormalsMeter()

    def random_target(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
        """Unit vectors float32 ``(B, 3, H, W)``, directions uniform on the sphere."""
        return F.normalize(torch.randn((batch, 3, *size), generator=generator), dim=1)

    def visualize(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Normals ``(3, H, W)`` → RGB ``(n + 1) / 2``; invalid (zero) vectors are black."""
        n = as_numpy(x).astype(np.float32)
        valid = np.linalg.norm(n, axis=0) > 0
        rgb = np.clip((n.transpose(1, 2, 0) + 1) / 2, 0, 1)
        rgb[~valid] = 0
        return (rgb * 255).round().astype(np.uint8)
