"""Monocular depth: rmse, rmse_log, rel, sq_rel, log10 and the delta accuracies.

Definitions (Eigen et al. 2014): with ``p`` the prediction and
``g`` the ground truth in metres over the valid pixels,
``rmse = sqrt(mean (p - g)^2)``, ``rmse_log = sqrt(mean (ln p - ln g)^2)``, ``rel = mean |p - g| / g``,
``sq_rel = mean (p - g)^2 / g``, ``log10 = mean |log10 p - log10 g|``, ``d_k`` = share (percent) of
pixels with ``max(p / g, g / p) < 1.25^k``.

Reductions:

* ``"pixel"`` pools every valid pixel of the split, as MTI-Net / ATRC's evaluation does
  (``eval_depth.py``: sums over pixels, one division at the end).
* ``"image"`` computes the metrics per image and averages them over images (the Eigen / BTS line).
  Images without any valid pixel are skipped (their metrics are undefined).

Valid pixels: ``g > 0`` and finite; with caps, also ``min_depth < g < max_depth`` (strict, as BTS's
``eval_depth``), and inside ``crop`` when given. When caps are given the predictions are clipped to
``[min_depth, max_depth]`` (BTS / Eigen protocol; ``+inf`` -> max, NaN -> min).

Non-positive predictions: depth is positive, so predictions are clamped to ``>= 1e-9`` m before *every*
term, exactly as MTI-Net's ``eval_depth.py`` does (``pred[pred <= 0] = 1e-9``). Log terms therefore stay
finite (a non-positive prediction is scored as an almost-zero depth: a large log error, ``rel`` close to
1, and it fails every ``d_k``).
"""

from __future__ import annotations

import numpy as np
import torch

from mtdense.errors import ShapeError
from mtdense.metrics.base import Meter, as_tensor, check_same_shape, require_data, squeeze_channel

__all__ = ["DepthMeter", "EIGEN_CROP"]

#: Eigen crop for 480 x 640 NYUD images, as (top, bottom, left, right) slice bounds: rows 44:471, cols 40:601.
EIGEN_CROP = (44, 471, 40, 601)
_EPS = 1e-9
_KEYS = ("rmse", "rmse_log", "rel", "sq_rel", "log10", "d1", "d2", "d3")


