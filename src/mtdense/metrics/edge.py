"""Edge detection: ODS / OIS F-measure and average precision by the BSDS protocol (as SEISM computes it).

Protocol (SEISM ``eval_cont.m`` -> Dollar's ``edgesEvalImg.m`` ->
BSDS ``correspondPixels``; the evaluation MTI-Net, ATRC and InvPT report), per image:

1. ground-truth boundaries are thinned to one pixel (``bwmorph(gt, 'thin', Inf)``);
2. for each of ``K`` thresholds ``t_k = linspace(1/(K+1), 1 - 1/(K+1), K)`` (0.01 ... 0.99 for K = 99)
   the prediction is binarised (``E >= t_k``) and thinned to convergence;
3. predicted pixels are matched one-to-one to ground-truth pixels closer than
   ``max_dist x image diagonal`` (minimum-cost assignment; see :mod:`mtdense.metrics._matching`: the
   counts equal the size of a maximum matching, computed exactly);
4. ``cntR`` = matched ground-truth pixels, ``sumR`` = ground-truth pixels, ``cntP`` = matched predicted
   pixels, ``sumP`` = predicted pixels.

Over the dataset (SEISM ``gather_measure`` / ``general_ods`` / ``general_ois`` / ``general_ap``):

* ODS: counts summed over images per threshold, ``R = cntR / sumR``, ``P = cntP / sumP``,
  ``F = 2PR / (P + R)``; ``odsF`` = max over thresholds (no interpolation between thresholds, as SEISM).
* OIS: per image the first threshold of maximal per-image F; the four counts at those thresholds are
  summed over images and turned into one F.
* AP: ``interp1(R, P, 0:0.01:1)`` over the dataset curve (recall made unique, keeping the first -- lowest
  threshold -- occurrence), values outside the recall range dropped, ``sum / 100``.
* SEISM's conventions for empty sets: ``sumR = 0`` gives ``R = 1, P = 0``; else ``sumP = 0`` gives
  ``R = 0, P = 1``; ``F = 0`` when ``P + R = 0``.

Choices where the protocol is silent:

* Pixels whose target is 255 (ignore, e.g. crop padding) are neither ground truth nor prediction: they are
  cleared *before* thinning, which equals cropping the image to its valid part (pixels outside an image
  count as background for ``bwmorph``). The diagonal is that of the bounding box of the valid pixels (the
  full image when nothing is ignored); an image without valid pixels is skipped.
* ``max_dist``: 0.0075 (SEISM default, PASCAL-Context); the ATRC line uses 0.011 for NYUD.
* ``quantize=True`` reproduces the papers' detour through 8-bit PNGs (``E = floor(255 p) / 255``).

Cost: thinning all ``K`` thresholds at once with bit-sliced words (:mod:`mtdense.metrics._thinning`) and
warm-started exact matching take about 0.8 s of CPU per 480 x 640 image and 99 thresholds
(``benchmarks/bench_edge_metric.py``; ~1/4 thinning, ~3/4 matching). :class:`FastEdgeMeter` is an
O(HW) approximation for monitoring during training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mtdense.errors import MtdenseError
from mtdense.metrics._matching import candidate_matrix, max_matching_sizes
from mtdense.metrics._thinning import pack_levels, thin, thin_packed, unpack_planes
from mtdense.metrics.base import Meter, as_tensor, check_same_shape, require_data, squeeze_channel

__all__ = ["EdgeMeter", "FastEdgeMeter", "edge_pr_counts", "edge_thresholds"]

_SHAPE = "(B, 1, H, W) or (B, H, W)"


def edge_thresholds(thresholds: int | Sequence[float]) -> np.ndarray:
    """``K`` -> ``linspace(1/(K+1), 1 - 1/(K+1), K)`` (Dollar / SEISM); a sequence is validated."""
    if isinstance(thresholds, (int, np.integer)):
        k = int(thresholds)
        if k < 1:
            raise ValueError(f"edge thresholds: need K >= 1, got {k}")
        return np.linspace(1.0 / (k + 1), 1.0 - 1.0 / (k + 1), k)
    t = np.asarray(thresholds, np.float64).ravel()
    if t.size == 0 or not (np.all(np.diff(t) > 0) and t[0] > 0):
        raise ValueError(f"edge thresholds: need a strictly increasing sequence of values > 0, got {t}")
    return t


def match_radius(valid: np.ndarray, max_dist: float) -> float:
    """``max_dist`` times the diagonal of the bounding box of ``valid`` (pixels), 0 when nothing is valid."""
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    if rows.size == 0:
        return 0.0
    height = rows[-1] - rows[0] + 1
    width = cols[-1] - cols[0] + 1
    return max_dist * math.hypot(height, width)


def edge_pr_counts(prob: np.ndarray, gt: np.ndarray, *, radius: float, thresholds: np.ndarray) -> np.ndarray:
    """BSDS counts of one image at every threshold.

    Args:
        prob: ``(H, W)`` float edge probabilities (pixels to ignore already set to 0).
        gt: ``(H, W)`` boolean ground-truth boundaries (not yet thinned; ignored pixels False).
        radius: matching tolerance in pixels (``max_dist x diagonal``).
        thresholds: ``(K,)`` increasing thresholds, all > 0.

    Returns:
        ``(K, 4)`` int64: ``cntR, sumR, cntP, sumP`` per threshold.
    """
    height, width = gt.shape
    k = len(thresholds)
    gt_pixels = np.flatnonzero(thin(gt))
    # level = number of thresholds <= prob, so that "prob >= t_k" <=> "level > k" (nested bit-planes)
    levels = np.searchsorted(thresholds, prob, side="right")
    pixels, bits = unpack_planes(thin_packed(pack_levels(levels, k)), k)
    counts = np.zeros((k, 4), np.int64)
    counts[:, 1] = gt_pixels.size
    counts[:, 3] = bits.sum(axis=1)
    if gt_pixels.size and pixels.size:
        gt_index = np.full(height * width, -1, np.int64)
        gt_index[gt_pixels] = np.arange(gt_pixels.size)
        candidates = candidate_matrix(gt_pixels, (height, width), radius)
        matched = max_matching_sizes((pixels[bits[i]] for i in range(k)), candidates, gt_index)
        counts[:, 0] = matched
        counts[:, 2] = matched
    return counts


def _precision_recall(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(..., 4)`` counts -> P, R, F with SEISM's conventions for empty sets."""
    cnt_r, sum_r, cnt_p, sum_p = (counts[..., i].astype(np.float64) for i in range(4))
    has_r = sum_r > 0
    has_p = sum_p > 0
    recall = np.where(has_r, cnt_r / np.where(has_r, sum_r, 1.0), 1.0)
    precision = np.where(has_r, np.where(has_p, cnt_p / np.where(has_p, sum_p, 1.0), 1.0), 0.0)
    total = precision + recall
    f = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1.0), 0.0)
    return precision, recall, f


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """SEISM ``general_ap``: interpolate P at R = 0:0.01:1 within the recall range, sum / 100."""
    r_unique, first = np.unique(recall, return_index=True)
    if r_unique.size < 2:
        return 0.0
    grid = np.linspace(0.0, 1.0, 101)
    inside = (grid >= r_unique[0]) & (grid <= r_unique[-1])
    return float(np.interp(grid[inside], r_unique, precision[first]).sum() / 100.0)


