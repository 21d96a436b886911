"""Semantic (and human-part) segmentation: mIoU, mAcc, pixel accuracy from a dataset confusion matrix.

Protocol (as MTI-Net's ``eval_semseg``): one confusion matrix
over every pixel of the split whose label is not ``ignore_index``; ``IoU_c = TP / (TP + FP + FN)``,
``mIoU`` the mean over classes, ``mAcc`` the mean over classes of ``TP / (TP + FN)``,
``pixAcc = sum TP / number of valid pixels``.

Absent classes (the paper is silent): a class with no pixel in the ground truth *and* none in the
prediction has an undefined IoU (0/0); it is left out of the mIoU mean rather than counted as 0 or 1.
For mAcc a class without ground-truth pixels is left out (its recall is undefined). Both choices keep
a small validation subset from being scored on classes it does not contain. (A class predicted but
absent from the ground truth has IoU 0 and does count.)
"""

from __future__ import annotations

import numpy as np
import torch

from mtdense.errors import DataError, ShapeError
from mtdense.metrics.base import Meter, as_tensor, check_same_shape, require_data

__all__ = ["SegmentationMeter"]


class SegmentationMeter(Meter):
    """Streaming confusion matrix for ``num_classes`` classes.

    ``update(pred, target)``:
        pred: logits / probabilities ``(B, K, H, W)`` (arg-max over ``K``) or labels ``(B, H, W)``.
        target: int labels ``(B, H, W)`` (or ``(B, 1, H, W)``) in ``[0, K)``, ``ignore_index`` ignored.

    ``compute()`` -> ``{"mIoU", "mAcc", "pixAcc"}`` in percent; :meth:`compute_per_class` gives the
    per-class IoU and accuracy arrays (NaN where undefined).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"SegmentationMeter: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        super().__init__()

    def _zero_state(self) -> dict[str, np.ndarray]:
        return {"confusion": np.zeros((self.num_classes, self.num_classes), np.int64)}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        k = self.num_classes
        pred = as_tensor(pred, "SegmentationMeter.update: pred")
        target = as_tensor(target, "SegmentationMeter.update: target")
        if target.dim() == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if target.dim() != 3:
            raise ShapeError(
                "SegmentationMeter.update: target: expected (B, H, W) labels, "
                f"got shape {tuple(target.shape)}"
            )
        if pred.dim() == 4:
            if pred.shape[1] != k:
                raise ShapeError(
                    f"SegmentationMeter.update: pred: expected (B, K={k}, H, W) scores or (B, H, W) labels, "
                    f"got shape {tuple(pred.shape)}"
                )
            pred = pred.argmax(dim=1)
        elif pred.dim() != 3 or pred.is_floating_point():
            raise ShapeError(
                f"SegmentationMeter.update: pred: expected (B, K={k}, H, W) scores or (B, H, W) integer "
                f"labels, got {pred.dtype} of shape {tuple(pred.shape)}"
            )
        check_same_shape("SegmentationMeter.update", pred.shape, target.shape)
        target = target.to(pred.device).long()
        pred = pred.long()
        valid = target != self.ignore_index
        t = target[valid]
        p = pred[valid]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
            bad = t[(t < 0) | (t >= k)][0].item()
            raise DataError(
                f"SegmentationMeter.update: target contains label {bad}, outside [0, {k}) and not "
                f"ignore_index={self.ignore_index}"
            )
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= k):
            raise ShapeError(f"SegmentationMeter.update: predicted labels must lie in [0, {k})")
        # one bincount over (gt, pred) pairs: rows = ground truth, columns = prediction
        conf = torch.bincount(t * k + p, minlength=k * k).reshape(k, k)
        self._accumulate(confusion=conf.cpu().numpy().astype(np.int64))

    def compute_per_class(self) -> dict[str, np.ndarray]:
        """``{"IoU": (K,), "Acc": (K,)}`` in percent; NaN for classes where the value is undefined."""
        return _per_class(self.state["confusion"])

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, float]:
        conf = state["confusion"]
        per_class = _per_class(conf)
        return {
            "mIoU": float(np.nanmean(per_class["IoU"])),
            "mAcc": float(np.nanmean(per_class["Acc"])),
            "pixAcc": 100.0 * float(np.trace(conf)) / float(conf.sum()),
        }

    def __repr__(self) -> str:
        return f"SegmentationMeter(num_classes={self.num_classes}, ignore_index={self.ignore_index})"


def _per_class(confusion: np.ndarray) -> dict[str, np.ndarray]:
    conf = confusion.astype(np.float64)
    require_data(conf.sum(), "SegmentationMeter")
    tp = np.diag(conf)
    gt = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    union = gt + predicted - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    return {"IoU": 100.0 * iou, "Acc": 100.0 * acc}