class DepthMeter(Meter):
    """Streaming depth metrics.

    Args:
        reduction: ``"pixel"`` (pool all valid pixels) or ``"image"`` (mean of per-image metrics).
        min_depth, max_depth: optional caps in metres (validity of ``g`` and clipping of ``p``).
        crop: ``None``, ``"eigen"`` (480 x 640 inputs only) or ``(top, bottom, left, right)`` slice bounds.

    ``update(pred, target)``: ``(B, 1, H, W)`` or ``(B, H, W)`` depths in metres; ``target == 0`` invalid.
    ``compute()`` -> ``{"rmse", "rmse_log", "rel", "sq_rel", "log10", "d1", "d2", "d3"}``
    (``d_k`` in percent).
    """

    def __init__(
        self,
        reduction: str = "pixel",
        *,
        min_depth: float | None = None,
        max_depth: float | None = None,
        crop: str | tuple[int, int, int, int] | None = None,
    ) -> None:
        if reduction not in ("pixel", "image"):
            raise ValueError(f"DepthMeter: reduction must be 'pixel' or 'image', got {reduction!r}")
        if isinstance(crop, str) and crop != "eigen":
            raise ValueError(
                f"DepthMeter: crop must be None, 'eigen' or (top, bottom, left, right), got {crop!r}"
            )
        if crop is not None and not isinstance(crop, str):
            if len(crop) != 4:
                raise ValueError(f"DepthMeter: crop must be (top, bottom, left, right), got {crop!r}")
            crop = tuple(int(c) for c in crop)
        if min_depth is not None and max_depth is not None and not min_depth < max_depth:
            raise ValueError(f"DepthMeter: need min_depth < max_depth, got {min_depth} and {max_depth}")
        self.reduction = reduction
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.crop = crop
        super().__init__()

    def _zero_state(self) -> dict[str, np.ndarray]:
        # pixel: sums of the 8 per-pixel terms; image: sums of the 8 per-image metrics
        return {"sums": np.zeros(8, np.float64), "count": np.zeros((), np.int64)}

    def _crop_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        if self.crop is None:
            return None
        if self.crop == "eigen":
            if (height, width) != (480, 640):
                raise ShapeError(
                    f"DepthMeter: the Eigen crop is defined for 480x640 inputs, got {height}x{width}"
                )
            top, bottom, left, right = EIGEN_CROP
        else:
            top, bottom, left, right = self.crop
            if not (0 <= top < bottom <= height and 0 <= left < right <= width):
                raise ShapeError(
                    f"DepthMeter: crop (top, bottom, left, right)={self.crop} does not fit a "
                    f"{height}x{width} input"
                )
        mask = torch.zeros(height, width, dtype=torch.bool, device=device)
        mask[top:bottom, left:right] = True
        return mask

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        shape = "(B, 1, H, W) or (B, H, W) depth in metres"
        pred = squeeze_channel(as_tensor(pred, "DepthMeter.update: pred"), "DepthMeter.update: pred", shape)
        target = squeeze_channel(
            as_tensor(target, "DepthMeter.update: target"), "DepthMeter.update: target", shape
        )
        check_same_shape("DepthMeter.update", pred.shape, target.shape)
        g = target.to(pred.device, torch.float64)
        p = pred.to(torch.float64)
        valid = torch.isfinite(g) & (g > 0)
        if self.min_depth is not None:
            valid &= g > self.min_depth
            p = torch.nan_to_num(p, nan=self.min_depth)
        if self.max_depth is not None:
            valid &= g < self.max_depth
            p = torch.nan_to_num(p, posinf=self.max_depth)
        if self.min_depth is not None or self.max_depth is not None:
            p = p.clamp(min=self.min_depth, max=self.max_depth)
        crop = self._crop_mask(g.shape[-2], g.shape[-1], g.device)
        if crop is not None:
            valid &= crop
        p = p.clamp(min=_EPS)  # MTI-Net's eval: pred[pred <= 0] = 1e-9
        g = torch.where(valid, g, torch.ones_like(g))  # keeps invalid pixels finite; they are masked below
        diff = p - g
        sq = diff * diff
        log_diff = torch.log(p) - torch.log(g)
        ratio = torch.maximum(p / g, g / p)
        terms = torch.stack(
            [
                sq,
                log_diff * log_diff,
                diff.abs() / g,
                sq / g,
                (torch.log10(p) - torch.log10(g)).abs(),
                (ratio < 1.25).double(),
                (ratio < 1.25**2).double(),
                (ratio < 1.25**3).double(),
            ],
            dim=1,
        )  # (B, 8, H, W)
        terms = torch.where(valid[:, None], terms, torch.zeros_like(terms))
        sums = terms.sum(dim=(2, 3))  # (B, 8)
        counts = valid.sum(dim=(1, 2))  # (B,)
        if self.reduction == "pixel":
            self._accumulate(sums=sums.sum(0).cpu().numpy(), count=int(counts.sum()))
            return
        has = counts > 0
        per_image = sums[has] / counts[has, None].double()
        per_image[:, :2] = per_image[:, :2].sqrt()
        self._accumulate(sums=per_image.sum(0).cpu().numpy(), count=int(has.sum()))

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, float]:
        n = float(state["count"])
        require_data(n, type(self).__name__)
        values = state["sums"] / n
        if self.reduction == "pixel":
            values[:2] = np.sqrt(values[:2])
        values[5:] *= 100.0
        return dict(zip(_KEYS, values.tolist(), strict=True))

    def __repr__(self) -> str:
        return (
            f"DepthMeter(reduction={self.reduction!r}, min_depth={self.min_depth}, "
            f"max_depth={self.max_depth}, crop={self.crop!r})"
        )