class _EdgeCountMeter(Meter):
    """Dataset accumulation of per-threshold BSDS counts, shared by the exact and the fast meter."""

    def __init__(self, max_dist: float = 0.0075, thresholds: int | Sequence[float] = 99) -> None:
        if not max_dist > 0:
            raise ValueError(f"{type(self).__name__}: max_dist must be > 0, got {max_dist}")
        self.max_dist = float(max_dist)
        self.thresholds = edge_thresholds(thresholds)
        super().__init__()

    def _zero_state(self) -> dict[str, np.ndarray]:
        return {
            "counts": np.zeros((len(self.thresholds), 4), np.int64),  # cntR, sumR, cntP, sumP
            "ois": np.zeros(4, np.int64),  # counts at each image's best threshold, summed
            "images": np.zeros((), np.int64),
        }

    def _add_image(self, counts: np.ndarray) -> None:
        best = int(np.argmax(_precision_recall(counts)[2]))  # first maximum, as MATLAB's max
        self._accumulate(counts=counts, ois=counts[best], images=1)

    def _inputs(self, prob: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        name = type(self).__name__
        prob = squeeze_channel(as_tensor(prob, f"{name}.update: prob"), f"{name}.update: prob", _SHAPE)
        target = squeeze_channel(
            as_tensor(target, f"{name}.update: target"), f"{name}.update: target", _SHAPE
        )
        check_same_shape(f"{name}.update", prob.shape, target.shape)
        return prob, target

    def compute_curve(self) -> dict[str, np.ndarray]:
        """Dataset precision-recall curve: ``thresholds``, ``precision``, ``recall``, ``f`` (percent)."""
        require_data(float(self.state["images"]), type(self).__name__)
        p, r, f = _precision_recall(self.state["counts"])
        return {"thresholds": self.thresholds.copy(), "precision": 100 * p, "recall": 100 * r, "f": 100 * f}

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, float]:
        require_data(float(state["images"]), type(self).__name__)
        p, r, f = _precision_recall(state["counts"])
        ois_f = _precision_recall(state["ois"])[2]
        return {
            "odsF": 100.0 * float(f.max()),
            "oisF": 100.0 * float(ois_f),
            "ap": 100.0 * _average_precision(r, p),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_dist={self.max_dist}, thresholds={len(self.thresholds)})"


