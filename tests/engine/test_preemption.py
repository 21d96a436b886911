"""Preemption with real processes: ``python -m mtdense.cli.main train`` is stopped by SIGTERM, by a Ctrl-C
sent to its whole process group (SIGINT, with a loader worker in the group), or by ``kill -9`` once
``metrics.jsonl`` shows progress; ``--resume`` must then end bitwise equal to an uninterrupted run, and
``metrics.jsonl`` must hold every step exactly once. (A signal to one rank of a DDP run is tested with the other
torchrun tests in ``test_ddp.py``.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mtdense.cli.main import main
from mtdense.engine.checkpoint import load_checkpoint

MAX_STEPS = 5
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(scope="module")
def reference(tiny_raw_config, tmp_path_factory):
    """The config file and the final checkpoint of an uninterrupted run of it."""
    tmp = tmp_path_factory.mktemp("preempt")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config(**{"train.max_steps": MAX_STEPS, "train.threads": 1})))
    assert main(["train", str(cfg), "--out", str(tmp / "reference")]) == 0
    return cfg, load_checkpoint(tmp / "reference" / "checkpoints" / "last.pt")


def _start(cfg: Path, out: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "mtdense.cli.main", "train", str(cfg), "--out", str(out), *overrides]
    # its own process group, so that a Ctrl-C can be sent to it and its loader workers as a terminal does
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


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


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while max(_train_steps(out), default=0) < step:
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no step {step} in {out / 'metrics.jsonl'} after {timeout} s")
        time.sleep(0.02)


def _assert_equal_to_reference(out: Path, reference_state: dict) -> None:
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["step"] == reference_state["step"] == MAX_STEPS
    ref = reference_state["model"]
    assert all(torch.equal(state["model"][k], ref[k]) for k in ref)
    ref_opt, opt = reference_state["optimizer"]["state"], state["optimizer"]["state"]
    assert all(torch.equal(opt[i]["exp_avg_sq"], ref_opt[i]["exp_avg_sq"]) for i in ref_opt)
    assert _train_steps(out) == list(range(1, MAX_STEPS + 1))  # every step logged exactly once


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_the_current_step_and_resume_is_exact(reference, tmp_path, signum):
    cfg, reference_state = reference
    out = tmp_path / "run"
    # SIGINT goes to the whole group (a terminal's Ctrl-C), which also holds a DataLoader worker
    workers = ["data.num_workers=1"] if signum == signal.SIGINT else []
    proc = _start(cfg, out, *workers)
    _wait_for_step(proc, out, 1)
    (os.killpg if signum == signal.SIGINT else os.kill)(proc.pid, signum)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    stopped = int(err.split(f"training stopped by {signal.Signals(signum).name} after step ")[1].split(":")[0])
    ckpt = out / "checkpoints" / "last.pt"
    assert f"wrote checkpoint {ckpt}" in err and "--resume" in err
    assert 1 <= stopped < MAX_STEPS, "the signal must arrive mid-run for this test to mean anything"
    assert load_checkpoint(ckpt)["step"] == stopped == max(_train_steps(out))
    assert not (out / "results.json").exists()

    assert main(["train", str(cfg), "--out", str(out), "--resume"]) == 0
    _assert_equal_to_reference(out, reference_state)


def test_hard_kill_loses_only_the_steps_since_the_last_checkpoint(reference, tmp_path):
    cfg, reference_state = reference
    out = tmp_path / "run"
    proc = _start(cfg, out, "train.checkpoint_every=2")
    _wait_for_step(proc, out, 3)  # a checkpoint at step 2 exists, step 3 is not in any checkpoint
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    folder = out / "checkpoints"
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".tmp")] == ["last.pt"]
    kept, logged = load_checkpoint(folder / "last.pt")["step"], max(_train_steps(out))
    assert kept % 2 == 0 and 2 <= kept <= logged < MAX_STEPS and logged - kept <= 2

    assert main(["train", str(cfg), "--out", str(out), "--resume"]) == 0
    _assert_equal_to_reference(out, reference_state)
