"""Delta_m (MTI-Net Eq. 2) by hand, metrics and directions from the tasks, error messages.

(That every meter's keys have a direction is checked per task in ``tests/tasks/test_tasks.py``.)
"""

from __future__ import annotations

import pytest

from mtdense.errors import MtdenseError
from mtdense.metrics import multitask_delta
from mtdense.tasks import TASKS


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


def test_explicit_metric_takes_its_direction_from_the_task():
    # normals a11 (a score) 60 vs 50: +20 %; normals rmse (an error) 24 vs 20: -20 %
    res, base = {"normals": {"a11": 60.0, "rmse": 24.0}}, {"normals": {"a11": 50.0, "rmse": 20.0}}
    assert multitask_delta(res, base, metrics={"normals": "a11"}) == pytest.approx(20.0)
    assert multitask_delta(res, base, metrics={"normals": "rmse"}) == pytest.approx(-20.0)


def test_errors_name_task_and_metric():
    with pytest.raises(MtdenseError, match="task 'depth' missing from baseline"):
        multitask_delta({"depth": {"rmse": 1.0}}, {"semseg": {"mIoU": 1.0}})
    with pytest.raises(MtdenseError, match="metric 'rmse' of task 'depth' missing from results"):
        multitask_delta({"depth": {"rel": 1.0}}, {"depth": {"rmse": 1.0}})
    with pytest.raises(MtdenseError, match="unknown task 'flow'; known tasks: ") as err:
        multitask_delta({"flow": {"epe": 1.0}}, {"flow": {"epe": 1.0}})
    # the message lists every registered task, sorted
    listed = str(err.value).split("known tasks: ", 1)[1].split(", ")
    assert listed == sorted(TASKS) and {"depth", "edge", "normals", "semseg"} <= set(listed)
    with pytest.raises(MtdenseError, match="task 'depth' has no metric 'epe'"):
        multitask_delta({"depth": {"epe": 1.0}}, {"depth": {"epe": 1.0}}, metrics={"depth": "epe"})
    with pytest.raises(MtdenseError, match="is 0"):
        multitask_delta({"depth": {"rmse": 1.0}}, {"depth": {"rmse": 0.0}})
    with pytest.raises(MtdenseError, match="no task to compare"):
        multitask_delta({}, {})