class EdgeMeter(_EdgeCountMeter):
    """Exact BSDS / SEISM edge evaluation (odsF, oisF, AP in percent), streaming over images.

    Args:
        max_dist: matching tolerance as a fraction of the image diagonal (0.0075 PASCAL, 0.011 NYUD).
        thresholds: number ``K`` of thresholds (``linspace(1/(K+1), 1-1/(K+1), K)``) or explicit values.
        quantize: round probabilities down to multiples of 1/255 first, as the papers' 8-bit PNGs do.
        void_value: target value of ignored pixels.

    ``update(prob, target)``: ``prob`` edge probabilities in [0, 1] and ``target`` binary boundaries
    (255 = ignore), each ``(B, 1, H, W)`` or ``(B, H, W)``. Runs on the CPU (numpy / scipy).
    """

    def __init__(
        self,
        max_dist: float = 0.0075,
        thresholds: int | Sequence[float] = 99,
        *,
        quantize: bool = False,
        void_value: int = 255,
    ) -> None:
        self.quantize = quantize
        self.void_value = void_value
        super().__init__(max_dist, thresholds)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        prob, target = self._inputs(pred, target)
        prob = prob.to("cpu", torch.float64).numpy()
        target = target.to("cpu").numpy()
        _check_not_nan(bool(np.isnan(prob).any()), type(self).__name__)
        for p, t in zip(prob, target, strict=True):
            valid = t != self.void_value
            if not valid.any():
                continue
            if self.quantize:
                p = np.floor(np.clip(p, 0.0, 1.0) * 255.0) / 255.0
            p = np.where(valid, p, 0.0)
            gt = valid & (t > 0.5)
            counts = edge_pr_counts(
                p, gt, radius=match_radius(valid, self.max_dist), thresholds=self.thresholds
            )
            self._add_image(counts)


