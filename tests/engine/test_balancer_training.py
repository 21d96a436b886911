"""Every registered loss balancer trains through the Trainer and resumes exactly (issue 12, item 3).

The balancer's state (DWA's loss history, RLW's and PCGrad's generators, GradNorm's weights and initial
losses) travels in the checkpoint: a run stopped after 3 steps and resumed for 3 more ends bitwise equal
to an uninterrupted 6-step run — model, optimiser and balancer state alike.
"""

from __future__ import annotations

import json

import pytest
import torch

from mtdense.cli.main import main
from mtdense.config import validate_config
from mtdense.engine.trainer import Trainer
from mtdense.losses import BALANCERS

# options that make each balancer's state matter within 6 steps (DWA: a period of 2 steps)
ARGS = {"dwa": {"window": 2}, "gradnorm": {"alpha": 1.5}, "rlw": {"seed": 3}, "pcgrad": {"seed": 3}}


def _raw(tiny_raw_config, name: str) -> dict:
    loss = {"balancer": name, "balancer_args": ARGS.get(name, {})}
    if name == "uncertainty":
        loss["weights"] = {}
    return tiny_raw_config(
        **{
            "data.tasks": ["semseg", "depth"],
            "data.crop_size": [32, 32],
            "train.max_steps": 6,
            "train.threads": 1,
            "eval.batch_size": 4,
            "loss": loss,
        }
    )


def _train(raw: dict, out, **kw) -> Trainer:
    trainer = Trainer(validate_config(raw), out, progress=False, resume=kw.pop("resume", False))
    trainer.train(**kw)
    return trainer


@pytest.mark.parametrize("name", list(BALANCERS))
def test_every_balancer_trains_and_resumes_exactly(tiny_raw_config, tmp_path, name):
    raw = _raw(tiny_raw_config, name)
    full = _train(raw, tmp_path / "full")
    _train(raw, tmp_path / "part", stop_after=3)
    resumed = _train(raw, tmp_path / "part", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), name
    sa, sb = full.balancer.state_dict(), resumed.balancer.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], torch.Tensor):
            assert torch.equal(sa[key], sb[key]), key
        else:
            assert repr(sa[key]) == repr(sb[key]), key
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    if name in ("dwa", "rlw", "gradnorm"):  # the weights move away from 1
        assert any(abs(r["weight/semseg"] - 1.0) > 1e-6 for r in train), name
    if name == "mgda":
        assert all(r["mgda/alpha/semseg"] + r["mgda/alpha/depth"] == pytest.approx(1) for r in train)


def test_a_bad_balancer_option_on_the_command_line_exits_2(tiny_raw_config, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config()))
    code = main(["train", str(cfg), "--out", str(tmp_path / "run"), "loss.balancer=cagrad", "loss.balancer_args.cc=1"])
    err = capsys.readouterr().err
    assert code == 2 and "loss.balancer_args for 'cagrad': cc" in err and "valid keys: c" in err
    assert not (tmp_path / "run").exists()


def test_a_model_without_a_shared_encoder_is_refused_before_anything_is_written(tiny_raw_config, tmp_path):
    """Cross-stitch keeps one backbone per task: no shared parameters for a gradient-level balancer."""
    from mtdense.errors import MtdenseError

    overrides = {"model.name": "cross_stitch", "data.tasks": ["semseg", "depth"], "loss.balancer": "pcgrad"}
    raw = tiny_raw_config(**overrides)
    with pytest.raises(MtdenseError, match="CrossStitchNet has no single shared encoder"):
        Trainer(validate_config(raw), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
