"""Semantic edge (contour) detection: per-pixel boundary probability."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from mtdense.losses import build_loss
from mtdense.losses.registry import lookup
from mtdense.metrics import EdgeMeter, FastEdgeMeter
from mtdense.tasks.base import Metric, Task, single_channel

if TYPE_CHECKING:
    from mtdense.config.schema import Config


#: ``loss.edge`` → (registered loss name, its arguments given ``pos_weight``).
_EDGE_LOSSES: dict[str, Callable[[float], tuple[str, dict[str, Any]]]] = {
    "balanced": lambda pos_weight: ("balanced_bce", {"pos_weight": pos_weight}),
    "ce": lambda pos_weight: ("bce", {}),
}


class EdgeTask(Task):
    """Edges.

    Output: one logit channel ``(B, 1, H, W)``. Target: float ``{0, 1}``, 255 = ignore. Loss
    (``loss``): ``"balanced"``, class-balanced BCE with positive weight ``pos_weight`` (0.95 in the
    MTI-Net recipe), or ``"ce"``, plain BCE (PAD-Net Sec. 3.6; ``pos_weight`` unused). Postprocess:
    sigmoid. Meter: :class:`EdgeMeter` — the exact BSDS/SEISM odsF with one-to-one matching within
    ``max_dist`` × image diagonal (0.011 for NYUD, 0.0075 for PASCAL), or with ``exact=False`` the
    fast approximate F-score used to monitor training.
    """

    name = "edge"
    metrics = (Metric("odsF", False), Metric("oisF", False), Metric("ap", False))
    primary_metric = metrics[0]  # MTI-Net Sec. 4.1: odsF
    target_key = "edge"

    @classmethod
    def from_config(cls, cfg: Config, meta: Mapping[str, Any]) -> EdgeTask:
        """``loss.edge``, ``loss.edge_pos_weight``, ``eval.edge_max_dist`` and ``eval.edge_exact``; nothing from
        the meta."""
        return cls(
            loss=cfg.loss.edge,
            pos_weight=cfg.loss.edge_pos_weight,
            max_dist=cfg.eval.edge_max_dist,
            exact=cfg.eval.edge_exact,
        )

    def __init__(
        self,
        *,
        loss: Literal["balanced", "ce"] = "balanced",
        pos_weight: float = 0.95,
        max_dist: float = 0.011,
        exact: bool = True,
    ) -> None:
        name, kwargs = lookup(_EDGE_LOSSES, loss, "edge loss (loss.edge)")(pos_weight)
        super().__init__(out_channels=1, ignore_value=255.0, loss_fn=build_loss(name, **kwargs))
        self.max_dist, self.exact = max_dist, exact

    def postprocess(self, pred: Tensor) -> Tensor:
        return pred.sigmoid()

    def make_meter(self) -> EdgeMeter | FastEdgeMeter:
        return EdgeMeter(self.max_dist) if self.exact else FastEdgeMeter(self.max_dist)

    def random_target(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
        """Float32 ``(B, 1, H, W)`` in {0, 1} with about 10 % edge pixels, a typical NYUD density (both classes
        present, as the balanced loss expects)."""
        return (torch.rand((batch, 1, *size), generator=generator) < 0.1).float()

    def visualize(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Edge probability or target ``(1, H, W)`` → grey (white = edge); ignore (255) is shown mid-grey."""
        e = single_channel(x)
        grey = np.where(e == 255, 0.5, np.clip(e, 0, 1))
        return np.repeat((grey * 255).round().astype(np.uint8)[..., None], 3, axis=2)
