"""PAD-Net's two-phase schedule (seed 001, Sec. 4.1) through the Trainer: phase 1 updates only
``phase_parameters(1)`` at ``train.phase1_lr``, phase 2 everything at ``train.lr``; exact resume across
the phase boundary."""

from __future__ import annotations

import pytest
import torch

from mtdense.config import validate_config
from mtdense.engine.trainer import Trainer
from mtdense.errors import ConfigError

PHASE1_LR, LR, BACKBONE_MULT = 1e-2, 1e-3, 0.5


def _padnet_raw(tiny_raw_config, **overrides):
    return tiny_raw_config(
        **{
            "model": {
                "name": "padnet",
                "setting": "paper",
                "channels": 16,
                "agg_channels": 8,
                "backbone": {"name": "resnet18"},
            },
            "data.tasks": ["semseg", "depth"],
            "data.aux_tasks": ["normals", "edge"],
            "loss.tag_weights": {"initial/edge": 0.8, "initial/normals": 0.8},
            "train.optimizer": "sgd",
            "train.schedule": "constant",
            "train.lr": LR,
            "train.phase1_lr": PHASE1_LR,
            "train.backbone_lr_mult": BACKBONE_MULT,
            "train.max_steps": 4,
            "train.phase1_steps": 2,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def full_run(tiny_raw_config, tmp_path_factory):
    """An uninterrupted 4-step run (2 in phase 1) that records, at every optimiser step, each param
    group's learning rate and, before the first phase-2 step, a copy of every parameter."""
    trainer = Trainer(validate_config(_padnet_raw(tiny_raw_config)), tmp_path_factory.mktemp("full"), progress=False)
    initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    lrs: list[dict[str, float]] = []
    after_phase1: dict[str, torch.Tensor] = {}

    def record(optimizer, args, kwargs):
        lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        if len(lrs) == 3:  # the third update is the first of phase 2: the weights now are phase 1's result
            after_phase1.update({n: p.detach().clone() for n, p in trainer.model.named_parameters()})

    trainer.optimizer.register_step_pre_hook(record)
    trainer.train()
    return trainer, initial, after_phase1, lrs


def test_phase1_changes_only_phase1_parameters(full_run):
    trainer, initial, after_phase1, _ = full_run
    phase1 = {id(p) for p in trainer.model.phase_parameters(1)}
    named = dict(trainer.model.named_parameters())
    inside = [n for n, p in named.items() if id(p) in phase1]
    outside = [n for n, p in named.items() if id(p) not in phase1]
    assert inside and outside
    assert any(n.startswith("decoders.") for n in outside) and any(n.startswith("backbone.") for n in inside)
    assert all(torch.equal(initial[n], after_phase1[n]) for n in outside)  # bitwise unchanged
    assert sum(not torch.equal(initial[n], after_phase1[n]) for n in inside) > len(inside) // 2
    # phase 2 trains everything
    assert all(not torch.equal(initial[n], named[n]) for n in outside)


def test_each_phase_runs_at_its_configured_learning_rates(full_run):
    _, _, _, lrs = full_run
    assert len(lrs) == 4
    phase1 = {"backbone": PHASE1_LR * BACKBONE_MULT, "new": PHASE1_LR, "new@phase2": 0.0}
    phase2 = {"backbone": LR * BACKBONE_MULT, "new": LR, "new@phase2": LR}
    for step in (0, 1):
        assert lrs[step] == pytest.approx(phase1), step
    for step in (2, 3):
        assert lrs[step] == pytest.approx(phase2), step


def test_resume_across_the_phase_boundary_is_bitwise_exact(full_run, tiny_raw_config, tmp_path):
    full, *_ = full_run
    raw = _padnet_raw(tiny_raw_config)
    Trainer(validate_config(raw), tmp_path / "part", progress=False).train(stop_after=1)  # still in phase 1
    resumed = Trainer(validate_config(raw), tmp_path / "part", resume=True, progress=False)
    assert resumed.step == 1
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    opt_a, opt_b = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert opt_a.keys() == opt_b.keys()
    assert all(torch.equal(opt_a[i]["momentum_buffer"], opt_b[i]["momentum_buffer"]) for i in opt_a)


def test_phase_settings_are_validated(tiny_raw_config):
    with pytest.raises(ConfigError, match="phase1_steps"):
        validate_config(_padnet_raw(tiny_raw_config, **{"train.phase1_steps": 4}))
    with pytest.raises(ConfigError, match="phase1_lr"):
        validate_config(_padnet_raw(tiny_raw_config, **{"train.phase1_steps": 0}))
