"""The ``synthetic-balancers`` suite (issue 12, item 4): every registered balancer × {MTL, MTI-Net}, each run
trained as ``mtdense bench`` plans it (the suite's own configs and overrides), shrunk to 2 steps at 32×32.

``tests/engine/test_balancer_training.py`` checks the balancers' exact resume on a tiny MTL (the same encoder);
this file checks that the suite's entries really select the balancer and parameters they name (all 16 entries,
no training) and that each balancer trains the suite's architectures on HRNet-W18-small-v2.

Which runs train in the default suite: all eight balancers on MTI-Net, the architecture with every code path
the balancers meet (deep-supervision outputs grouped per task, the multi-scale decoder and FPM on top of the
shared HRNet encoder whose parameters and output the gradient-level balancers and GradNorm act on). The MTL
entries put the same balancers on the same shared encoder under a plain head and run under ``make test-heavy``;
the default suite trains MTL under the balancers with state or their own backward in that resume test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtdense.config import validate_config
from mtdense.engine.bench import load_suite, plan_suite
from mtdense.engine.bench.plan import RunSpec
from mtdense.engine.trainer import Trainer
from mtdense.losses import BALANCERS

SUITE = "synthetic-balancers"
ARCHITECTURES = ("mtl", "mtinet")


@pytest.fixture(scope="module")
def tiny_plan(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunSpec]:
    """The suite's methods (seed 0) with the command-line overrides a user would give for a quick check."""
    suite, path = load_suite(SUITE)
    shrink = [
        f"data.root={synth_root}",
        "data.synth=null",  # the fixture dataset exists: use it as it is
        "data.crop_size=[32, 32]",
        "data.cache=false",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.threads=1",
        "train.log_every=1",
        "eval.batch_size=4",
        "eval.edge_exact=false",
    ]
    plan = plan_suite(suite, path, out=tmp_path_factory.mktemp("plan"), seeds=[0], overrides=shrink)
    return {r.name: r for r in plan.methods}


def test_the_suite_covers_every_balancer_on_both_architectures(tiny_plan: dict[str, RunSpec]) -> None:
    got = sorted((r.config["model"]["name"], r.config["loss"]["balancer"]) for r in tiny_plan.values())
    assert got == sorted((a, b) for a in ARCHITECTURES for b in BALANCERS)
    args = {r.name: r.config["loss"]["balancer_args"] for r in tiny_plan.values()}
    for arch in ARCHITECTURES:  # the papers' parameters (issue 12: DWA T = 2, CAGrad c = 0.4)
        assert args[f"{arch}_dwa"]["temperature"] == 2.0 and args[f"{arch}_cagrad"]["c"] == 0.4
        assert args[f"{arch}_gradnorm"]["alpha"] == 1.5
        assert tiny_plan[f"{arch}_uncertainty"].config["loss"]["weights"] == {}
    assert all(r.config["model"]["backbone"]["name"] == "hrnet_w18_small_v2" for r in tiny_plan.values())


@pytest.mark.parametrize(
    ("balancer", "arch"),
    [pytest.param(b, a, marks=pytest.mark.heavy) if a == "mtl" else (b, a) for b in BALANCERS for a in ARCHITECTURES],
)
def test_every_suite_run_trains(tiny_plan: dict[str, RunSpec], tmp_path: Path, arch: str, balancer: str) -> None:
    spec = tiny_plan[f"{arch}_{balancer}"]
    # the plan points eval.baseline at the references' results, which this test does not train
    raw = {**spec.config, "eval": {**spec.config["eval"], "baseline": None}}
    trainer = Trainer(validate_config(raw), tmp_path / "run", progress=False)
    assert isinstance(trainer.balancer, BALANCERS[balancer])
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    encoder = [k for k in before if k.startswith("backbone.")]
    after = dict(trainer.model.named_parameters())
    assert encoder and any(not torch.equal(before[k], after[k]) for k in encoder), "the shared encoder did not move"
    for k, v in after.items():
        assert torch.isfinite(v).all(), k
