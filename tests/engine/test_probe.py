"""The gradient probe (mtdense.engine.probe): hand-derived statistics, and a probed run through the trainer that
logs them and ends with exactly the weights of the same run without the probe."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mtdense.config import validate_config
from mtdense.engine.probe import gradient_stats
from mtdense.engine.trainer import Trainer
from mtdense.errors import ConfigError


def test_gradient_stats_by_hand():
    """θ ∈ R², L_a = u·θ (+ a deep-supervision term 0.5·u·θ), L_b = v·θ, total = 2 L_a + 2 L_aux + 3 L_b:
    c_a = 2, g_a = 2u + 2·0.5u = 3u, g_b = 3v, cos = u·v / (|u||v|), raw |∇L_a| = |u|."""
    theta = torch.nn.Parameter(torch.tensor([0.3, -0.7]))
    u, v = torch.tensor([3.0, 4.0]), torch.tensor([-1.0, 2.0])
    losses = {"a": u @ theta, "aux/a": 0.5 * (u @ theta), "b": v @ theta}
    total = 2 * losses["a"] + 2 * losses["aux/a"] + 3 * losses["b"]
    log = gradient_stats(losses, total, [theta], ["a", "b"])
    assert log["probe/weight/a"] == pytest.approx(2.0) and log["probe/weight/b"] == pytest.approx(3.0)
    assert log["probe/grad/a"] == pytest.approx(3 * 5.0) and log["probe/grad/b"] == pytest.approx(3 * math.sqrt(5))
    assert log["probe/grad_raw/a"] == pytest.approx(5.0) and log["probe/grad_raw/b"] == pytest.approx(math.sqrt(5))
    assert log["probe/cos/a|b"] == pytest.approx(float(u @ v) / (5.0 * math.sqrt(5)))
    assert theta.grad is None  # autograd.grad: the parameters' .grad are not written


def test_conflicting_gradients_have_negative_cosine():
    theta = torch.nn.Parameter(torch.zeros(2))
    losses = {"a": theta @ torch.tensor([1.0, 0.0]), "b": theta @ torch.tensor([-1.0, 0.1])}
    log = gradient_stats(losses, losses["a"] + losses["b"], [theta], ["a", "b"])
    assert log["probe/cos/a|b"] < -0.9


def _run(raw, out):
    trainer = Trainer(validate_config(raw), out, progress=False)
    trainer.train()
    return trainer


def test_probed_run_logs_the_probe_and_trains_exactly_as_without(tiny_raw_config, tmp_path):
    """Through the trainer: every 2nd step's record holds the probe's entries (weights = loss.weights of the fixed
    balancer), and the run ends with bitwise the weights and BatchNorm statistics of the unprobed run (dropout on:
    the probe's forward must not move torch's generator)."""
    raw = tiny_raw_config(**{"train.max_steps": 4, "train.log_every": 2})
    plain = _run(raw, tmp_path / "plain")
    probed = _run({**raw, "probe": {"every": 2}}, tmp_path / "probed")
    a, b = plain.model.state_dict(), probed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (tmp_path / "probed" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    tasks = ["semseg", "depth", "normals", "edge"]
    for r in train:
        assert {r[f"probe/weight/{t}"] for t in tasks} == {1.0, 10.0, 50.0}
        assert r["probe/weight/edge"] == 50.0 and r["probe/weight/normals"] == 10.0
        assert all(r[f"probe/grad/{t}"] > 0 for t in tasks)
        assert r["probe/grad/edge"] == pytest.approx(50.0 * r["probe/grad_raw/edge"], rel=1e-3)
        pairs = [k for k in r if k.startswith("probe/cos/")]
        assert len(pairs) == 6 and all(-1.0 <= r[k] <= 1.0 for k in pairs)


def test_probe_every_must_be_logged(tiny_raw_config, tmp_path):
    raw = {**tiny_raw_config(**{"train.log_every": 2}), "probe": {"every": 3}}
    with pytest.raises(ConfigError, match=r"probe\.every.*multiple of train\.log_every \(2\).*got 3"):
        Trainer(validate_config(raw), tmp_path / "run", progress=False)


def test_runs_saved_before_the_probe_section_existed_stay_reusable():
    """A run folder's config.yaml written before ``probe`` (or any optional section) was in the schema lacks the
    key; the bench's reuse check and ``--resume`` treat that as ``probe: null``, and a probe that is set as a change."""
    from mtdense.engine.checkpoint import material_changes

    saved = {"seed": 0, "train": {"lr": 0.1}}
    assert material_changes(saved, {**saved, "probe": None}) == {}
    assert set(material_changes(saved, {**saved, "probe": {"every": 20}})) == {"probe.every"}
