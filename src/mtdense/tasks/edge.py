"""Semantic edge (contour) detection: per-pixel boundary probability."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from mtdense.losses import build_loss
from mtdense.metrics import EdgeMeter, FastEdgeMeter
from mtdense.tasks.base import Task, single_channel


class EdgeTask(Task):
    """Edges.

    Output: one logit channel ``(B, 1, H, W)``. Target: float ``{0, 1}``, 255 = ignore. Loss:
    class-balanced BCE with positive weight ``pos_weight`` (0.95 in the MTI-Net recipe). Postprocess:
    sigmoid. Meter: :class:`EdgeMeter` — the exact BSDS/SEISM odsF with one-to-one matching within
    ``max_dist`` × image diagonal (0.011 for NYUD, 0.0075 for PASCAL), or with ``exact=False`` the
    fast approximate F-score used to monitor training.
    """

    name = "edge"
    primary_metric = "odsF"
    target_key = "edge"

    def __init__(self, *, pos_weight: float = 0.95, max_dist: float = 0.011, exact: bool = True) -> None:
        super().__init__(
            out_channels=1, ignore_value=255.0, loss_fn=build_loss("balanced_bce", pos_weight=pos_weight)
        )
        self.max_dist, self.exact = max_dist, exact

    def postprocess(self, pred: Tensor) -> Tensor:
        return pred.sigmoid()

    def make_meter(self) -> EdgeMeter | FastEdgeMeter:
        return EdgeMeter(self.max_dist) if self.exact else FastEdgeMeter(self.max_dist)

    def visualize(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Edge probability or target ``(1, H, W)`` → grey (white = edge); ignore (255) is shown mid-grey."""
        e = single_channel(x)
        grey = np.where(e == 255, 0.5, np.clip(e, 0, 1))
        return np.repeat((grey * 255).round().astype(np.uint8)[..., None], 3, axis=2)
