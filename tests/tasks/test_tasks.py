"""Task objects: the contract every task fulfils, the TASKS registry as the one table of tasks (config
validation, build_tasks, Δm), each task configured from the config, postprocess and visualisation."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

from mtdense.config import load_config
from mtdense.engine.setup import build_tasks
from mtdense.errors import ConfigError, DataError, MtdenseError, ShapeError
from mtdense.losses import BalancedBCELoss, BerHuLoss, DepthL2Loss, NormalsCosineLoss
from mtdense.metrics import DepthMeter, FastEdgeMeter, multitask_delta
from mtdense.tasks import TASKS, DepthTask, EdgeTask, Metric, NormalsTask, SemsegTask, Task, task_class

META = {"num_classes": 5}


def _config(*overrides: str):
    return load_config(None, ["model.name=mtl", *overrides])


def _make(name: str, *overrides: str) -> Task:
    return task_class(name).from_config(_config(*overrides), META)


def _target(name, h=8, w=10):
    g = torch.Generator().manual_seed(0)
    if name in ("semseg", "parts"):
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
    # the task declares a direction for exactly the numbers its meter reports; the primary one among them
    assert {m.name for m in task.metrics} == set(meter.compute())
    assert task.primary_metric in task.metrics
    vis = task.visualize(task.postprocess(full)[0])
    assert vis.shape == (8, 10, 3) and vis.dtype == np.uint8
    vis_t = task.visualize(target[0])
    assert vis_t.shape == (8, 10, 3)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_random_target_is_a_valid_target(name):
    """What ``mtdense complexity --time`` trains on: the target's shape and dtype, a finite loss."""
    task = _make(name)
    t = task.random_target(3, (6, 7), torch.Generator().manual_seed(0))
    expected = {"semseg": ((3, 6, 7), torch.int64), "depth": ((3, 1, 6, 7), torch.float32)}
    expected |= {"normals": ((3, 3, 6, 7), torch.float32), "edge": ((3, 1, 6, 7), torch.float32)}
    expected |= {"parts": ((3, 6, 7), torch.int64), "saliency": ((3, 1, 6, 7), torch.float32)}
    assert (tuple(t.shape), t.dtype) == expected[name]
    assert torch.isfinite(task.loss(torch.randn(3, task.out_channels, 6, 7), t))


def test_random_targets_in_range():
    g = torch.Generator().manual_seed(0)
    seg = _make("semseg").random_target(2, (16, 16), g)
    assert seg.min() >= 0 and seg.max() <= 4
    depth = _make("depth").random_target(2, (16, 16), g)
    assert depth.min() >= 0.5 and depth.max() < 10.0
    normals = _make("normals").random_target(2, (16, 16), g)
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(2, 16, 16))
    edge = _make("edge").random_target(2, (16, 16), g)
    assert set(edge.unique().tolist()) == {0.0, 1.0}


def test_metric_directions_by_hand():
    """Errors (lower is better): depth rmse/rmse_log/rel/sq_rel/log10, normals mean/median/rmse; every
    other metric is a score. Primary metrics of MTI-Net Sec. 4.1: mIoU, rmse, mean, odsF (mIoU for parts, saliency)."""
    lower = {(name, m.name) for name, cls in TASKS.items() for m in cls.metrics if m.lower_is_better}
    assert lower == {("depth", k) for k in ("rmse", "rmse_log", "rel", "sq_rel", "log10")} | {
        ("normals", k) for k in ("mean", "median", "rmse")
    }
    primary = {name: cls.primary_metric for name, cls in TASKS.items()}
    assert primary == {
        "semseg": Metric("mIoU", False),
        "depth": Metric("rmse", True),
        "normals": Metric("mean", True),
        "edge": Metric("odsF", False),
        "parts": Metric("mIoU", False),
        "saliency": Metric("mIoU", False),
    }
    assert DepthTask.metric("d1") == Metric("d1", False)
    with pytest.raises(MtdenseError, match="task 'depth' has no metric 'epe'; its metrics: rmse"):
        DepthTask.metric("epe")


