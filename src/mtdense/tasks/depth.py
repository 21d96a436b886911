"""Monocular depth estimation in metres (0 = invalid in targets)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from matplotlib import colormaps
from torch import Tensor

from mtdense.losses import build_loss
from mtdense.metrics import DepthMeter
from mtdense.tasks.base import Metric, Task, single_channel

if TYPE_CHECKING:
    from mtdense.config.schema import Config


class DepthTask(Task):
    """Depth regression.

    Output: one channel ``(B, 1, H, W)`` in metres, no output activation (PAD-Net, MTI-Net and TRL
    regress depth directly). Loss: ``"l1"`` (MTI-Net), ``"l2"`` (PAD-Net's Euclidean loss) or
    ``"berhu"`` (TRL eq. 5), masked to valid pixels. Postprocess: clamp to ``min_depth`` so log
    metrics stay finite. Meter: rmse / rel / log10 / δ, ``reduction`` as in :class:`DepthMeter`.
    """

    name = "depth"
    metrics = (
        Metric("rmse", True),
        Metric("rmse_log", True),
        Metric("rel", True),
        Metric("sq_rel", True),
        Metric("log10", True),
        Metric("d1", False),
        Metric("d2", False),
        Metric("d3", False),
    )
    primary_metric = metrics[0]  # MTI-Net Sec. 4.1: rmse
    target_key = "depth"

    @classmethod
    def from_config(cls, cfg: Config, meta: Mapping[str, Any]) -> DepthTask:
        """``loss.depth`` and the evaluation protocol (``eval.depth_reduction``, ``depth_crop``, ``depth_min``,
        ``depth_max``); nothing from the dataset meta."""
        return cls(
            loss=cfg.loss.depth,
            reduction=cfg.eval.depth_reduction,
            min_depth=cfg.eval.depth_min,
            max_depth=cfg.eval.depth_max,
            crop=cfg.eval.depth_crop,
        )

    def __init__(
        self,
        *,
        loss: Literal["l1", "l2", "berhu"] = "l1",
        min_depth: float | None = None,
        max_depth: float | None = None,
        reduction: Literal["pixel", "image"] = "pixel",
        vis_max_depth: float | None = None,
        crop: str | tuple[int, int, int, int] | None = None,
    ) -> None:
        super().__init__(out_channels=1, ignore_value=0.0, loss_fn=build_loss(loss))
        self.min_depth, self.max_depth, self.reduction = min_depth, max_depth, reduction
        self.vis_max_depth = vis_max_depth
        self.crop = crop

    def postprocess(self, pred: Tensor) -> Tensor:
        return pred.clamp(min=self.min_depth if self.min_depth is not None else 1e-3)

    def make_meter(self) -> DepthMeter:
        return DepthMeter(reduction=self.reduction, min_depth=self.min_depth, max_depth=self.max_depth, crop=self.crop)

    def random_target(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
        """Metres float32 ``(B, 1, H, W)`` uniform in [0.5, 10), NYUD's range; all valid (the loss sees every pixel)."""
        return 0.5 + 9.5 * torch.rand((batch, 1, *size), generator=generator)

    def visualize(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Depth ``(1, H, W)`` or ``(H, W)`` → turbo colours (near blue, far red); invalid (≤ 0) is black."""
        d = single_channel(x)
        valid = np.isfinite(d) & (d > 0)
        hi = self.vis_max_depth or (float(np.percentile(d[valid], 99)) if valid.any() else 1.0)
        rgb = colormaps["turbo"](np.clip(d / max(hi, 1e-6), 0, 1))[..., :3]
        rgb[~valid] = 0
        return (rgb * 255).round().astype(np.uint8)
