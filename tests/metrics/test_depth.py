"""DepthMeter: hand-derived values, invalid ground truth, both reductions, caps, crops, non-positive
predictions, streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtdense.errors import ShapeError
from mtdense.metrics import DepthMeter


def _run(pred, target, **kwargs):
    meter = DepthMeter(**kwargs)
    meter.update(torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    return meter.compute()


def test_pixel_reduction_by_hand_with_invalid_pixels():
    # valid GT: 1 and 2 (0, NaN and inf are invalid). Predictions on them: 2 and 2.
    #   pixel 1: p=2, g=1: (p-g)^2 = 1, ln ratio = ln 2, |p-g|/g = 1, (p-g)^2/g = 1, log10 = log10 2, ratio 2
    #   pixel 2: p=2, g=2: all errors 0, ratio 1
    # rmse = sqrt(1/2); rmse_log = sqrt(ln(2)^2 / 2) = ln 2 / sqrt 2; rel = 1/2; sq_rel = 1/2;
    # log10 = log10(2) / 2; d1: ratio 2 fails 1.25, 1.5625 and 1.953 -> d1 = d2 = d3 = 50 %
    pred = [[[2.0, 2.0, 5.0, 5.0, 5.0]]]
    target = [[[1.0, 2.0, 0.0, math.nan, math.inf]]]
    out = _run(pred, target)
    assert out["rmse"] == pytest.approx(math.sqrt(0.5))
    assert out["rmse_log"] == pytest.approx(math.log(2) / math.sqrt(2))
    assert out["rel"] == pytest.approx(0.5)
    assert out["sq_rel"] == pytest.approx(0.5)
    assert out["log10"] == pytest.approx(math.log10(2) / 2)
    assert (out["d1"], out["d2"], out["d3"]) == pytest.approx((50.0, 50.0, 50.0))


def test_delta_thresholds():
    # ratios 1.2 (< 1.25), 1.5 (< 1.5625), 1.9 (< 1.953125), 2.5 (none) -> d1 25 %, d2 50 %, d3 75 %
    out = _run([[[1.2, 1.0, 1.9, 1.0]]], [[[1.0, 1.5, 1.0, 2.5]]])
    assert (out["d1"], out["d2"], out["d3"]) == pytest.approx((25.0, 50.0, 75.0))


def test_image_reduction_differs_from_pixel_reduction():
    # image A: one valid pixel with error 3 (p=4, g=1); image B: three valid pixels with error 0 (p=g=1)
    # pixel: rmse = sqrt(9 / 4) = 1.5; image: mean(sqrt(9), sqrt(0)) = 1.5 as well -> use rel instead:
    # pixel rel = (3/1 + 0) / 4 = 0.75; image rel = (3 + 0) / 2 = 1.5. rmse pixel 1.5 vs image 1.5.
    # and a third all-invalid image is skipped by the image reduction.
    pred = np.ones((3, 1, 1, 4), np.float32)
    target = np.zeros((3, 1, 1, 4), np.float32)
    pred[0, 0, 0, 0], target[0, 0, 0, 0] = 4.0, 1.0
    target[1, 0, 0, :3] = 1.0
    pixel = _run(pred, target, reduction="pixel")
    image = _run(pred, target, reduction="image")
    assert pixel["rel"] == pytest.approx(0.75) and image["rel"] == pytest.approx(1.5)
    assert pixel["rmse"] == pytest.approx(1.5) and image["rmse"] == pytest.approx(1.5)
    assert pixel["d1"] == pytest.approx(75.0) and image["d1"] == pytest.approx(50.0)  # (0 + 100) / 2


def test_caps_validity_and_clipping():
    # min 1, max 10: GT 0.5 and 12 are invalid (strict caps), GT 5 valid; prediction 20 clipped to 10.
    out = _run([[[3.0, 20.0, 3.0]]], [[[0.5, 5.0, 12.0]]], min_depth=1.0, max_depth=10.0)
    assert out["rmse"] == pytest.approx(5.0)  # |10 - 5|


def test_non_positive_predictions_are_clamped_not_nan():
    # p = -1 and 0 are clamped to 1e-9 (MTI-Net's eval): finite log errors, rel = |1e-9 - 1| / 1 ~ 1.
    out = _run([[[-1.0, 0.0]]], [[[1.0, 1.0]]])
    assert all(math.isfinite(v) for v in out.values())
    assert out["rmse_log"] == pytest.approx(-math.log(1e-9))
    assert out["rel"] == pytest.approx(1.0) and out["d3"] == 0.0


def test_crop_tuple_and_eigen():
    pred = np.full((1, 1, 6, 6), 2.0, np.float32)
    target = np.full((1, 1, 6, 6), 1.0, np.float32)
    pred[0, 0, 2:4, 1:3] = 1.0  # exact only inside the crop rows 2:4, cols 1:3
    assert _run(pred, target, crop=(2, 4, 1, 3))["rmse"] == pytest.approx(0.0)
    assert _run(pred, target)["rmse"] == pytest.approx(math.sqrt(32 / 36))
    with pytest.raises(ShapeError, match="480x640"):
        _run(pred, target, crop="eigen")
    with pytest.raises(ShapeError, match="does not fit"):
        _run(pred, target, crop=(0, 7, 0, 6))
    # Eigen crop on 480x640: error only outside rows 44:471, cols 40:601 -> rmse 0
    big_p = torch.ones(1, 480, 640)
    big_p[:, :44] = 3.0
    big_p[:, :, 601:] = 3.0
    meter = DepthMeter(crop="eigen")
    meter.update(big_p, torch.ones(1, 480, 640))
    assert meter.compute()["rmse"] == 0.0


@pytest.mark.parametrize("reduction", ["pixel", "image"])
def test_streaming_equals_one_batch(reduction):
    rng = np.random.default_rng(1)
    pred = torch.tensor(rng.uniform(0.5, 5, (6, 1, 8, 8)))
    target = torch.tensor(rng.uniform(0.5, 5, (6, 1, 8, 8)) * (rng.random((6, 1, 8, 8)) > 0.3))
    one, streamed = DepthMeter(reduction), DepthMeter(reduction)
    one.update(pred, target)
    for i in range(6):
        streamed.update(pred[i], target[i])  # (1, 8, 8) = (B, H, W)
    for key, value in one.compute().items():
        assert streamed.compute()[key] == pytest.approx(value, rel=1e-12)


def test_shape_errors():
    with pytest.raises(ShapeError, match=r"expected \(B, 1, H, W\) or \(B, H, W\).*got shape \(2, 3, 4, 4\)"):
        DepthMeter().update(torch.ones(2, 3, 4, 4), torch.ones(2, 1, 4, 4))
    with pytest.raises(ShapeError, match="must match"):
        DepthMeter().update(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 5))
