"""Mixed datasets: the union of a labelled dataset and depth-only raw NYUD frames, a fixed share of each per batch,
trained through the Trainer with exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtdense.config import validate_config
from mtdense.data.mixed import MixedBatchSampler, MixedDataset, batch_counts
from mtdense.engine.trainer import Trainer, compute_losses
from mtdense.errors import ConfigError, MtdenseError

H, W = 32, 48


def write_nyud_raw(root: Path, frames: int) -> Path:
    """BTS "sync" frames (16-bit millimetre depth PNGs and the train list), constant depth 1 + 0.25·i m."""
    lines = []
    for i in range(frames):
        folder = root / "sync" / "office_0001"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 20 * i, np.uint8)).save(folder / f"rgb_{i:05d}.jpg")
        Image.fromarray(np.full((H, W), 1000 + 250 * i, np.uint16)).save(folder / f"sync_depth_{i:05d}.png")
        lines.append(f"/office_0001/rgb_{i:05d}.jpg /office_0001/sync_depth_{i:05d}.png 518.8579")
    (root / "nyudepthv2_train_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    return write_nyud_raw(tmp_path_factory.mktemp("raw"), frames=6)


def test_batch_counts_largest_remainder():
    assert batch_counts(8, [0.75, 0.25]) == [6, 2]
    assert batch_counts(4, [0.5, 0.3, 0.2]) == [2, 1, 1]  # exact 2, 1.2, 0.8: the 0.8 gets the spare sample
    with pytest.raises(ConfigError, match="cannot hold every dataset"):
        batch_counts(2, [0.9, 0.05, 0.05])


class _Range(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.zeros(3, 2, 2), "meta": {"id": str(i)}}


def test_sampler_shares_order_and_resume():
    ds = MixedDataset([_Range(10), _Range(4)], names=["a", "b"], ratios=[0.75, 0.25], tasks=())
    full = iter(MixedBatchSampler(ds, batch_size=4, seed=3))
    batches = [next(full) for _ in range(6)]
    assert all(sum(i < 10 for _, i in b) == 3 and sum(i >= 10 for _, i in b) == 1 for b in batches)
    # part b (4 samples, 1 per step): steps 0..3 are one permutation of it, epoch 0; steps 4, 5 epoch 1
    b_steps = [[(e, i) for e, i in b if i >= 10][0] for b in batches]
    assert sorted(i for _, i in b_steps[:4]) == [10, 11, 12, 13] and [e for e, _ in b_steps] == [0, 0, 0, 0, 1, 1]
    resumed = iter(MixedBatchSampler(ds, batch_size=4, seed=3, start_step=4))
    assert [next(resumed) for _ in range(2)] == batches[4:]
    other_seed = iter(MixedBatchSampler(ds, batch_size=4, seed=4))
    assert [next(other_seed) for _ in range(6)] != batches
    r0 = next(iter(MixedBatchSampler(ds, batch_size=2, seed=3, rank=0, world_size=2)))
    r1 = next(iter(MixedBatchSampler(ds, batch_size=2, seed=3, rank=1, world_size=2)))
    assert sorted(r0 + r1) == sorted(batches[0])


def _mixed_config(tiny_raw_config, raw_root, **extra):
    return tiny_raw_config(
        **{
            "data.tasks": ["semseg", "depth"],
            "data.extra": [{"dataset": "nyud_raw", "root": str(raw_root), "ratio": 0.5}],
            "data.crop_size": [32, 48],
            "train.max_steps": 3,
            **extra,
        }
    )


def test_trainer_mixes_batches_and_skips_missing_labels(tiny_raw_config, raw_root, tmp_path):
    trainer = Trainer(validate_config(_mixed_config(tiny_raw_config, raw_root)), tmp_path / "run", progress=False)
    assert isinstance(trainer.train_set.base, MixedDataset)
    assert trainer.meta["num_classes"] == 13  # the primary (synthetic) dataset's classes
    from mtdense.engine import data as D

    batch = next(iter(D.make_train_loader(trainer.cfg, trainer.train_set)))
    names = batch["meta"]["dataset"]
    assert sorted(names) == ["extra[0]:nyud_raw", "synthetic"]
    raw = names.index("extra[0]:nyud_raw")
    assert torch.all(batch["semseg"][raw] == 255) and not torch.all(batch["semseg"][1 - raw] == 255)
    assert torch.all(batch["depth"][raw] > 0)  # raw frames do carry depth
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model(batch["image"])
        losses = compute_losses(out, batch, trainer.tasks)
        alone = trainer.tasks["semseg"].loss(out["semseg"][1 - raw : 2 - raw], batch["semseg"][1 - raw : 2 - raw])
    assert torch.allclose(losses["semseg"], alone)  # the raw frame does not count for segmentation
    result = trainer.train()
    assert result.step == 3 and np.isfinite(result.results["depth"]["rmse"])


def test_mixed_training_resumes_exactly(tiny_raw_config, raw_root, tmp_path):
    raw = _mixed_config(tiny_raw_config, raw_root, **{"data.scales": [1.0, 1.25], "data.flip": True})
    full = Trainer(validate_config(raw), tmp_path / "full", progress=False)
    full.train()
    Trainer(validate_config(raw), tmp_path / "part", progress=False).train(stop_after=1)
    resumed = Trainer(validate_config(raw), tmp_path / "part", progress=False, resume=True)
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_errors(tiny_raw_config, raw_root, tmp_path):
    bad = tiny_raw_config(**{"data.extra": [{"dataset": "nyud_raw", "root": str(raw_root), "ratio": 1.0}]})
    with pytest.raises(MtdenseError, match="ratio"):
        validate_config(bad)
    bad = tiny_raw_config(**{"data.extra": [{"dataset": "kitti", "root": str(raw_root), "ratio": 0.5}]})
    with pytest.raises(MtdenseError, match="unknown dataset 'kitti'"):
        validate_config(bad)
    sized = tiny_raw_config(**{"data.extra": [{"dataset": "nyud_raw", "root": str(raw_root), "ratio": 0.5}]})
    sized["data"]["tasks"] = ["depth"]
    big = write_nyud_raw(tmp_path / "big", frames=2) / "sync" / "office_0001"
    Image.fromarray(np.zeros((H + 2, W, 3), np.uint8)).save(big / "rgb_00000.jpg")
    Image.fromarray(np.full((H + 2, W), 900, np.uint16)).save(big / "sync_depth_00000.png")
    sized["data"]["extra"][0]["root"] = str(tmp_path / "big")
    with pytest.raises(MtdenseError, match="different image sizes"):
        Trainer(validate_config(sized), tmp_path / "run", progress=False)
