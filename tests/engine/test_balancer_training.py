"""Every registered loss balancer trains through the Trainer and resumes exactly (issue 12, item 3).

The balancer's state (DWA's loss history, RLW's and PCGrad's generators, GradNorm's weights and initial
losses) travels in the checkpoint: a run stopped after 2 steps and resumed for 1 more ends bitwise equal
to an uninterrupted 3-step run (MTL on HRNet-W18-small-v2) — model, optimiser and balancer state alike.
Step 3 is the first step whose update depends on the state restored from the checkpoint (DWA with a 1-step
period weighs step 3 by the ratio of the losses of steps 2 and 1; GradNorm's weights were stepped twice and
its ``L_i(0)`` recorded at step 1; RLW and PCGrad draw from a generator that has advanced twice).
"""

from __future__ import annotations

import json

import pytest
import torch

from mtdense.cli.main import main
from mtdense.config import validate_config
from mtdense.engine.trainer import Trainer
from mtdense.losses import BALANCERS

# options that make each balancer's state matter by step 3 (DWA: a period of 1 step)
ARGS = {"dwa": {"window": 1}, "gradnorm": {"alpha": 1.5}, "rlw": {"seed": 3}, "pcgrad": {"seed": 3}}

# The default suite resumes one balancer of each kind of state and of each backward path:
#   dwa       - loss level, plain-Python extra state (running sums, period means);
#   rlw       - loss level, its own torch.Generator (GeneratorState extra state);
#   gradnorm  - loss level with its own backward, learned weights (optimiser param group) and a buffer;
#   pcgrad    - gradient level (per-task gradients on the shared encoder), generator state;
#   mgda      - gradient level through the hook on the shared encoder's output.
# The other three add no state or path of their own and run under `make test-heavy`: fixed (no state),
# uncertainty (learned parameters in the optimiser, as GradNorm's weights), cagrad (stateless gradient level,
# as MGDA). tests/losses/test_balancers_train.py trains all eight on MTI-Net in the default suite.
HEAVY = {"fixed", "uncertainty", "cagrad"}


def _raw(tiny_raw_config, name: str) -> dict:
    loss = {"balancer": name, "balancer_args": ARGS.get(name, {})}
    if name == "uncertainty":
        loss["weights"] = {}
    return tiny_raw_config(
        **{
            "data.tasks": ["semseg", "depth"],
            "data.crop_size": [32, 32],
            # HRNet-W18-small-v2: its MTL model has 4 M parameters against ResNet-18's 19 M, and each test
            # writes three checkpoints (model + Adam state) and reads one
            "model.backbone": {"name": "hrnet_w18_small_v2"},
            "train.max_steps": 3,
            "train.threads": 1,
            "eval.batch_size": 4,
            "loss": loss,
        }
    )


def _train(raw: dict, out, **kw) -> Trainer:
    trainer = Trainer(validate_config(raw), out, progress=False, resume=kw.pop("resume", False))
    trainer.train(**kw)
    return trainer


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.heavy) if n in HEAVY else n for n in BALANCERS])
def test_every_balancer_trains_and_resumes_exactly(tiny_raw_config, tmp_path, name):
    raw = _raw(tiny_raw_config, name)
    full = _train(raw, tmp_path / "full")
    part = _train(raw, tmp_path / "part", stop_after=2)
    assert part.step == 2 and not (tmp_path / "part" / "results.json").exists()
    resumed = _train(raw, tmp_path / "part", resume=True)
    assert resumed.step == 3
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), name
    oa, ob = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert oa.keys() == ob.keys() and all(torch.equal(oa[i][k], ob[i][k]) for i in oa for k in oa[i]), name
    sa, sb = full.balancer.state_dict(), resumed.balancer.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], torch.Tensor):
            assert torch.equal(sa[key], sb[key]), key
        else:
            assert repr(sa[key]) == repr(sb[key]), key
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    # the resumed run's log: steps 1-2 from the first session, step 3 from the second, the same losses
    joined = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in joined if r["split"] == "train"] == [r["loss"] for r in train], name
    if name in ("dwa", "rlw", "gradnorm"):  # the weights of step 3 (from the restored state) move away from 1
        assert abs(train[2]["weight/semseg"] - 1.0) > 1e-6, name
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
