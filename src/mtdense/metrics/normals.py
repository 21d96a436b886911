"""Surface normals: angular error statistics (mean, median, rmse, share under 11.25 / 22.5 / 30 degrees).

Protocol (MTI-Net / ASTMT ``eval_normals.py``): pixels with a
non-zero ground-truth normal are valid; predictions (and ground truth) are L2-normalised; the error is
``degrees(arccos(clip(p . g, -1, 1)))``, pooled over every valid pixel of the split;
``rmse = sqrt(mean e^2)``; ``a11 / a22 / a30`` = percentage of pixels with ``e < 11.25 / 22.5 / 30``.

Streaming median: storing every error of a split is too large (NYUD: ~2e8 pixels), so errors are
counted in a histogram of 18000 bins of 0.01 degree over [0, 180] (int64 counts, all-reducible). The
median is read from the cumulative histogram with numpy's convention (even count: mean of the two
middle values), each middle value estimated by the centre of its bin: the result is within 0.005
degree of ``numpy.median`` of the same errors. Mean, rmse and the thresholded shares are exact.

A prediction with zero norm cannot be normalised; it stays the zero vector, so its error is 90 degrees.
Errors are computed in float64 (``arccos`` near 1 loses precision in float32).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mtdense.errors import ShapeError
from mtdense.metrics.base import Meter, as_tensor, check_same_shape, require_data

__all__ = ["NormalsMeter"]

_BIN = 0.01  # degrees
_NUM_BINS = 18000


class NormalsMeter(Meter):
    """Streaming angular-error statistics.

    ``update(pred, target)``: ``(B, 3, H, W)`` each; the target's zero vectors mark invalid pixels.
    ``compute()`` -> ``{"mean", "median", "rmse", "a11", "a22", "a30"}`` (degrees; shares in percent).
    """

    def _zero_state(self) -> dict[str, np.ndarray]:
        return {
            "sums": np.zeros(2, np.float64),  # sum e, sum e^2
            "counts": np.zeros(4, np.int64),  # n, n(e < 11.25), n(e < 22.5), n(e < 30)
            "hist": np.zeros(_NUM_BINS, np.int64),
        }

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = as_tensor(pred, "NormalsMeter.update: pred")
        target = as_tensor(target, "NormalsMeter.update: target")
        for name, x in (("pred", pred), ("target", target)):
            if x.dim() != 4 or x.shape[1] != 3:
                raise ShapeError(
                    f"NormalsMeter.update: {name}: expected (B, 3, H, W), got shape {tuple(x.shape)}"
                )
        check_same_shape("NormalsMeter.update", pred.shape, target.shape)
        p = pred.to(torch.float64)
        g = target.to(p.device, torch.float64)
        g_norm = g.norm(dim=1)
        valid = torch.isfinite(g_norm) & (g_norm > 0)
        p = torch.nn.functional.normalize(p, dim=1, eps=1e-12)
        g = g / torch.where(valid, g_norm, torch.ones_like(g_norm))[:, None]
        dot = (p * g).sum(dim=1)[valid].clamp(-1.0, 1.0)
        err = torch.rad2deg(torch.arccos(dot))
        bins = (err / _BIN).long().clamp(0, _NUM_BINS - 1)
        hist = torch.bincount(bins, minlength=_NUM_BINS)
        self._accumulate(
            sums=np.array([err.sum().item(), (err * err).sum().item()]),
            counts=np.array(
                [err.numel(), int((err < 11.25).sum()), int((err < 22.5).sum()), int((err < 30).sum())]
            ),
            hist=hist.cpu().numpy().astype(np.int64),
        )

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, float]:
        n = int(state["counts"][0])
        require_data(n, type(self).__name__)
        return {
            "mean": state["sums"][0] / n,
            "median": _histogram_median(state["hist"], n),
            "rmse": math.sqrt(state["sums"][1] / n),
            "a11": 100.0 * state["counts"][1] / n,
            "a22": 100.0 * state["counts"][2] / n,
            "a30": 100.0 * state["counts"][3] / n,
        }


def _histogram_median(hist: np.ndarray, n: int) -> float:
    """numpy.median from a histogram: centre of the bin holding each middle order statistic."""
    cumulative = np.cumsum(hist)
    ranks = [(n - 1) // 2, n // 2]  # 0-based; equal for odd n
    bins = np.searchsorted(cumulative, np.asarray(ranks) + 1)  # first bin whose cumulative count > rank
    return float(np.mean((bins + 0.5) * _BIN))
