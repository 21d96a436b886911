"""Delta_m (MTI-Net Eq. 2) by hand, metric directions, error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtdense.errors import MtdenseError
from mtdense.metrics import (
    LOWER_IS_BETTER,
    DepthMeter,
    EdgeMeter,
    NormalsMeter,
    SaliencyMeter,
    SegmentationMeter,
    lower_is_better,
    multitask_delta,
)


def test_delta_by_hand():
    # semseg mIoU 40 vs 32 (+25 %), depth rmse 0.6 vs 0.5 (lower is better: -(0.1/0.5) = -20 %),
    # normals mean 18 vs 20 (lower is better: +10 %) -> (25 - 20 + 10) / 3 = +5 %
    results = {"semseg": {"mIoU": 40.0, "pixAcc": 1.0}, "depth": {"rmse": 0.6}, "normals": {"mean": 18.0}}
    baseline = {"semseg": {"mIoU": 32.0}, "depth": {"rmse": 0.5}, "normals": {"mean": 20.0}}
    assert multitask_delta(results, baseline) == pytest.approx(5.0)
    # explicit metric choice: only depth -> -20 %
    assert multitask_delta(results, baseline, metrics={"depth": "rmse"}) == pytest.approx(-20.0)


def test_delta_mtinet_table_row():
    # MTI-Net Table 2a, "Ours (w/ FPM) (N+E)": Seg 37.49 vs 33.18, Dep 0.607 vs 0.667
    # = ((37.49 - 33.18) / 33.18 + (0.667 - 0.607) / 0.667) / 2 = (0.129897 + 0.089955) / 2 = 10.99 %
    # (the paper prints +10.91, computed from unrounded values)
    out = multitask_delta({"semseg": {"mIoU": 37.49}, "depth": {"rmse": 0.607}},
                          {"semseg": {"mIoU": 33.18}, "depth": {"rmse": 0.667}})  # fmt: skip
    assert out == pytest.approx(10.9926, abs=1e-3)


def test_saliency_uses_miou_then_maxf():
    res, base = {"saliency": {"mIoU": 66.0, "maxF": 90.0}}, {"saliency": {"mIoU": 60.0, "maxF": 80.0}}
    assert multitask_delta(res, base) == pytest.approx(10.0)  # mIoU: +6/60
    res, base = {"saliency": {"maxF": 88.0}}, {"saliency": {"maxF": 80.0}}
    assert multitask_delta(res, base) == pytest.approx(10.0)  # maxF when mIoU absent


def test_errors_name_task_and_metric():
    with pytest.raises(MtdenseError, match="task 'depth' missing from baseline"):
        multitask_delta({"depth": {"rmse": 1.0}}, {"semseg": {"mIoU": 1.0}})
    with pytest.raises(MtdenseError, match="metric 'rmse' of task 'depth' missing from results"):
        multitask_delta({"depth": {"rel": 1.0}}, {"depth": {"rmse": 1.0}})
    with pytest.raises(MtdenseError, match="no default metric for task 'flow'"):
        multitask_delta({"flow": {"epe": 1.0}}, {"flow": {"epe": 1.0}})
    with pytest.raises(MtdenseError, match="unknown metric 'epe'"):
        lower_is_better("epe")
    with pytest.raises(MtdenseError, match="is 0"):
        multitask_delta({"depth": {"rmse": 1.0}}, {"depth": {"rmse": 0.0}})


def test_every_meter_key_has_a_direction():
    errors = {"rmse", "rmse_log", "rel", "sq_rel", "log10", "mean", "median"}
    assert {k for k, v in LOWER_IS_BETTER.items() if v} == errors
    rng = np.random.default_rng(0)
    meters = {
        SegmentationMeter(3): (torch.tensor(rng.integers(0, 3, (1, 4, 4))),
                               torch.tensor(rng.integers(0, 3, (1, 4, 4)))),
        DepthMeter(): (torch.rand(1, 1, 4, 4) + 0.1, torch.rand(1, 1, 4, 4) + 0.1),
        NormalsMeter(): (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)),
        EdgeMeter(thresholds=3): (torch.rand(1, 1, 8, 8), (torch.rand(1, 1, 8, 8) > 0.7).float()),
        SaliencyMeter(): (torch.rand(1, 1, 4, 4), (torch.rand(1, 1, 4, 4) > 0.5).float()),
    }  # fmt: skip
    for meter, (pred, target) in meters.items():
        meter.update(pred, target)
        for key in meter.compute():
            assert key in LOWER_IS_BETTER, (type(meter).__name__, key)
