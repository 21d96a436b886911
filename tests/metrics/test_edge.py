"""Edge meter (BSDS / SEISM protocol): hand-derived P/R/F, tolerance, one-to-one matching, ODS vs OIS, AP,
ignore pixels, streaming; the matching against BSDS's min-cost-with-outliers objective; the fast meter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from mtdense.errors import MtdenseError, ShapeError
from mtdense.metrics import EdgeMeter, FastEdgeMeter, edge_thresholds
from mtdense.metrics._matching import candidate_matrix, match_count, max_matching_sizes


def _meter_result(prob, target, **kwargs):
    meter = EdgeMeter(**kwargs)
    meter.update(torch.as_tensor(prob, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32))
    return meter.compute()


def test_thresholds():
    t = edge_thresholds(99)
    assert len(t) == 99 and t[0] == pytest.approx(0.01) and t[-1] == pytest.approx(0.99)
    np.testing.assert_allclose(edge_thresholds(3), [0.25, 0.5, 0.75])
    with pytest.raises(ValueError):
        edge_thresholds([0.5, 0.2])


def test_perfect_prediction_scores_100():
    gt = np.zeros((1, 1, 64, 64), np.float32)
    gt[0, 0, 10, 5:60] = 1  # a horizontal and a vertical 1-pixel boundary
    gt[0, 0, 12:50, 30] = 1
    out = _meter_result(gt, gt)
    assert out["odsF"] == pytest.approx(100.0) and out["oisF"] == pytest.approx(100.0)
    # every threshold has R = 1: a single distinct recall value, for which SEISM's general_ap returns 0
    assert out["ap"] == 0.0


def test_thick_prediction_is_thinned_and_thick_gt_too():
    # GT boundary 3 pixels thick (rows 19-21, cols 5-57) -> thinned to its middle row (see test_thinning);
    # prediction: the same 3-pixel band at probability 0.8, thinned to the same line, so P = R = 1.
    # Without thinning P would be about 1/3 (a 3-pixel band against a 1-pixel line).
    gt = np.zeros((64, 64), np.float32)
    gt[19:22, 5:58] = 1
    out = _meter_result(0.8 * gt[None], gt[None])
    assert out["odsF"] == pytest.approx(100.0)


def test_shift_within_and_beyond_tolerance():
    # 64x64 image: diagonal = 64 * sqrt(2) = 90.51 px; max_dist = 0.02 -> radius 1.81 px.
    gt = np.zeros((64, 64), np.float32)
    gt[8:56, 20] = 1  # vertical line of 48 pixels
    one = np.zeros_like(gt)
    one[8:56, 21] = 1  # shifted by 1 px (< 1.81): every pixel matched one-to-one -> P = R = F = 100
    two = np.zeros_like(gt)
    two[8:56, 22] = 1  # shifted by 2 px (> 1.81): nothing matched -> F = 0
    assert _meter_result(one[None], gt[None], max_dist=0.02)["odsF"] == pytest.approx(100.0)
    assert _meter_result(two[None], gt[None], max_dist=0.02)["odsF"] == 0.0
    # with max_dist = 0.025 (radius 2.26 px) the 2-pixel shift is within tolerance again
    assert _meter_result(two[None], gt[None], max_dist=0.025)["odsF"] == pytest.approx(100.0)


def test_one_to_one_matching_hand_computed():
    # One GT pixel at (20, 20); two isolated predicted pixels at (20, 21) and (21, 20), both 1 px away
    # (radius 1.81 px). Only one of them can be matched: cntR = 1, sumR = 1, cntP = 1, sumP = 2
    # -> P = 1/2, R = 1, F = 2 * (1/2) * 1 / (3/2) = 2/3.
    gt = np.zeros((64, 64), np.float32)
    gt[20, 20] = 1
    pred = np.zeros_like(gt)
    pred[20, 21] = pred[21, 20] = 0.9
    out = _meter_result(pred[None], gt[None], max_dist=0.02)
    assert out["odsF"] == pytest.approx(200.0 / 3.0)
    # and the reverse: two GT pixels, one predicted pixel -> P = 1, R = 1/2, F = 2/3 as well
    out = _meter_result(gt[None] * 0.9, (pred > 0).astype(np.float32)[None], max_dist=0.02)
    assert out["odsF"] == pytest.approx(200.0 / 3.0)


def _points(shape, coords, value=1.0):
    img = np.zeros(shape, np.float32)
    for y, x in coords:
        img[y, x] = value
    return img


def test_ods_ois_ap_two_images_by_hand():
    # Thresholds (0.3, 0.6); default max_dist on 64x64 gives radius 0.68 px: only coinciding pixels match.
    # All pixels are isolated (kept by thinning) and at least 8 px apart.
    g = [(8, 8), (8, 40), (40, 8), (40, 40)]  # 4 GT pixels in each image
    f = [(24, 24), (24, 56), (56, 24), (56, 56), (8, 24), (40, 24)]  # far from any GT pixel
    # Image A: 2 GT pixels predicted at 0.9, 2 at 0.4; 2 false pixels at 0.4.
    #   t=0.3: sumP = 6, cntP = cntR = 4, sumR = 4 -> P = 2/3, R = 1, F = 0.8
    #   t=0.6: sumP = 2, cntP = cntR = 2           -> P = 1,   R = 1/2, F = 2/3   => best A: t = 0.3
    prob_a = _points((64, 64), g[:2], 0.9) + _points((64, 64), g[2:] + f[:2], 0.4)
    # Image B: all 4 GT pixels at 0.9; 6 false pixels at 0.4.
    #   t=0.3: sumP = 10, cntP = 4 -> P = 0.4, R = 1, F = 4/7;  t=0.6: P = R = 1, F = 1  => best B: t = 0.6
    prob_b = _points((64, 64), g, 0.9) + _points((64, 64), f, 0.4)
    gt = _points((64, 64), g)
    # ODS: t=0.3: cntR = 8, sumR = 8, cntP = 8, sumP = 16 -> P = 1/2, R = 1, F = 2/3
    #      t=0.6: cntR = 6, sumR = 8, cntP = 6, sumP = 6  -> P = 1, R = 3/4, F = 2 * 3/4 / (7/4) = 6/7
    #      odsF = 6/7 = 85.714 %
    # OIS: A at 0.3 (4, 4, 4, 6) + B at 0.6 (4, 4, 4, 4) = (8, 8, 8, 10) -> P = 0.8, R = 1, F = 8/9 = 88.889 %
    # AP: the curve (R, P) = (1, 1/2), (3/4, 1); interpolated at R = 0.75, 0.76, ..., 1.00 (26 points):
    #     P(R) = 1 - 2 (R - 0.75) -> sum = 26 - 0.02 * (0 + 1 + ... + 25) = 26 - 6.5 = 19.5 -> AP = 19.5 %
    meter = EdgeMeter(thresholds=[0.3, 0.6])
    meter.update(torch.tensor(np.stack([prob_a, prob_b]))[:, None], torch.tensor(np.stack([gt, gt]))[:, None])
    out = meter.compute()
    assert out["odsF"] == pytest.approx(600.0 / 7.0)
    assert out["oisF"] == pytest.approx(800.0 / 9.0)
    assert out["ap"] == pytest.approx(19.5)
    curve = meter.compute_curve()
    np.testing.assert_allclose(curve["precision"], [50.0, 100.0])
    np.testing.assert_allclose(curve["recall"], [100.0, 75.0])


def test_ignore_pixels_count_neither_as_gt_nor_prediction():
    # Left half ignored (255). There a GT line and a false prediction; on the right one matched line.
    target = np.zeros((64, 64), np.float32)
    target[:, :32] = 255
    target[10:50, 45] = 1
    prob = np.zeros_like(target)
    prob[10:50, 45] = 0.9
    prob[5:60, 10] = 0.9  # inside the ignored half: not a prediction
    out = _meter_result(prob[None], target[None])
    assert out["odsF"] == pytest.approx(100.0)
    # without the ignore value the false line counts: P = 40 / (40 + 55) at every threshold
    target2 = np.where(target == 255, 0, target)
    out2 = _meter_result(prob[None], target2[None])
    assert out2["odsF"] == pytest.approx(100 * 2 * (40 / 95) / (40 / 95 + 1))


def test_quantize_matches_8bit_png_round_trip():
    # 0.5 is stored as floor(127.5) = 127 -> 127/255 = 0.498 < threshold 0.5: not predicted when quantised
    gt = _points((32, 32), [(10, 10)])
    prob = 0.5 * gt
    assert _meter_result(prob[None], gt[None], thresholds=[0.5])["odsF"] == pytest.approx(100.0)
    assert _meter_result(prob[None], gt[None], thresholds=[0.5], quantize=True)["odsF"] == 0.0


def _smooth_case(seed, n=3, size=48):
    rng = np.random.default_rng(seed)
    gts, probs = [], []
    for _ in range(n):
        labels = ndi.gaussian_filter(rng.standard_normal((size, size)), 4) > 0
        gt = np.zeros((size, size), bool)
        gt[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        gt[1:] |= labels[1:] != labels[:-1]
        prob = ndi.gaussian_filter(gt.astype(float), 1.2) * 2.5 + 0.2 * rng.random((size, size))
        gts.append(gt.astype(np.float32))
        probs.append(np.clip(prob, 0, 1).astype(np.float32))
    return torch.tensor(np.stack(probs))[:, None], torch.tensor(np.stack(gts))[:, None]


def test_streaming_equals_one_batch():
    prob, gt = _smooth_case(0, n=4)
    one = EdgeMeter(max_dist=0.02, thresholds=19)
    one.update(prob, gt)
    streamed = EdgeMeter(max_dist=0.02, thresholds=19)
    for i in range(4):
        streamed.update(prob[i : i + 1], gt[i : i + 1])
    np.testing.assert_array_equal(one.state["counts"], streamed.state["counts"])
    np.testing.assert_array_equal(one.state["ois"], streamed.state["ois"])
    assert one.compute() == streamed.compute()


def test_nan_probabilities_are_rejected():
    prob = torch.zeros(1, 1, 8, 8)
    prob[0, 0, 2, 2] = float("nan")
    for meter in (EdgeMeter(), FastEdgeMeter()):
        with pytest.raises(MtdenseError, match="NaN"):
            meter.update(prob, torch.zeros(1, 1, 8, 8))


def test_shape_errors():
    meter = EdgeMeter()
    with pytest.raises(ShapeError, match=r"expected \(B, 1, H, W\) or \(B, H, W\), got shape \(2, 3, 8, 8\)"):
        meter.update(torch.rand(2, 3, 8, 8), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ShapeError, match="must match"):
        meter.update(torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 9))


def _bsds_matching_size(pred, gt, radius):
    """BSDS correspondPixels' objective solved exactly: minimum-cost perfect matching where predicted and
    GT pixels pair at their distance when within ``radius`` and every pixel may instead take an outlier
    at cost 100 * radius (dummy-dummy pairs cost 0). Returns the number of real pairs."""
    p = np.argwhere(pred)
    g = np.argwhere(gt)
    n, m = len(p), len(g)
    big = 1e9
    d = np.sqrt(((p[:, None, :] - g[None, :, :]) ** 2).sum(-1)) if n and m else np.zeros((n, m))
    d = np.where(d <= radius + 1e-9, d, big)
    outlier = 100.0 * radius
    cost = np.full((n + m, m + n), big)
    cost[:n, :m] = d
    cost[:n, m:] = np.where(np.eye(n, dtype=bool), outlier, big)
    cost[n:, :m] = np.where(np.eye(m, dtype=bool), outlier, big)
    cost[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(cost)
    return int(((rows < n) & (cols < m) & (cost[rows, cols] < big)).sum())


@pytest.mark.parametrize("seed", range(3))
def test_matching_equals_bsds_min_cost_objective(seed):
    rng = np.random.default_rng(seed)
    for _ in range(15):
        h, w = rng.integers(4, 16, 2)
        gt = rng.random((h, w)) < rng.uniform(0.05, 0.35)
        pred = rng.random((h, w)) < rng.uniform(0.05, 0.35)
        radius = float(rng.uniform(0.5, 3.0))
        assert match_count(pred, gt, radius) == _bsds_matching_size(pred, gt, radius)


def test_warm_started_sequence_equals_independent_solves():
    # max_matching_sizes reuses each threshold's matching for the next one; the sizes must equal solving
    # every set from scratch.
    rng = np.random.default_rng(11)
    h, w = 20, 24
    gt = rng.random((h, w)) < 0.25
    gt_pixels = np.flatnonzero(gt)
    gt_index = np.full(gt.size, -1)
    gt_index[gt_pixels] = np.arange(gt_pixels.size)
    cand = candidate_matrix(gt_pixels, (h, w), 2.2)
    sets = [rng.random((h, w)) < q for q in (0.4, 0.35, 0.35, 0.2, 0.3, 0.05, 0.0)]
    sizes = max_matching_sizes([np.flatnonzero(s) for s in sets], cand, gt_index)
    assert sizes.tolist() == [match_count(s, gt, 2.2) for s in sets]
    assert sizes.tolist() == [_bsds_matching_size(s, gt, 2.2) for s in sets]


def test_fast_meter_perfect_and_upper_bound_on_recall():
    gt = np.zeros((1, 1, 64, 64), np.float32)
    gt[0, 0, 10, 5:60] = 1
    fast = FastEdgeMeter()
    fast.update(torch.tensor(gt), torch.tensor(gt))
    assert fast.compute()["odsF"] == pytest.approx(100.0)
    # recall of the approximation >= exact recall at every threshold (no prediction thinning, no one-to-one);
    # a thick GT blob is thinned by both meters (else the fast recall could drop below the exact one)
    prob, target = _smooth_case(5, n=2)
    target[0, 0, 30:35, 30:35] = 1
    exact, approx = EdgeMeter(max_dist=0.02, thresholds=9), FastEdgeMeter(max_dist=0.02, thresholds=9)
    exact.update(prob, target)
    approx.update(prob, target)
    assert np.all(approx.compute_curve()["recall"] >= exact.compute_curve()["recall"] - 1e-9)


def test_fast_meter_hand_counts():
    # One GT pixel at (20, 20), radius 1.81 px (max_dist 0.02 on 64x64). Predictions: (20, 21) at 0.9
    # (within 1 px) and (30, 30) at 0.7 (far). Thresholds (0.5, 0.8):
    #   t=0.5: sumP = 2, cntP = 1 (only the near one), cntR = 1 -> P = 1/2, R = 1
    #   t=0.8: sumP = 1, cntP = 1, cntR = 1                  -> P = R = 1 -> odsF = 100
    gt = _points((64, 64), [(20, 20)])
    prob = _points((64, 64), [(20, 21)], 0.9) + _points((64, 64), [(30, 30)], 0.7)
    fast = FastEdgeMeter(max_dist=0.02, thresholds=[0.5, 0.8])
    fast.update(torch.tensor(prob)[None], torch.tensor(gt)[None])
    np.testing.assert_array_equal(fast.state["counts"], [[1, 1, 1, 2], [1, 1, 1, 1]])
    assert fast.compute()["odsF"] == pytest.approx(100.0)
    assert math.isclose(0.02 * math.hypot(64, 64), 1.81, abs_tol=0.01)
