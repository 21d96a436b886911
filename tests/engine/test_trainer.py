"""Engine: training runs, exact resume, NaN handling, nothing overwritten."""

from __future__ import annotations

import json

import pytest
import torch

from mtdense.config import validate_config
from mtdense.engine.checkpoint import load_checkpoint
from mtdense.engine.data import ResumableBatchSampler
from mtdense.engine.trainer import Trainer, compute_losses, task_of
from mtdense.errors import MtdenseError, TrainingError


def _train(raw, out, **kw):
    trainer = Trainer(validate_config(raw), out, progress=False, resume=kw.pop("resume", False))
    return trainer, trainer.train(**kw)


def test_task_of_output_keys():
    assert task_of("depth") == "depth"
    assert task_of("initial/s8/normals") == "normals"


def test_sampler_resumes_mid_epoch_and_covers_each_epoch():
    full = ResumableBatchSampler(10, batch_size=3, seed=1)
    it = iter(full)
    first = [next(it) for _ in range(7)]
    resumed = iter(ResumableBatchSampler(10, batch_size=3, seed=1, start_step=4))
    assert [next(resumed) for _ in range(3)] == first[4:]
    epoch0 = [i for b in first[:3] for _, i in b]
    assert len(set(epoch0)) == 9 and all(e == 0 for b in first[:3] for e, _ in b)
    assert all(e == 1 for b in first[3:6] for e, _ in b)  # 3 steps per epoch (drop_last)


def test_ddp_ranks_take_disjoint_slices():
    a = next(iter(ResumableBatchSampler(12, batch_size=2, seed=0, rank=0, world_size=2)))
    b = next(iter(ResumableBatchSampler(12, batch_size=2, seed=0, rank=1, world_size=2)))
    assert not set(a) & set(b) and len(a) == len(b) == 2


def test_train_writes_run_directory(tiny_raw_config, tmp_path):
    out = tmp_path / "run"
    _, result = _train(tiny_raw_config(), out)
    assert result.step == 4
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert {"model", "optimizer", "step"} <= set(state) and state["step"] == 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    val = [r for r in records if r["split"] == "val"]
    assert val and set(val[-1]["results"]) == {"semseg", "depth", "normals", "edge"}
    results = json.loads((out / "results.json").read_text())
    assert 0 <= results["semseg"]["mIoU"] <= 100 and results["depth"]["rmse"] > 0
    assert (out / "config.yaml").is_file() and any((out / "tb").iterdir())


def test_resume_is_bitwise_exact(tiny_raw_config, tmp_path):
    raw = tiny_raw_config(**{"train.max_steps": 6, "data.scales": [1.0, 1.25], "data.crop_size": [32, 48]})
    full, _ = _train(raw, tmp_path / "full")
    _train(raw, tmp_path / "part", stop_after=3)
    assert load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["step"] == 3
    resumed, _ = _train(raw, tmp_path / "part", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    opt_a, opt_b = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)


def test_refuses_to_overwrite_a_run(tiny_raw_config, tmp_path):
    raw = tiny_raw_config(**{"train.max_steps": 1})
    _train(raw, tmp_path / "run")
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(MtdenseError, match="already holds a run"):
        Trainer(validate_config(raw), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_raw_config, tmp_path, monkeypatch):
    raw = tiny_raw_config(**{"train.max_steps": 5, "train.checkpoint_every": 1})
    trainer = Trainer(validate_config(raw), tmp_path / "run", progress=False)
    depth = trainer.tasks["depth"]
    real_loss = depth.loss
    calls = {"n": 0}

    def loss(pred, target):
        calls["n"] += 1
        value = real_loss(pred, target)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(depth, "loss", loss)
    with pytest.raises(TrainingError, match="step 3"):
        trainer.train()
    kept = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert kept["step"] == 2
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_compute_losses_uses_each_tasks_loss_at_every_scale(tiny_raw_config, tmp_path):
    trainer = Trainer(validate_config(tiny_raw_config()), tmp_path / "run", progress=False)
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=2)))
    depth = batch["depth"]
    coarse = torch.zeros(2, 1, depth.shape[-2] // 4, depth.shape[-1] // 4)
    losses = compute_losses({"depth": torch.zeros_like(depth), "initial/s4/depth": coarse}, batch, trainer.tasks)
    valid = depth > 0
    expected = depth[valid].abs().mean()  # L1 of a zero prediction = mean |gt| over valid pixels
    assert torch.allclose(losses["depth"], expected) and torch.allclose(losses["initial/s4/depth"], expected)
    with pytest.raises(MtdenseError, match="no configured task"):
        compute_losses({"aux/parts": coarse}, batch, trainer.tasks)


def test_padnet_two_phase_schedule_trains_only_the_front_end_first(tiny_raw_config, tmp_path):
    raw = tiny_raw_config(
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
            "train.max_steps": 3,
            "train.phase1_steps": 2,
        }
    )
    trainer = Trainer(validate_config(raw), tmp_path / "run", progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train(stop_after=2)
    phase1 = {id(p) for p in trainer.model.phase_parameters(1)}
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], params[n]) for n in params if id(params[n]) in phase1)
    outside = [n for n, p in trainer.model.named_parameters() if id(p) not in phase1]
    assert outside and all(torch.equal(before[n], dict(trainer.model.named_parameters())[n]) for n in outside)
    trainer.train()  # phase 2: everything trains
    assert any(not torch.equal(before[n], dict(trainer.model.named_parameters())[n]) for n in outside)


def test_two_phase_needs_a_model_that_has_one(tiny_raw_config, tmp_path):
    with pytest.raises(MtdenseError, match="train.phase1_steps"):
        Trainer(validate_config(tiny_raw_config(**{"train.phase1_steps": 1})), tmp_path / "r", progress=False)
