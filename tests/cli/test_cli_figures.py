"""The figures of ``mtdense predict`` and ``mtdense demo``: titled columns, a semseg class legend, one depth
colour scale in metres shared by ground truth and prediction, with a colour bar."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from mtdense.engine.figures import FigureRow, prediction_figure
from mtdense.tasks import DepthTask, SemsegTask

H, W = 4, 6


def _rows():
    gt_labels = torch.zeros(H, W, dtype=torch.int64)  # wall ...
    gt_labels[0, :2] = 255  # ... and ignore
    probs = torch.zeros(3, H, W)
    probs[2] = 1.0  # predicted: bed everywhere (class 1, "floor", appears nowhere)
    gt_depth = torch.full((1, H, W), 4.0)
    gt_depth[0, 0, 0] = 2.0
    gt_depth[0, 3, 5] = 0.0  # invalid
    pred_depth = torch.full((1, H, W), 10.0)  # another range: per-image scaling would colour 2 m differently
    pred_depth[0, 0, 0] = 2.0
    image = np.zeros((H, W, 3), np.uint8)
    return [FigureRow(image, {"semseg": probs, "depth": pred_depth}, {"semseg": gt_labels, "depth": gt_depth})]


def test_titles_legend_and_shared_depth_scale():
    tasks = {"semseg": SemsegTask(3, class_names=["wall", "floor", "bed"]), "depth": DepthTask()}
    rows = _rows()
    fig = prediction_figure(rows, tasks, title="t")
    panels = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in panels]
    assert titles == [
        "image",
        "semseg\nground truth",
        "semseg\nprediction",
        "depth\nground truth",
        "depth\nprediction",
    ]
    # legend: exactly the classes present (ground truth wall, predicted bed), by name
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["wall", "bed"]

    # one colour bar in metres, from 0 to the 99th percentile of the valid depths of both panels
    valid = np.concatenate([np.full(W * H - 2, 4.0), [2.0], np.full(W * H - 1, 10.0), [2.0]])
    top = float(np.percentile(valid, 99))
    bars = [ax for ax in fig.axes if "depth (m)" in ax.get_xlabel()]
    assert len(bars) == 1 and bars[0].get_xlim() == (0.0, top)
    gt_rgb, pred_rgb = (ax.get_images()[0].get_array() for ax in panels[3:])
    expected = (np.asarray(colormaps["turbo"](2.0 / top)[:3]) * 255).round()
    np.testing.assert_array_equal(gt_rgb[0, 0], expected)  # 2 m is one colour in both panels
    np.testing.assert_array_equal(pred_rgb[0, 0], expected)
    np.testing.assert_array_equal(gt_rgb[3, 5], [0, 0, 0])  # invalid depth is black


def test_predict_only_figure_has_prediction_columns(tmp_path):
    """``predict`` has no ground truth: image and one titled prediction column per task."""
    tasks = {"semseg": SemsegTask(3), "depth": DepthTask()}
    row = _rows()[0]
    fig = prediction_figure([FigureRow(row.image, row.preds)], tasks)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["image", "semseg\nprediction", "depth\nprediction"]
    path = tmp_path / "f.png"
    fig.savefig(path)
    assert Image.open(path).size[0] > 3 * W
