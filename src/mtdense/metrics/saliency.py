"""Saliency (PASCAL-Context): max F-measure and mIoU over thresholds.

Protocol (MTI-Net / ASTMT ``eval_sal.py`` and ``jaccard.py``):
the ground truth is binary (``> 0.5``); the prediction is binarised with ``pred > t`` for the 15
thresholds ``linspace(0.2, 0.9, 15)``; per image and threshold, the Jaccard index (1 when prediction and
ground truth are both empty), precision ``tp / (tp + fp)`` and recall ``tp / (tp + fn)`` (0 when the
denominator is 0). These are averaged over images per threshold; ``mIoU`` = max over thresholds of the
mean Jaccard, ``maxF`` = max over thresholds of ``F_beta`` of the mean precision and mean recall.

``beta2``: ``0.3`` is the usual saliency convention (Achanta et al. 2009) and the default here; MTI-Net's
released ``eval_sal.py`` uses ``2PR / (P + R)``, i.e. ``beta2=1`` -- pass that to reproduce its numbers.
Pixels with target value 255 are void (neither counted as foreground nor background).
"""

from __future__ import annotations

import numpy as np
import torch

from mtdense.metrics.base import Meter, as_tensor, check_same_shape, require_data, squeeze_channel

__all__ = ["SaliencyMeter"]


class SaliencyMeter(Meter):
    """Streaming saliency metrics over ``linspace(0.2, 0.9, 15)`` thresholds.

    ``update(pred, target)``: ``pred`` probabilities in [0, 1], ``target`` in {0, 1} (255 = void), each
    ``(B, 1, H, W)`` or ``(B, H, W)``. ``compute()`` -> ``{"maxF", "mIoU"}`` in percent.
    """

    def __init__(
        self, beta2: float = 0.3, thresholds: np.ndarray | None = None, void_value: int = 255
    ) -> None:
        self.beta2 = float(beta2)
        self.thresholds = (
            np.linspace(0.2, 0.9, 15) if thresholds is None else np.asarray(thresholds, np.float64)
        )
        self.void_value = void_value
        super().__init__()

    def _zero_state(self) -> dict[str, np.ndarray]:
        t = len(self.thresholds)
        return {
            "jaccard": np.zeros(t, np.float64),
            "precision": np.zeros(t, np.float64),
            "recall": np.zeros(t, np.float64),
            "images": np.zeros((), np.int64),
        }

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        shape = "(B, 1, H, W) or (B, H, W)"
        pred = squeeze_channel(
            as_tensor(pred, "SaliencyMeter.update: pred"), "SaliencyMeter.update: pred", shape
        )
        target = squeeze_channel(
            as_tensor(target, "SaliencyMeter.update: target"), "SaliencyMeter.update: target", shape
        )
        check_same_shape("SaliencyMeter.update", pred.shape, target.shape)
        target = target.to(pred.device)
        valid = (target != self.void_value).flatten(1)[None]  # (1, B, HW)
        gt = (target > 0.5).flatten(1)[None] & valid
        thr = torch.as_tensor(self.thresholds, dtype=torch.float64, device=pred.device)[:, None, None]
        pr = (pred.double().flatten(1)[None] > thr) & valid  # (T, B, HW)
        tp = (pr & gt).sum(-1).double()
        fp = (pr & ~gt).sum(-1).double()
        fn = (~pr & gt).sum(-1).double()
        union = tp + fp + fn
        jaccard = torch.where(union > 0, tp / union.clamp(min=1), torch.ones_like(tp))
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.zeros_like(tp))
        recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), torch.zeros_like(tp))
        self._accumulate(
            jaccard=jaccard.sum(1).cpu().numpy(),
            precision=precision.sum(1).cpu().numpy(),
            recall=recall.sum(1).cpu().numpy(),
            images=pred.shape[0],
        )

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, float]:
        n = float(state["images"])
        require_data(n, type(self).__name__)
        p = state["precision"] / n
        r = state["recall"] / n
        denom = self.beta2 * p + r
        f = np.where(denom > 0, (1 + self.beta2) * p * r / np.where(denom > 0, denom, 1.0), 0.0)
        return {"maxF": 100.0 * float(f.max()), "mIoU": 100.0 * float((state["jaccard"] / n).max())}

    def __repr__(self) -> str:
        return f"SaliencyMeter(beta2={self.beta2})"
