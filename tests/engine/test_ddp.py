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
