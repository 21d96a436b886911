"""Task objects: the contract every task fulfils, and each task's postprocess / visualisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtdense.errors import ConfigError, ShapeError
from mtdense.tasks import TASKS, DepthTask, EdgeTask, NormalsTask, SemsegTask, build_task


def _make(name):
    return SemsegTask(5) if name == "semseg" else build_task(name)


def _target(name, h=8, w=10):
    g = torch.Generator().manual_seed(0)
    if name == "semseg":
        t = torch.randint(0, 5, (2, h, w), generator=g)
        t[:, 0] = 255
        return t
    if name == "depth":
        t = torch.rand(2, 1, h, w, generator=g) + 0.5
        t[..., 0, :] = 0
        return t
    if name == "normals":
        return torch.nn.functional.normalize(torch.randn(2, 3, h, w, generator=g), dim=1)
    return (torch.rand(2, 1, h, w, generator=g) > 0.8).float()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_contract(name):
    task = _make(name)
    assert task.name == name and task.out_channels >= 1
    target = _target(name)
    pred = torch.randn(2, task.out_channels, 4, 5, requires_grad=True)  # half resolution: resized inside
    loss = task.loss(pred, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    meter = task.make_meter()
    full = torch.randn(2, task.out_channels, 8, 10)
    task.update_meter(meter, full, target)
    assert task.primary_metric in meter.compute()
    vis = task.visualize(task.postprocess(full)[0])
    assert vis.shape == (8, 10, 3) and vis.dtype == np.uint8
    vis_t = task.visualize(target[0])
    assert vis_t.shape == (8, 10, 3)


def test_wrong_channel_count_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"\(B, 1, h, w\)"):
        DepthTask().loss(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4))


def test_unknown_task():
    with pytest.raises(ConfigError, match="valid tasks"):
        build_task("optical_flow")


def test_postprocess_ranges():
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(NormalsTask().postprocess(x).norm(dim=1), torch.ones(2, 4, 4))
    p = SemsegTask(3).postprocess(x)
    assert torch.allclose(p.sum(1), torch.ones(2, 4, 4))
    e = EdgeTask().postprocess(x[:, :1])
    assert (e > 0).all() and (e < 1).all()
    assert (DepthTask().postprocess(-x[:, :1].abs()) > 0).all()


def test_visualisations_encode_values():
    # normals: (n + 1) / 2 → n = (0, 0, -1) is (127.5, 127.5, 0) → (128, 128, 0); invalid zero vectors black
    n = torch.zeros(3, 1, 2)
    n[2, 0, 0] = -1
    vis = NormalsTask().visualize(n)
    assert vis[0, 0].tolist() == [128, 128, 0] and vis[0, 1].tolist() == [0, 0, 0]
    # semseg: palette colours, ignore black
    seg = SemsegTask(3, palette=[[10, 20, 30], [40, 50, 60], [70, 80, 90]])
    lab = torch.tensor([[0, 2, 255]])
    assert seg.visualize(lab).tolist() == [[[10, 20, 30], [70, 80, 90], [0, 0, 0]]]
    # edge: probability as grey
    assert EdgeTask().visualize(torch.tensor([[[0.0, 1.0]]]))[0, :, 0].tolist() == [0, 255]
    # depth: invalid black, valid coloured
    d = DepthTask().visualize(torch.tensor([[[0.0, 2.0]]]))
    assert d[0, 0].tolist() == [0, 0, 0] and d[0, 1].sum() > 0
