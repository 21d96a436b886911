"""SaliencyMeter: hand-derived Jaccard / precision / recall over thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtdense.metrics import SaliencyMeter


def test_hand_values_two_thresholds():
    # thresholds (0.3, 0.6), prediction "> t". One image, 1 x 4 pixels:
    #   target 1 1 0 0; pred 0.9 0.5 0.5 0.1
    #   t=0.3: predicted 1 1 1 0 -> tp 2, fp 1, fn 0: J = 2/3, P = 2/3, R = 1
    #   t=0.6: predicted 1 0 0 0 -> tp 1, fp 0, fn 1: J = 1/2, P = 1,   R = 1/2
    # mIoU = max(2/3, 1/2) = 66.67 %
    # F_beta with beta2 = 1: t=0.3: 2 (2/3) / (5/3) = 0.8; t=0.6: 2 (1/2) / (3/2) = 2/3 -> maxF 80 %
    # beta2 = 0.3: t=0.3: 1.3 (2/3) / (0.2 + 1) = 0.7222; t=0.6: 1.3 (1/2) / (0.3 + 0.5) = 0.8125 -> 81.25 %
    pred = torch.tensor([[[0.9, 0.5, 0.5, 0.1]]])
    target = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    for beta2, max_f in ((1.0, 80.0), (0.3, 81.25)):
        meter = SaliencyMeter(beta2=beta2, thresholds=np.array([0.3, 0.6]))
        meter.update(pred, target)
        out = meter.compute()
        assert out["mIoU"] == pytest.approx(200 / 3)
        assert out["maxF"] == pytest.approx(max_f)


def test_empty_images_and_void():
    # image 1: empty GT and empty prediction -> J = 1, P = R = 0 (ASTMT's jaccard/precision_recall)
    # image 2: GT 1 on the void-free pixel and predicted there -> J = P = R = 1; the void pixel (255) with a
    # high prediction does not count as a false positive.
    pred = torch.tensor([[[0.1, 0.1]], [[0.95, 0.95]]])
    target = torch.tensor([[[0.0, 0.0]], [[1.0, 255.0]]])
    meter = SaliencyMeter(thresholds=np.array([0.5]))
    meter.update(pred, target)
    out = meter.compute()
    assert out["mIoU"] == pytest.approx(100.0)  # (1 + 1) / 2
    # mean P = mean R = 1/2 -> F = 1/2 for any beta
    assert out["maxF"] == pytest.approx(50.0)


def test_streaming_equals_one_batch():
    rng = np.random.default_rng(0)
    pred = torch.tensor(rng.random((4, 1, 8, 8)))
    target = torch.tensor((rng.random((4, 1, 8, 8)) > 0.5).astype(np.float32))
    one, streamed = SaliencyMeter(), SaliencyMeter()
    one.update(pred, target)
    for i in range(4):
        streamed.update(pred[i : i + 1], target[i : i + 1])
    for key, value in one.compute().items():
        assert streamed.compute()[key] == pytest.approx(value, rel=1e-12)
