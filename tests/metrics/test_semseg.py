"""SegmentationMeter: hand-derived confusion-matrix metrics, ignore labels, absent classes, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtdense.errors import DataError, MtdenseError, ShapeError
from mtdense.metrics import SegmentationMeter

# 2 x 4 map, 4 classes, 255 = ignore
TARGET = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
PRED = torch.tensor([[[0, 1, 1, 1], [2, 0, 3, 0]]])
# valid pixels (6): (gt, pred) = (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); the two ignored pixels do not count.
# class 0: TP 1, FN 1 (gt 0 -> 1), FP 1 (gt 2 -> 0)  -> IoU 1/3, Acc 1/2
# class 1: TP 2, FN 0, FP 1                           -> IoU 2/3, Acc 1
# class 2: TP 1, FN 1, FP 0                           -> IoU 1/2, Acc 1/2
# class 3: absent from GT and predicted only on an ignored pixel -> IoU undefined (left out), Acc left out
# mIoU = (1/3 + 2/3 + 1/2) / 3 = 50 %; mAcc = (1/2 + 1 + 1/2) / 3 = 66.67 %; pixAcc = 4 / 6 = 66.67 %


def test_hand_values_with_ignore_and_absent_class():
    meter = SegmentationMeter(4)
    meter.update(PRED, TARGET)
    out = meter.compute()
    assert out["mIoU"] == pytest.approx(50.0)
    assert out["mAcc"] == pytest.approx(200.0 / 3.0)
    assert out["pixAcc"] == pytest.approx(200.0 / 3.0)
    per = meter.compute_per_class()
    np.testing.assert_allclose(per["IoU"][:3], [100 / 3, 200 / 3, 50.0])
    assert np.isnan(per["IoU"][3]) and np.isnan(per["Acc"][3])
    assert set(out) == {"mIoU", "mAcc", "pixAcc"} and all(isinstance(v, float) for v in out.values())


def test_class_predicted_but_absent_from_gt_counts_as_zero():
    # class 3 predicted on a valid pixel: its IoU is 0 / (0 + 1 + 0) = 0 and enters the mean;
    # mAcc still leaves it out (no GT pixel). Pixels: (0,0) (0,3) -> IoU_0 = 1/2, IoU_3 = 0, mIoU = 25 %.
    meter = SegmentationMeter(4)
    meter.update(torch.tensor([[[0, 3]]]), torch.tensor([[[0, 0]]]))
    out = meter.compute()
    assert out["mIoU"] == pytest.approx(25.0)
    assert out["mAcc"] == pytest.approx(50.0)


def test_logits_input_equals_labels():
    logits = torch.nn.functional.one_hot(PRED.clamp(max=3), 4).permute(0, 3, 1, 2).float() * 5.0
    a, b = SegmentationMeter(4), SegmentationMeter(4)
    a.update(logits, TARGET)
    b.update(PRED, TARGET)
    assert a.compute() == b.compute()


def test_streaming_equals_one_batch():
    rng = np.random.default_rng(0)
    target = torch.tensor(rng.integers(0, 5, (6, 16, 16)))
    target[target == 4] = 255
    logits = torch.tensor(rng.standard_normal((6, 4, 16, 16)))
    one, streamed = SegmentationMeter(4), SegmentationMeter(4)
    one.update(logits, target)
    for i in range(0, 6, 2):
        streamed.update(logits[i : i + 2], target[i : i + 2])
    np.testing.assert_array_equal(one.state["confusion"], streamed.state["confusion"])
    assert one.compute() == streamed.compute()


def test_errors():
    meter = SegmentationMeter(4)
    with pytest.raises(ShapeError, match=r"expected \(B, K=4, H, W\).*got shape \(1, 3, 2, 4\)"):
        meter.update(torch.zeros(1, 3, 2, 4), TARGET)
    with pytest.raises(ShapeError, match="must match"):
        meter.update(PRED[:, :, :3], TARGET)
    with pytest.raises(DataError, match="label 7"):
        meter.update(PRED, torch.full_like(TARGET, 7))
    with pytest.raises(MtdenseError, match="no valid sample"):
        SegmentationMeter(4).compute()
