"""The human-parts and saliency tasks: losses and meters against values derived by hand, skipping of
unlabelled samples, visualisation and random targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtdense.config.schema import Config
from mtdense.tasks import TASKS, PartsTask, SaliencyTask


def test_registered_with_their_primary_metric():
    assert TASKS["parts"] is PartsTask and TASKS["saliency"] is SaliencyTask
    assert PartsTask.primary_metric.name == "mIoU" and SaliencyTask.primary_metric.name == "mIoU"
    assert not PartsTask.primary_metric.lower_is_better and not SaliencyTask.primary_metric.lower_is_better


def test_parts_from_meta():
    task = PartsTask.from_config(Config(), {"parts_classes": ["bg", "head", "torso"]})
    assert task.out_channels == 3 and task.class_names == ["bg", "head", "torso"]
    assert PartsTask.from_config(Config(), {}).out_channels == 7


def test_parts_loss_is_cross_entropy_with_ignore():
    """Two classes, logits (0, ln 3) on every pixel: p(class 1) = 3/4. Pixels: class 1, class 0, ignore.
    Loss = mean over the two valid pixels of (−ln 3/4, −ln 1/4) = (ln 4/3 + ln 4) / 2."""
    task = PartsTask(num_classes=2, class_names=["bg", "head"])
    pred = torch.zeros(1, 2, 1, 3)
    pred[:, 1] = math.log(3.0)
    target = torch.tensor([[[1, 0, 255]]])
    assert task.loss(pred, target).item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2, rel=1e-6)


def test_parts_meter_skips_unlabelled_samples():
    """Sample 0: target (0, 1, 1, 2), prediction (0, 1, 2, 2): IoU 1, 1/2, 1/2 → mIoU 2/3. Sample 1 has no
    parts (all 255) and a wrong prediction: it must not count."""
    task = PartsTask(num_classes=3, class_names=["bg", "a", "b"])
    target = torch.tensor([[[0, 1, 1, 2]], [[255, 255, 255, 255]]])
    pred = torch.nn.functional.one_hot(torch.tensor([[[0, 1, 2, 2]], [[1, 1, 1, 1]]]), 3).permute(0, 3, 1, 2).float()
    meter = task.make_meter()
    task.update_meter(meter, pred * 10, target)
    assert meter.compute()["mIoU"] == pytest.approx(100 * 2 / 3)
    assert task.visualize(target[0]).shape == (1, 4, 3)


def test_saliency_loss_auto_balanced():
    """Logits 0 (softplus = ln 2 for both classes); 1 positive, 3 negatives, 1 ignored: w = 3/4 and the
    loss is (w·1 + (1 − w)·3)·ln 2 / 4 = 0.375·ln 2."""
    task = SaliencyTask()
    pred = torch.zeros(1, 1, 1, 5, requires_grad=True)
    target = torch.tensor([[[[1.0, 0.0, 0.0, 0.0, 255.0]]]])
    loss = task.loss(pred, target)
    assert loss.item() == pytest.approx(0.375 * math.log(2), rel=1e-6)
    loss.backward()
    assert pred.grad[0, 0, 0, 4] == 0  # the ignored pixel gets no gradient


def test_saliency_meter_and_skip():
    task = SaliencyTask()
    target = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]], [[[255.0] * 4]]])
    pred = torch.where(target == 1, 10.0, -10.0)
    pred[1] = 10.0  # an unlabelled sample with a "wrong" prediction is skipped
    meter = task.make_meter()
    task.update_meter(meter, pred, target)
    out = meter.compute()
    assert out["mIoU"] == pytest.approx(100.0) and out["maxF"] == pytest.approx(100.0)
    pred[0, 0, 0, 1] = -10.0  # one missed salient pixel: IoU 1/2 at every threshold
    meter = task.make_meter()
    task.update_meter(meter, pred[:1], target[:1])
    assert meter.compute()["mIoU"] == pytest.approx(50.0)


def test_saliency_visualize_and_random_target():
    task = SaliencyTask()
    img = task.visualize(torch.tensor([[[0.0, 1.0, 255.0]]]))
    assert img.dtype == np.uint8 and img[0, :, 0].tolist() == [0, 255, 128]
    t = task.random_target(2, (4, 5), torch.Generator().manual_seed(0))
    assert t.shape == (2, 1, 4, 5) and t.dtype == torch.float32 and set(t.unique().tolist()) <= {0.0, 1.0}
