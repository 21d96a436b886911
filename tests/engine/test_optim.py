"""Optimiser set-up: learning-rate schedules, parameter groups and their multipliers, pretrained
weights loaded once, thread settings scoped to training, and a loss that training lowers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mtdense.config import validate_config
from mtdense.engine.setup import build_model_for, build_optimizer, build_scheduler, build_tasks, lr_factor
from mtdense.engine.trainer import Trainer
from mtdense.errors import ConfigError
from mtdense.models import MultiTaskModel


def _cfg(**train):
    return validate_config({"model": {"name": "mtl", "backbone": {"name": "resnet18"}}, "train": train})


class _Tiny(MultiTaskModel):
    """A backbone conv, a head conv and a scalar ``alpha`` in its own group (like cross-stitch's α)."""

    def __init__(self, group_alpha: bool = True, duplicate: bool = False) -> None:
        super().__init__({"depth": 1})
        self.backbone = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(4, 1, 1)
        self.alpha = nn.Parameter(torch.ones(()))
        self.group_alpha, self.duplicate = group_alpha, duplicate
        self.lr_mults = {"alpha": 100.0}

    def forward_normalized(self, x):
        return {"depth": self.head(self.backbone(x)) * self.alpha}

    def param_groups(self):
        groups = {"backbone": list(self.backbone.parameters()), "new": list(self.head.parameters())}
        if self.duplicate:
            groups["new"].append(self.alpha)
        if self.group_alpha:
            groups["alpha"] = [self.alpha]
        return groups


# -- schedules ------------------------------------------------------------------------------------
def test_poly_schedule_values():
    """ParseNet poly: (1 − k/K)^p. K = 10, p = 0.9: k = 5 → 0.5^0.9 = 0.5358867..., k = 10 → 0."""
    cfg = _cfg(schedule="poly", poly_power=0.9, max_steps=10)
    assert lr_factor(cfg, 0) == 1.0
    assert lr_factor(cfg, 5) == pytest.approx(0.5358867313)
    assert lr_factor(cfg, 9) == pytest.approx(0.1**0.9)
    assert lr_factor(cfg, 10) == 0.0


def test_step_schedule_values():
    """γ^(number of milestones ≤ k): milestones 3 and 6, γ = 0.1."""
    cfg = _cfg(schedule="step", step_milestones=[3, 6], step_gamma=0.1, max_steps=10)
    assert [lr_factor(cfg, k) for k in (0, 2, 3, 5, 6, 9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_values():
    """Linear warm-up (k + 1)/W for W = 4 steps, then the schedule (constant here)."""
    cfg = _cfg(schedule="constant", warmup_steps=4, max_steps=10)
    assert [lr_factor(cfg, k) for k in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    poly = _cfg(schedule="poly", poly_power=1.0, warmup_steps=4, max_steps=10)
    assert lr_factor(poly, 1) == pytest.approx(0.5 * 0.9)  # warm-up 2/4 times poly 1 − 1/10


def test_two_phase_schedule_restarts_at_the_boundary():
    """4 phase-1 steps of 10, lr 1e-3, phase1_lr 1e-2, poly p = 1: phase 1 at 10 × (1 − k/4) for its
    groups and 0 for phase-2 groups; phase 2 at (1 − (k − 4)/6) for every group."""
    cfg = _cfg(schedule="poly", poly_power=1.0, max_steps=10, lr=1e-3, phase1_steps=4, phase1_lr=1e-2)
    assert lr_factor(cfg, 0) == pytest.approx(10.0)
    assert lr_factor(cfg, 2) == pytest.approx(5.0)
    assert lr_factor(cfg, 2, phase=2) == 0.0
    assert lr_factor(cfg, 4) == lr_factor(cfg, 4, phase=2) == pytest.approx(1.0)
    assert lr_factor(cfg, 7, phase=2) == pytest.approx(0.5)


def test_scheduler_applies_the_factor_to_each_group():
    cfg = _cfg(schedule="poly", poly_power=1.0, max_steps=4, lr=0.1, backbone_lr_mult=0.1)
    optimizer = build_optimizer(cfg, _Tiny(), nn.Module())
    scheduler = build_scheduler(cfg, optimizer)
    seen = []
    for _ in range(3):
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    # step k: base × (1 − k/4); backbone base 0.1 × 0.1, new 0.1
    assert [s["backbone"] for s in seen] == pytest.approx([0.01, 0.0075, 0.005])
    assert [s["new"] for s in seen] == pytest.approx([0.1, 0.075, 0.05])


# -- parameter groups -----------------------------------------------------------------------------
def test_param_groups_and_multipliers():
    cfg = _cfg(lr=1e-3, backbone_lr_mult=0.1, weight_decay=1e-4)
    balancer = nn.Module()
    balancer.delta = nn.Parameter(torch.zeros(()))
    model = _Tiny()
    optimizer = build_optimizer(cfg, model, balancer)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"backbone", "new", "alpha", "balancer"}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert groups["new"]["lr"] == pytest.approx(1e-3)
    assert groups["alpha"]["lr"] == pytest.approx(1e-1)  # lr × model.lr_mults["alpha"]
    assert groups["balancer"]["lr"] == pytest.approx(1e-3) and groups["balancer"]["weight_decay"] == 0.0
    assert groups["new"]["weight_decay"] == pytest.approx(1e-4)
    assert groups["alpha"]["params"][0] is model.alpha
    assert {id(p) for p in groups["backbone"]["params"]} == {id(p) for p in model.backbone.parameters()}


def test_param_group_errors_name_the_problem():
    cfg = _cfg()
    model = _Tiny()
    model.lr_mults = {}
    with pytest.raises(ConfigError, match="'alpha'.*lr_mults"):
        build_optimizer(cfg, model, nn.Module())
    with pytest.raises(ConfigError, match="in no group.*alpha"):
        build_optimizer(cfg, _Tiny(group_alpha=False), nn.Module())
    with pytest.raises(ConfigError, match="both group 'new' and 'alpha'"):
        build_optimizer(cfg, _Tiny(duplicate=True), nn.Module())


def test_backbone_lr_mult_through_the_trainer(tiny_raw_config, tmp_path):
    raw = tiny_raw_config(**{"train.max_steps": 2, "train.backbone_lr_mult": 0.1, "train.schedule": "constant"})
    Trainer(validate_config(raw), tmp_path / "run", progress=False).train(stop_after=1)  # no evaluation needed
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["lr"]["backbone"] == pytest.approx(1e-4) and record["lr"]["new"] == pytest.approx(1e-3)


# -- one way to do each thing ---------------------------------------------------------------------
def test_pretrained_weights_are_read_once(tmp_path, monkeypatch):
    from mtdense.backbones import _pretrained, build_backbone

    path = tmp_path / "r18.pth"
    source = build_backbone("resnet18")
    torch.save(source.pretrained_target().state_dict(), path)
    reads = []
    real = _pretrained.read_state_dict
    monkeypatch.setattr(_pretrained, "read_state_dict", lambda p: reads.append(p) or real(p))
    cfg = validate_config({"model": {"name": "mtl", "backbone": {"name": "resnet18", "pretrained": str(path)}}})
    model = build_model_for(cfg, build_tasks(cfg, {"num_classes": 3}))
    assert len(reads) == 1
    expected = source.pretrained_target().state_dict()
    loaded = model.backbone.pretrained_target().state_dict()
    assert all(torch.equal(expected[k], loaded[k]) for k in expected)


def test_threads_setting_does_not_leak_out_of_training(tiny_raw_config, tmp_path):
    before = torch.get_num_threads()
    want = before + 1
    trainer = Trainer(
        validate_config(tiny_raw_config(**{"train.max_steps": 2, "train.threads": want})),
        tmp_path / "r",
        progress=False,
    )
    seen = []
    trainer.optimizer.register_step_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    trainer.train(stop_after=1)  # one step is enough, and stopping early skips the evaluation
    assert seen == [want]
    assert torch.get_num_threads() == before


def test_training_lowers_the_loss_on_a_fixed_batch(tiny_raw_config, tmp_path):
    raw = tiny_raw_config(**{"train.max_steps": 100, "train.schedule": "constant", "train.lr": 1e-3})
    trainer = Trainer(validate_config(raw), tmp_path / "r", progress=False)
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=2)))
    trainer.model.train()
    losses = [trainer.train_step(batch)["loss"] for _ in range(12)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses
