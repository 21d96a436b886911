"""The trainer's extension point (mtdense.engine.extensions): hook order, extra loss terms in the gradients and the
logs, the extension's state in the checkpoint and on resume, NaN terms named, the registry of config sections, and
resuming checkpoints written before an optional section existed."""

from __future__ import annotations

import json

import pytest
import torch

from mtdense.config import validate_config
from mtdense.config.load import config_to_dict
from mtdense.engine import setup as S
from mtdense.engine import trainer as T
from mtdense.engine.checkpoint import check_resume_config, load_checkpoint
from mtdense.engine.extensions import Extension, TrainerExtension
from mtdense.errors import ConfigError, TrainingError


class Recorder(Extension):
    """Adds ``weight · Σ_p ‖p‖²`` over the model's parameters and counts its own steps (its checkpoint state)."""

    name = "rec"

    def __init__(self, calls: list, weight: float) -> None:
        self.calls, self.weight, self.count = calls, weight, 0

    def setup(self, trainer):
        self.calls.append(("setup", trainer.step))

    def extra_loss(self, trainer, batch, outputs, step):
        self.calls.append(("extra", step))
        assert not any(v.requires_grad for v in outputs.values())  # the source outputs come detached
        l2 = sum(p.pow(2).sum() for p in trainer.model.parameters())
        return {"rec/l2": self.weight * l2}

    def after_step(self, trainer, step):
        self.calls.append(("after", step))
        self.count += 1
        return {"rec/count": self.count}

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.calls.append(("load", state["count"]))
        self.count = state["count"]

    def close(self):
        self.calls.append(("close",))


@pytest.fixture
def recording(monkeypatch):
    calls: list = []
    weights = {"w": 1e-3}

    def build(cfg, *, progress=True):
        return [Recorder(calls, weights["w"])]

    monkeypatch.setattr(T, "build_extensions", build)
    return calls, weights


def _raw(tiny_raw_config, **kw):
    return tiny_raw_config(**{"data.tasks": ["semseg", "depth"], "train.max_steps": 2, "train.threads": 1, **kw})


def test_hooks_run_in_order_and_their_terms_train_and_are_logged(recording, tiny_raw_config, tmp_path):
    calls, _ = recording
    assert isinstance(Recorder([], 0.0), TrainerExtension)
    trainer = T.Trainer(validate_config(_raw(tiny_raw_config)), tmp_path / "run", progress=False)
    trainer.train()
    assert calls == [("setup", 0), ("extra", 0), ("after", 0), ("extra", 1), ("after", 1), ("close",)]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["rec/count"] for r in train] == [1, 2]
    assert all(r["loss"] == pytest.approx(r["loss/total"] + r["loss/rec/l2"]) for r in train)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["extensions"] == {"rec": {"count": 2}}


def test_an_extension_term_reaches_the_model_gradients(recording, tiny_raw_config, tmp_path):
    """One step with the L2 term at weight 1 vs 0: same source batch, different updates (the term's gradient 2·w·p
    is added before the optimiser step)."""
    _, weights = recording
    models = {}
    for w in (0.0, 1.0):
        weights["w"] = w
        raw = _raw(tiny_raw_config, **{"train.max_steps": 1, "train.optimizer": "sgd", "train.momentum": 0.0})
        trainer = T.Trainer(validate_config(raw), tmp_path / f"w{w}", progress=False)
        trainer.train()
        models[w] = trainer.model.state_dict()
    changed = [k for k in models[0.0] if not torch.equal(models[0.0][k], models[1.0][k])]
    assert any("weight" in k for k in changed)


def test_resume_restores_the_extension_state(recording, tiny_raw_config, tmp_path):
    calls, _ = recording
    raw = _raw(tiny_raw_config)
    T.Trainer(validate_config(raw), tmp_path / "run", progress=False).train(stop_after=1)
    calls.clear()
    T.Trainer(validate_config(raw), tmp_path / "run", progress=False, resume=True).train()
    assert calls == [("setup", 0), ("load", 1), ("extra", 1), ("after", 1), ("close",)]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["extensions"]["rec"] == {"count": 2}


def test_a_non_finite_extension_term_stops_the_step_and_is_named(recording, tiny_raw_config, tmp_path):
    _, weights = recording
    weights["w"] = float("nan")
    trainer = T.Trainer(validate_config(_raw(tiny_raw_config)), tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    with pytest.raises(TrainingError, match=r"non-finite loss at step 1 \(terms: rec/l2\)"):
        trainer.train()
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_registry_builds_one_extension_per_section_present(tiny_raw_config):
    from mtdense.engine.probe import GradProbe

    assert S.EXTENSIONS == {"uda": S.build_uda, "probe": S.build_probe}
    assert S.build_extensions(validate_config(_raw(tiny_raw_config))) == []
    built = S.build_extensions(validate_config({**_raw(tiny_raw_config), "probe": {"every": 5}}))
    assert len(built) == 1 and isinstance(built[0], GradProbe) and built[0].every == 5


def test_checkpoints_from_before_an_optional_section_still_resume(tiny_raw_config):
    """A saved config without ``uda`` / ``data.val_data`` (written before they existed) equals one holding them as
    ``None``; setting them is a change that names the key."""
    current = config_to_dict(validate_config(_raw(tiny_raw_config)))
    saved = json.loads(json.dumps(current))
    del saved["uda"], saved["data"]["val_data"]
    check_resume_config(saved, current, source="old.pt")
    with_uda = config_to_dict(validate_config(_raw(tiny_raw_config, uda={"target": {"root": "elsewhere"}})))
    with pytest.raises(ConfigError, match=r"uda\.target\.root: '<absent>' → 'elsewhere'"):
        check_resume_config(saved, with_uda, source="old.pt")
