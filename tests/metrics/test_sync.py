"""``sync()``: two Gloo ranks evaluating halves of a split equal one process evaluating all of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mtdense.metrics import DepthMeter, EdgeMeter, NormalsMeter, SaliencyMeter, SegmentationMeter


def _make_meters():
    return {
        "semseg": SegmentationMeter(4),
        "depth_pixel": DepthMeter("pixel"),
        "depth_image": DepthMeter("image"),
        "normals": NormalsMeter(),
        "edge": EdgeMeter(max_dist=0.05, thresholds=9),
        "saliency": SaliencyMeter(),
    }


def _data(n=4, size=16):
    g = torch.Generator().manual_seed(0)
    edge_gt = (torch.rand(n, 1, size, size, generator=g) > 0.85).float()
    return {
        "semseg": (
            torch.randn(n, 4, size, size, generator=g),
            torch.randint(0, 4, (n, size, size), generator=g),
        ),
        "depth_pixel": (
            torch.rand(n, 1, size, size, generator=g) + 0.5,
            torch.rand(n, 1, size, size, generator=g),
        ),
        "depth_image": (
            torch.rand(n, 1, size, size, generator=g) + 0.5,
            torch.rand(n, 1, size, size, generator=g),
        ),
        "normals": (torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)),
        "edge": (torch.rand(n, 1, size, size, generator=g), edge_gt),
        "saliency": (
            torch.rand(n, 1, size, size, generator=g),
            (torch.rand(n, 1, size, size, generator=g) > 0.5),
        ),
    }


# Run as a separate script: with pytest's importlib mode the spawned ranks cannot import this test module.
_SCRIPT = """
import json, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mtdense.metrics import DepthMeter, EdgeMeter, NormalsMeter, SaliencyMeter, SegmentationMeter

def worker(rank, world, data_file, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
    data, specs = torch.load(data_file)
    results = {}
    for name, (cls, args) in specs.items():
        meter = getattr(sys.modules["mtdense.metrics"], cls)(*args)
        pred, target = data[name]
        meter.update(pred[rank::world], target[rank::world])
        meter.sync()
        meter.sync()  # idempotent: the global sum is recomputed from the local statistics
        results[name] = meter.compute()
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()

if __name__ == "__main__":
    # forked ranks inherit the imported torch (a spawned one would import it again: seconds each)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    ranks = [ctx.Process(target=worker, args=(rank, 2, *sys.argv[1:4])) for rank in range(2)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join()
    sys.exit(max(p.exitcode != 0 for p in ranks))
"""

_SPECS = {
    "semseg": ("SegmentationMeter", (4,)),
    "depth_pixel": ("DepthMeter", ("pixel",)),
    "depth_image": ("DepthMeter", ("image",)),
    "normals": ("NormalsMeter", ()),
    "edge": ("EdgeMeter", (0.05, 9)),
    "saliency": ("SaliencyMeter", ()),
}


@pytest.mark.slow
def test_ddp_shards_equal_single_process(tmp_path):
    data = _data()
    torch.save((data, _SPECS), tmp_path / "data.pt")
    script = tmp_path / "ranks.py"
    script.write_text(_SCRIPT)
    out = tmp_path / "rank0.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(tmp_path / "data.pt"), str(tmp_path / "init"), str(out)]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(out.read_text())
    meters = _make_meters()
    assert set(meters) == set(_SPECS)
    for name, meter in meters.items():
        meter.update(*data[name])
        for key, value in meter.compute().items():
            assert np.isclose(ddp[name][key], value, rtol=1e-12, atol=1e-12), (
                name,
                key,
                ddp[name][key],
                value,
            )


def test_sync_without_process_group_is_a_copy():
    meter = SegmentationMeter(2)
    meter.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    meter.sync()
    before = meter.compute()
    meter.update(torch.tensor([[[0, 1]]]), torch.tensor([[[1, 1]]]))  # update drops the synced copy
    assert meter.state["confusion"].sum() == 4 and meter.compute() != before