class FastEdgeMeter(_EdgeCountMeter):
    """Fast *approximate* edge F-measure for monitoring during training (same keys as :class:`EdgeMeter`).

    Approximation, not the benchmark number: the ground truth is thinned as in the exact protocol (on
    the CPU; cheap), but predictions are not thinned and there is no one-to-one matching. A ground-truth
    pixel counts as recalled at threshold t when some prediction ``>= t`` lies within the tolerance disk
    (max-pooling over the disk); a predicted pixel counts as correct when a ground-truth pixel lies
    within the disk (dilation). The recall is therefore an upper bound of :class:`EdgeMeter`'s recall at
    every threshold (a matched ground-truth pixel has its partner within the disk, and thinned
    predictions are a subset of the binarised map); the precision is computed on thick predictions and
    can be higher or lower than the exact one. Apart from the ground-truth thinning, O(H W) per image,
    vectorised in torch on the input's device.
    """

    def __init__(
        self, max_dist: float = 0.0075, thresholds: int | Sequence[float] = 99, *, void_value: int = 255
    ):
        self.void_value = void_value
        super().__init__(max_dist, thresholds)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        prob, target = self._inputs(pred, target)
        _check_not_nan(bool(torch.isnan(prob).any()), type(self).__name__)
        target = target.to(prob.device)
        thr = torch.as_tensor(self.thresholds, dtype=torch.float64, device=prob.device)
        k = len(self.thresholds)
        for p, t in zip(prob, target, strict=True):
            valid = t != self.void_value
            if not bool(valid.any()):
                continue
            radius = match_radius(valid.cpu().numpy(), self.max_dist)
            gt = torch.from_numpy(thin((valid & (t > 0.5)).cpu().numpy())).to(p.device)
            p = torch.where(valid, p.double(), torch.zeros((), dtype=torch.float64, device=p.device))
            near_gt = _disk_max(gt.double(), radius) > 0
            best_nearby = _disk_max(p, radius)
            level_p = torch.bucketize(p.flatten(), thr, right=True)  # number of thresholds <= value
            level_r = torch.bucketize(best_nearby[gt], thr, right=True)
            sum_p = _count_at_least(level_p, k)
            cnt_p = _count_at_least(level_p[near_gt.flatten()], k)
            cnt_r = _count_at_least(level_r, k)
            counts = np.stack([cnt_r, np.full(k, int(gt.sum())), cnt_p, sum_p], axis=1)
            self._add_image(counts.astype(np.int64))


def _check_not_nan(has_nan: bool, meter: str) -> None:
    # NaN compares as larger than every threshold in searchsorted / bucketize: it would count as an edge
    if has_nan:
        raise MtdenseError(f"{meter}.update: the predicted probabilities contain NaN")


def _count_at_least(levels: torch.Tensor, k: int) -> np.ndarray:
    """``out[i]`` = number of entries with ``level > i`` (i.e. value >= threshold i)."""
    hist = torch.bincount(levels, minlength=k + 1).cpu().numpy()
    return np.cumsum(hist[::-1])[::-1][1:].astype(np.int64)


def _disk_max(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Max of ``x`` ``(H, W)`` over the disk ``dy^2 + dx^2 <= radius^2`` around each pixel (outside = -inf).

    One horizontal max-pool per disk row (2r + 1 of them), shifted vertically.
    """
    height = x.shape[0]
    r = int(math.floor(radius + 1e-9))
    out = torch.full_like(x, -math.inf)
    rows: dict[int, torch.Tensor] = {}
    for dy in range(-r, r + 1):
        half = int(math.floor(math.sqrt(max(radius * radius - dy * dy, 0.0)) + 1e-9))
        if half not in rows:
            rows[half] = F.max_pool2d(x[None, None], (1, 2 * half + 1), stride=1, padding=(0, half))[0, 0]
        row = rows[half]
        # out[y] = max(out[y], row[y + dy])
        if dy >= 0:
            out[: height - dy] = torch.maximum(out[: height - dy], row[dy:])
        else:
            out[-dy:] = torch.maximum(out[-dy:], row[: height + dy])
    return out
