"""Exact resume: every process's RNG state in the checkpoint, atomic checkpoint writes, config diffs."""

from __future__ import annotations

import pytest
import torch

from mtdense.config import validate_config
from mtdense.engine import checkpoint as C
from mtdense.engine.trainer import Trainer
from mtdense.errors import CheckpointError


def _trainer(raw, out, **kw):
    return Trainer(validate_config(raw), out, progress=False, **kw)


def test_checkpoint_holds_each_ranks_rng_and_resume_reproduces_random_draws(tiny_raw_config, tmp_path, monkeypatch):
    """A training step that draws from torch's RNG (dropout, stochastic depth) stays exact across a resume:
    the draws of a stopped-and-resumed run equal those of an uninterrupted one (without the restored RNG
    state the resumed run would draw from the state its model initialisation left)."""
    real_step = Trainer.train_step
    draws: dict[str, list[float]] = {}

    def noisy_step(self, batch):
        draws.setdefault(self.out.name, []).append(float(torch.rand(())))
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", noisy_step)
    raw = tiny_raw_config(**{"train.max_steps": 3, "train.threads": 1})
    _trainer(raw, tmp_path / "full").train()
    _trainer(raw, tmp_path / "part").train(stop_after=1)
    rng = C.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["rng"]
    assert rng["world_size"] == 1 and len(rng["ranks"]) == 1
    assert rng["ranks"][0]["cuda"] is None  # a CPU run has no CUDA generator to save
    torch.rand(7)  # draws after the save must not leak into the resumed run
    resumed = _trainer(raw, tmp_path / "part", resume=True)
    assert torch.equal(torch.get_rng_state(), rng["ranks"][0]["torch"])
    resumed.train()
    assert len(draws["full"]) == 3 and draws["part"] == draws["full"]


def test_capture_and_restore_rng_on_cpu():
    device = torch.device("cpu")
    state = C.capture_rng(device)
    a = torch.rand(3)
    C.restore_rng(state, device)
    assert torch.equal(torch.rand(3), a)


def test_checkpoints_without_per_rank_states_still_resume(tiny_raw_config, tmp_path):
    raw = tiny_raw_config(**{"train.threads": 1})
    state = _trainer(raw, tmp_path / "run").state()
    state["step"] = 1
    state["rng"] = {"torch": torch.get_rng_state()}  # the format before per-rank states
    C.save_checkpoint(state, tmp_path / "run" / "checkpoints" / "last.pt")
    torch.rand(3)
    resumed = _trainer(raw, tmp_path / "run", resume=True)
    assert resumed.step == 1 and torch.equal(torch.get_rng_state(), state["rng"]["torch"])


def test_a_checkpoint_without_a_config_is_checked_against_the_runs_config_yaml(tiny_raw_config, tmp_path):
    run = tmp_path / "run"
    state = _trainer(tiny_raw_config(**{"train.threads": 1}), run).state()  # the trainer writes run/config.yaml
    del state["config"]
    C.save_checkpoint(state, run / "checkpoints" / "last.pt")
    with pytest.raises(C.ConfigError, match=r"(?s)config.yaml in 1 key\(s\).*train.lr: 0.001 → 0.01"):
        _trainer(tiny_raw_config(**{"train.threads": 1, "train.lr": 0.01}), run, resume=True)


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
def test_a_failed_checkpoint_write_leaves_the_previous_one_intact(tiny_raw_config, tmp_path, monkeypatch, failure):
    trainer = _trainer(tiny_raw_config(**{"train.threads": 1}), tmp_path / "run")
    trainer.save()
    folder = tmp_path / "run" / "checkpoints"
    before = (folder / "last.pt").read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(100)  # a partial file on disk, as a kill mid-write leaves it
        raise failure

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises((CheckpointError, KeyboardInterrupt)) as info:
        trainer.save()
    if isinstance(failure, OSError):
        assert "last.pt" in str(info.value) and "previous one is unchanged" in str(info.value)
    assert (folder / "last.pt").read_bytes() == before
    assert [p.name for p in folder.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_config_changes_lists_dotted_keys_with_old_and_new_values():
    saved = {"train": {"lr": 1e-3, "max_steps": 10}, "model": {"name": "mtl", "backbone": {"name": "resnet18"}}}
    now = {"train": {"lr": 1e-2, "max_steps": 20}, "model": {"name": "mtl", "backbone": {"name": "resnet18"}}}
    now["model"]["extra"] = 1
    assert C.config_changes(saved, now) == {
        "model.extra": ("<absent>", 1),
        "train.lr": (1e-3, 1e-2),
        "train.max_steps": (10, 20),
    }
    with pytest.raises(C.ConfigError, match=r"(?s)2 key\(s\).*model.extra: '<absent>' → 1.*train.lr: 0.001 → 0.01"):
        C.check_resume_config(saved, now, source="run/checkpoints/last.pt")
    C.check_resume_config(saved, {**saved, "train": {"lr": 1e-3, "max_steps": 20}}, source="x")  # allowed
