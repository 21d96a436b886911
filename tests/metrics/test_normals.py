"""NormalsMeter: hand-derived angles, invalid pixels, normalisation, streaming median vs numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtdense.errors import ShapeError
from mtdense.metrics import NormalsMeter


def _normals(vectors):
    """List of (x, y, z) -> (1, 3, 1, N)."""
    return torch.tensor(np.asarray(vectors, np.float64).T[None, :, None, :])


def test_hand_angles():
    # target +z everywhere except one invalid zero vector. Predictions (not unit length: normalised inside):
    #   (0, 0, 5) -> 0 deg; (1, 0, 1) -> 45 deg; (0, 3, 0) -> 90 deg; (0, 0, -2) -> 180 deg; 5th pixel invalid
    target = _normals([(0, 0, 1)] * 4 + [(0, 0, 0)])
    pred = _normals([(0, 0, 5), (1, 0, 1), (0, 3, 0), (0, 0, -2), (1, 0, 0)])
    meter = NormalsMeter()
    meter.update(pred, target)
    out = meter.compute()
    # mean = (0 + 45 + 90 + 180) / 4 = 78.75; median = (45 + 90) / 2 = 67.5 (within a 0.01-degree bin)
    # rmse = sqrt((0 + 2025 + 8100 + 32400) / 4) = sqrt(10631.25); shares < 11.25 / 22.5 / 30: 1 of 4
    assert out["mean"] == pytest.approx(78.75)
    assert out["median"] == pytest.approx(67.5, abs=0.005)
    assert out["rmse"] == pytest.approx(math.sqrt(10631.25))
    assert (out["a11"], out["a22"], out["a30"]) == pytest.approx((25.0, 25.0, 25.0))


def test_threshold_shares_strict():
    # errors 10, 20, 25, 40 degrees -> a11 25 %, a22 50 %, a30 75 %
    angles = np.deg2rad([10, 20, 25, 40])
    pred = _normals([(math.sin(a), 0, math.cos(a)) for a in angles])
    meter = NormalsMeter()
    meter.update(pred, _normals([(0, 0, 1)] * 4))
    out = meter.compute()
    assert (out["a11"], out["a22"], out["a30"]) == pytest.approx((25.0, 50.0, 75.0))
    assert out["median"] == pytest.approx(22.5, abs=0.005)


def test_zero_prediction_gives_90_degrees():
    meter = NormalsMeter()
    meter.update(_normals([(0, 0, 0)]), _normals([(0, 0, 1)]))
    assert meter.compute()["mean"] == pytest.approx(90.0)


@pytest.mark.parametrize("n_batches", [1, 5])
def test_streaming_median_matches_numpy(n_batches):
    rng = np.random.default_rng(n_batches)
    pred = torch.tensor(rng.standard_normal((10, 3, 16, 16)))
    target = torch.tensor(rng.standard_normal((10, 3, 16, 16)))
    target[:, :, :3] = 0  # invalid rows
    meter = NormalsMeter()
    for chunk_p, chunk_t in zip(pred.chunk(n_batches), target.chunk(n_batches), strict=True):
        meter.update(chunk_p, chunk_t)
    # numpy reference on the concatenated valid errors
    p = pred.numpy() / np.linalg.norm(pred.numpy(), axis=1, keepdims=True)
    t = target.numpy()
    norm = np.linalg.norm(t, axis=1)
    valid = norm > 0
    t = t / np.where(valid, norm, 1)[:, None]
    err = np.degrees(np.arccos(np.clip((p * t).sum(1), -1, 1)))[valid]
    out = meter.compute()
    assert abs(out["median"] - np.median(err)) <= 0.01
    assert out["mean"] == pytest.approx(err.mean(), rel=1e-12)
    assert out["rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-12)
    assert out["a30"] == pytest.approx(100 * (err < 30).mean())


def test_odd_count_median():
    # three errors 10, 20, 170 -> numpy median 20
    angles = np.deg2rad([10, 170, 20])
    meter = NormalsMeter()
    meter.update(_normals([(math.sin(a), 0, math.cos(a)) for a in angles]), _normals([(0, 0, 1)] * 3))
    assert meter.compute()["median"] == pytest.approx(20.0, abs=0.005)


def test_shape_errors():
    with pytest.raises(ShapeError, match=r"expected \(B, 3, H, W\), got shape \(1, 2, 4, 4\)"):
        NormalsMeter().update(torch.ones(1, 2, 4, 4), torch.ones(1, 3, 4, 4))