def test_from_config_reads_the_config_keys():
    depth = _make("depth", "loss.depth=berhu", "eval.depth_reduction=image")
    assert isinstance(depth.loss_fn, BerHuLoss)
    meter = depth.make_meter()
    assert isinstance(meter, DepthMeter) and meter.reduction == "image"
    assert isinstance(_make("depth", "loss.depth=l2").loss_fn, DepthL2Loss)
    assert isinstance(_make("normals", "loss.normals=cosine").loss_fn, NormalsCosineLoss)
    edge = _make("edge", "loss.edge_pos_weight=0.7", "eval.edge_max_dist=0.02", "eval.edge_exact=false")
    assert isinstance(edge.loss_fn, BalancedBCELoss) and edge.max_dist == 0.02
    assert isinstance(edge.make_meter(), FastEdgeMeter)
    # the positive weight reaches the loss: an edge pixel and a non-edge pixel, logits 0 → per pixel
    # 0.7·softplus(0) and 0.3·softplus(0), mean = (0.7 + 0.3)·ln 2 / 2; logits (2, 0): (0.7·softplus(−2) + 0.3·ln 2) / 2
    target = torch.tensor([[[[1.0, 0.0]]]])
    assert edge.loss(torch.zeros(1, 1, 1, 2), target).item() == pytest.approx(np.log(2) / 2, rel=1e-6)
    expected = (0.7 * np.log1p(np.exp(-2.0)) + 0.3 * np.log(2)) / 2
    assert edge.loss(torch.tensor([[[[2.0, 0.0]]]]), target).item() == pytest.approx(expected, rel=1e-6)


def test_semseg_takes_classes_from_the_dataset_meta():
    cfg = _config()
    meta = {"num_classes": 3, "class_names": ["a", "b", "c"], "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}
    task = SemsegTask.from_config(cfg, meta)
    assert task.out_channels == 3 and task.class_names == ["a", "b", "c"]
    assert task.palette.tolist() == meta["palette"]


def test_semseg_without_num_classes_is_an_error_naming_the_meta():
    """No 40-class fallback: a head of a guessed width would train on wrong labels."""
    cfg = _config("data.root=/data/mine")
    with pytest.raises(DataError, match=r"meta\.json in data\.root = /data/mine\) has no 'num_classes'"):
        build_tasks(cfg, {"class_names": ["a"]})
    # tasks that need nothing from the meta build without it
    assert set(build_tasks(_config("data.tasks=[depth,normals]"), {})) == {"depth", "normals"}


def test_unknown_task():
    valid = "depth, edge, normals, parts, saliency, semseg"
    with pytest.raises(ConfigError, match=f"unknown task 'optical_flow'; valid tasks: {valid}"):
        task_class("optical_flow")
    with pytest.raises(ConfigError, match=r"data\.aux_tasks: .*unknown task\(s\) \['flow'\]"):
        _config("data.aux_tasks=[flow]")


class _Saliency(Task):
    """A task added as the registry says: one class, one entry (nothing else edited)."""

    name = "toy_saliency"
    metrics = (Metric("maxF", False), Metric("mae", True))
    primary_metric = metrics[1]
    target_key = "toy_saliency"
    seen: ClassVar[list] = []

    @classmethod
    def from_config(cls, cfg, meta):
        cls.seen.append(cfg.data.root)
        return cls(out_channels=1, ignore_value=255.0, loss_fn=torch.nn.BCEWithLogitsLoss())

    def postprocess(self, pred):
        return pred.sigmoid()

    def make_meter(self):
        raise NotImplementedError

    def visualize(self, x):
        raise NotImplementedError

    def random_target(self, batch, size, generator):
        return torch.rand((batch, 1, *size), generator=generator).round()


def test_a_new_task_is_one_class_and_one_registry_entry(monkeypatch):
    monkeypatch.setitem(TASKS, _Saliency.name, _Saliency)
    cfg = _config("data.tasks=[depth,toy_saliency]", "data.root=r")  # the config accepts it
    tasks = build_tasks(cfg, {})
    assert isinstance(tasks["toy_saliency"], _Saliency) and _Saliency.seen == ["r"]
    # Δm takes its primary metric and direction from the class: mae 0.08 vs 0.10 → +20 %; rmse 0.5 vs 0.5 → 0
    res = {"toy_saliency": {"mae": 0.08, "maxF": 1.0}, "depth": {"rmse": 0.5}}
    base = {"toy_saliency": {"mae": 0.10, "maxF": 2.0}, "depth": {"rmse": 0.5}}
    assert multitask_delta(res, base) == pytest.approx(10.0)


def test_wrong_channel_count_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"\(B, 1, h, w\)"):
        DepthTask().loss(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4))


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
