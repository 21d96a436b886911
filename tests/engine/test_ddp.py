"""DDP through torchrun on the CPU (Gloo): two ranks train in lockstep and evaluate shards whose
synchronised meters equal a single-process evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from mtdense.cli.main import main


def test_torchrun_two_ranks_train_and_sync_meters(tiny_raw_config, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config(**{"train.max_steps": 2, "data.num_workers": 0})))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "mtdense.cli.main",
            "train",
            str(cfg),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    ddp = json.loads((out / "results.json").read_text())
    # single-process evaluation of the same checkpoint on the whole val split
    assert main(["eval", str(out), "--out", str(tmp_path / "single.json")]) == 0
    single = json.loads((tmp_path / "single.json").read_text())
    for task, metrics in single.items():
        for name, value in metrics.items():
            assert ddp[task][name] == pytest.approx(value, rel=1e-4, abs=1e-4), (task, name)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2]  # rank 0 alone writes


# Run by each torchrun rank: rank 1 alone gets a NaN depth loss at step 2; every rank must stop there.
_NAN_ON_RANK_1 = """
import os, sys, yaml
from mtdense.config import validate_config
from mtdense.engine.trainer import Trainer
from mtdense.errors import TrainingError

trainer = Trainer(validate_config(yaml.safe_load(open(sys.argv[1]))), sys.argv[2], progress=False)
depth, calls = trainer.tasks["depth"], [0]
real = depth.loss

def loss(pred, target):
    calls[0] += 1
    value = real(pred, target)
    return value * float("nan") if os.environ["RANK"] == "1" and calls[0] == 2 else value

depth.loss = loss
try:
    trainer.train()
except TrainingError as exc:
    print(f"rank {os.environ['RANK']}: {exc}", flush=True)
    sys.exit(3)
"""


def test_nan_on_one_rank_stops_every_rank_at_that_step(tiny_raw_config, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config(**{"train.max_steps": 3, "data.num_workers": 0})))
    script = tmp_path / "nan_rank1.py"
    script.write_text(_NAN_ON_RANK_1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    try:  # without the agreement, rank 0 waits in the next all-reduce until the timeout
        proc = subprocess.run(
            [*cmd, str(cfg), str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a NaN on rank 1 left the other rank waiting")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rank 1: non-finite loss at step 2 (terms: depth)" in out, out[-3000:]
    assert "rank 0: non-finite loss at step 2 (terms: on another rank)" in out, out[-3000:]
