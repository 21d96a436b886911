"""DDP through torchrun on the CPU (Gloo): a SIGTERM to one rank stops both after the same step, a torchrun
``--resume`` finishes the run, and its evaluation of shards equals a single-process evaluation; a NaN on one
rank stops every rank at that step.

Each torchrun launch costs three fresh interpreters importing torch, so the preemption of a DDP run and its
synchronised evaluation are checked on the same two launches (the interrupted one and its resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mtdense.cli.main import main
from mtdense.engine.checkpoint import load_checkpoint

LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _train_steps(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line being written
            continue
        if record.get("split") == "train":
            steps.append(record["step"])
    return steps


def _rank_pid(launcher: int, rank: int, timeout: float = 180) -> int:
    """The pid of the torchrun worker of ``rank`` (a child of the launcher with ``RANK=<rank>``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                environ = (stat.parent / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == launcher and f"RANK={rank}".encode() in environ:
                return int(stat.parent.name)
        time.sleep(0.1)
    pytest.fail(f"no worker of rank {rank} under torchrun {launcher}")


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while max(_train_steps(out), default=0) < step:
        if proc.poll() is not None:
            pytest.fail(f"torchrun exited early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no step {step} in {out / 'metrics.jsonl'} after {timeout} s")
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_torchrun_signal_to_one_rank_resume_and_synced_meters(tiny_raw_config, tmp_path):
    """SIGTERM reaches only rank 1: both ranks stop after the same step (none waits forever in a collective),
    rank 0's checkpoint holds both ranks' RNG states, and a torchrun --resume finishes the run with every step
    logged exactly once (rank 0 alone writes). Its final evaluation, each rank scoring a shard of the val split
    and the meters synchronised, with BN statistics re-estimated (``eval.precise_bn``), equals a single-process
    ``mtdense eval`` of the same checkpoint."""
    max_steps = 4
    cfg = tmp_path / "cfg.yaml"
    # eval.precise_bn: every rank re-estimates BN statistics on the same batches before the final evaluation, then
    # rank 0's are broadcast and checkpointed, so the single-process evaluation below must see the same ones
    raw = tiny_raw_config(**{"train.max_steps": max_steps, "data.num_workers": 0, "eval.precise_bn": 2})
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = ["-m", "mtdense.cli.main", "train", str(cfg), "--out", str(out)]
    proc = subprocess.Popen([*LAUNCH, *train], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    rank1 = _rank_pid(proc.pid, 1)
    _wait_for_step(proc, out, 1)
    os.kill(rank1, signal.SIGTERM)
    _, err = proc.communicate(timeout=180)

    assert proc.returncode != 0
    assert err.count("training stopped by SIGTERM after step") == 2, err[-3000:]  # both ranks
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert f"training stopped by SIGTERM after step {state['step']}: wrote checkpoint" in err  # rank 0
    assert 1 <= state["step"] < max_steps and state["step"] == max(_train_steps(out))
    assert state["rng"]["world_size"] == 2 and len(state["rng"]["ranks"]) == 2
    assert not (out / "results.json").exists()

    done = subprocess.run([*LAUNCH, *train, "--resume"], capture_output=True, text=True, env=env, timeout=240)
    if done.returncode != 0:
        pytest.fail(f"torchrun --resume failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == max_steps
    assert _train_steps(out) == list(range(1, max_steps + 1))

    ddp = json.loads((out / "results.json").read_text())
    # single-process evaluation of the same checkpoint on the whole val split
    assert main(["eval", str(out), "--out", str(tmp_path / "single.json")]) == 0
    single = json.loads((tmp_path / "single.json").read_text())
    assert set(single) <= set(ddp)
    for task, metrics in single.items():
        for name, value in metrics.items():
            # the normals median is read from a histogram of 0.01-degree bins (mtdense.metrics.normals): rounding
            # differences between sharded and whole batches may move a middle error across one bin edge
            tol = 0.0101 if (task, name) == ("normals", "median") else 1e-4
            assert ddp[task][name] == pytest.approx(value, rel=1e-4, abs=tol), (task, name)


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
