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


def test_one_task_of():
    """The engine uses the output-key contract's one definition (mtdense.losses.task_of)."""
    from mtdense import losses

    assert task_of is losses.task_of


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
    """4 steps vs 2, stop, resume for 2 (with random-scale augmentation, so the data RNG must resume too)."""
    raw = tiny_raw_config(**{"train.max_steps": 4, "data.scales": [1.0, 1.25], "data.crop_size": [32, 48]})
    full, _ = _train(raw, tmp_path / "full")
    _train(raw, tmp_path / "part", stop_after=2)
    assert load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["step"] == 2
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


def test_two_phase_needs_a_model_that_has_one(tiny_raw_config, tmp_path):
    with pytest.raises(MtdenseError, match="train.phase1_steps"):
        Trainer(validate_config(tiny_raw_config(**{"train.phase1_steps": 1})), tmp_path / "r", progress=False)


# -- partially labelled batches (Task contract) -------------------------------------------------------
def _fixed_batch(trainer, n=2):
    return next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=n)))


def test_sample_without_semseg_counts_nothing_for_semseg(tiny_raw_config, tmp_path, monkeypatch):
    """Sample 1 has no semseg (its target is all ignore = 255): every semseg loss sees sample 0 only;
    the other tasks still see both samples; the step trains."""
    trainer = Trainer(validate_config(tiny_raw_config()), tmp_path / "run", progress=False)
    batch = _fixed_batch(trainer)
    batch["semseg"][1] = 255
    seen: dict[str, list[int]] = {"semseg": [], "depth": []}
    for name in seen:
        task = trainer.tasks[name]
        real = task.loss

        def loss(pred, target, real=real, name=name):
            seen[name].append(pred.shape[0])
            return real(pred, target)

        monkeypatch.setattr(task, "loss", loss)
    record = trainer.train_step(batch)
    assert seen["semseg"] == [1] and seen["depth"] == [2]
    assert record["loss/semseg"] > 0


def test_batch_without_any_semseg_leaves_its_balancer_term_out(tiny_raw_config, tmp_path):
    """No sample is labelled for semseg: no semseg loss at all, so the learned δ_semseg (TRL eq. 7) gets
    no gradient and stays at its initial 0.5, while δ_depth moves."""
    raw = tiny_raw_config(**{"loss.balancer": "uncertainty", "train.optimizer": "sgd", "train.lr": 0.1})
    trainer = Trainer(validate_config(raw), tmp_path / "run", progress=False)
    batch = _fixed_batch(trainer)
    batch["semseg"][:] = 255
    record = trainer.train_step(batch)
    assert "loss/semseg" not in record and "loss/depth" in record
    deltas = trainer.balancer.log_vars
    assert deltas["semseg"].item() == 0.5 and deltas["depth"].item() != 0.5


def test_meter_skips_unlabelled_samples(tiny_raw_config, tmp_path):
    """Evaluating [labelled, unlabelled] gives the numbers of [labelled] alone, for every task."""
    from mtdense.engine.evaluator import MultiTaskEvaluator

    trainer = Trainer(validate_config(tiny_raw_config()), tmp_path / "run", progress=False)
    batch = _fixed_batch(trainer)
    for task in trainer.tasks.values():
        batch[task.target_key][1] = task.ignore_value
    trainer.model.eval()
    with torch.no_grad():
        outputs = trainer.model(batch["image"])
    both, first = MultiTaskEvaluator(trainer.tasks), MultiTaskEvaluator(trainer.tasks)
    both.process(outputs, batch)
    first.process(
        {k: v[:1] for k, v in outputs.items()},
        {k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()},
    )
    assert both.evaluate() == first.evaluate()


# -- config errors through the CLI ------------------------------------------------------------------
def _cli_train(raw, tmp_path, capsys):
    import yaml

    from mtdense.cli.main import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = main(["train", str(path), "--out", str(tmp_path / "run")])
    return code, capsys.readouterr().err


def test_unknown_tag_weights_key_is_an_error_before_anything_is_written(tiny_raw_config, tmp_path, capsys):
    raw = tiny_raw_config(**{"loss.tag_weights": {"initial/edge": 0.8}})  # mtl has no intermediate outputs
    code, err = _cli_train(raw, tmp_path, capsys)
    assert code == 2 and err.startswith("error:") and "'initial/edge'" in err and "loss.tag_weights" in err
    assert not (tmp_path / "run").exists()


def test_weights_that_uncertainty_would_ignore_are_an_error(tiny_raw_config, tmp_path, capsys):
    raw = tiny_raw_config(**{"loss.balancer": "uncertainty", "loss.weights": {"semseg": 1.0, "depth": 2.0}})
    code, err = _cli_train(raw, tmp_path, capsys)
    assert code == 2 and err.startswith("error:") and "loss.weights" in err and "uncertainty" in err
    assert not (tmp_path / "run").exists()


def test_uncertainty_balancer_keeps_tag_weights(tiny_raw_config, tmp_path):
    """Issue 7 §4: the engine's builder used to drop loss.tag_weights under uncertainty weighting."""
    from mtdense.engine.setup import build_balancer

    raw = tiny_raw_config(**{"loss.balancer": "uncertainty", "loss.tag_weights": {"initial/edge": 0.5}})
    cfg = validate_config(raw)
    balancer = build_balancer(cfg, {"edge": None, "depth": None})
    with torch.no_grad():
        for p in balancer.log_vars.values():
            p.zero_()
    one = torch.tensor(1.0)
    total, _ = balancer({"edge": one, "initial/edge": one, "depth": one})
    assert total.item() == pytest.approx(1.0 + 0.5 + 1.0)  # e^0·(1 + 0.5·1) + 0 + e^0·1 + 0


def test_resume_purges_redone_steps_from_tensorboard(tiny_raw_config, tmp_path):
    """Events written after the checkpoint (before a hard kill) are dropped on resume, not shown twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    raw = tiny_raw_config(**{"train.max_steps": 5, "train.log_every": 1})
    out = tmp_path / "run"
    _train(raw, out, stop_after=3)
    killed = SummaryWriter(log_dir=str(out / "tb"))  # steps 4-5 logged, then a hard kill before a checkpoint
    for step in (4, 5):
        killed.add_scalar("train/loss", 1e6, step)
    killed.close()
    _train(raw, out, resume=True)
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    steps = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5]
    assert all(v != 1e6 for _, v in steps)
