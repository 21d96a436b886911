"""Suite-wide test settings: one torch thread per test process (the suite runs with pytest-xdist)."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory):
    """A tiny synthetic dataset (16 train / 4 val images at 32×48) in the NYUD-MT layout."""
    from mtdense.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth") / "indoor"
    write_synthetic_dataset(
        root, train=16, val=4, size=(32, 48), seed=3, family="indoor", progress=False, workers=1
    )
    return root


@pytest.fixture(scope="session")
def tiny_raw_config(synth_root):
    """A raw config dict of a tiny multi-task run on ``synth_root`` (fast: resnet18 at 32×48, 2 images a batch)."""

    def make(**overrides):
        raw = {
            "seed": 0,
            "data": {
                "dataset": "synthetic",
                "root": str(synth_root),
                "tasks": ["semseg", "depth", "normals", "edge"],
                "cache": True,
            },
            "model": {"name": "mtl", "backbone": {"name": "resnet18"}},
            "train": {"max_steps": 4, "batch_size": 2, "lr": 1e-3, "log_every": 1, "channels_last": False},
            "eval": {"batch_size": 4, "edge_exact": False},
        }
        for key, value in overrides.items():
            node = raw
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        return raw

    return make
