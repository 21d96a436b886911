"""``open_dataset``: one way to open every dataset; ``data.dataset`` takes the same names; missing-target fills."""

from __future__ import annotations

import pytest
import torch

from mtdense.config import validate_config
from mtdense.config.schema import Config
from mtdense.data import DATASETS, NYUDMT, list_datasets, open_dataset
from mtdense.data.registry import MISSING_TARGETS, detect_dataset, missing_target
from mtdense.errors import ConfigError, DataError
from mtdense.tasks import TASKS


def test_my_datasets_are_registered():
    assert {"nyud_mt", "nyud_raw", "nyud_mtan13", "synthetic"} <= set(list_datasets())
    assert list_datasets() == sorted(DATASETS)


def test_open_nyud_layouts(synth_root):
    ds = open_dataset("synthetic", synth_root, split="val", tasks=["depth"])
    assert isinstance(ds, NYUDMT) and len(ds) == 4 and set(ds[0]) == {"image", "depth", "meta"}
    assert ds.meta["num_classes"] == 13
    assert isinstance(open_dataset("nyud_mt", synth_root, split="train", tasks=["semseg"]), NYUDMT)
    assert detect_dataset(synth_root) == "synthetic"


def test_unknown_dataset_and_undetectable_folder(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'nyu'; valid datasets: .*nyud_mt"):
        open_dataset("nyu", tmp_path, split="train", tasks=())
    with pytest.raises(DataError, match="no known dataset layout recognised; pass --dataset"):
        detect_dataset(tmp_path)


def test_config_dataset_is_checked_against_the_registry(tiny_raw_config):
    assert validate_config(tiny_raw_config(**{"data.dataset": "nyud_raw"})).data.dataset == "nyud_raw"
    with pytest.raises(ConfigError, match="data.dataset.*unknown dataset 'nyud'"):
        validate_config(tiny_raw_config(**{"data.dataset": "nyud"}))


def test_missing_target_fill_is_each_tasks_ignore_value():
    """The fill of a missing target is what the task itself treats as unlabelled (Task.labelled_samples)."""
    cfg = Config()
    for name, cls in TASKS.items():
        task = cls.from_config(cfg, {"num_classes": 13})
        target = missing_target(name, 4, 5)
        assert MISSING_TARGETS[name][0] == task.ignore_value
        assert target.shape == task.random_target(1, (4, 5), torch.Generator())[0].shape
        keep = task.labelled_samples(torch.stack([target, task.random_target(1, (4, 5), torch.Generator())[0]]))
        assert keep is not None and keep.tolist() == [False, True]
    with pytest.raises(ConfigError, match="no ignore fill known for task 'flow'"):
        missing_target("flow", 2, 2)


def test_nyud_depth_protocols_are_selected_by_config():
    """The Eigen protocol (TRL/PSD line: per image, Eigen crop, caps 1e-3..10 m) and the pixel-wise one
    (MTI-Net line) come from the shipped configs into the depth meter."""
    from mtdense.config import load_config
    from mtdense.config.load import resolve_config
    from mtdense.tasks import DepthTask

    eigen = DepthTask.from_config(load_config(resolve_config("nyud/trl_resnet18_raw")), {}).make_meter()
    assert (eigen.crop, eigen.min_depth, eigen.max_depth, eigen.reduction) == ("eigen", 1e-3, 10.0, "image")
    pixel = DepthTask.from_config(load_config(resolve_config("nyud/mtinet_hrnet18s")), {}).make_meter()
    assert (pixel.crop, pixel.min_depth, pixel.max_depth, pixel.reduction) == (None, None, None, "pixel")
    gt = torch.full((1, 1, 480, 640), 2.0)
    gt[..., 0, 0] = 12.0  # beyond the 10 m cap (and outside the crop)
    pred = torch.full_like(gt, 2.0)
    pred[..., :44, :] = 5.0  # wrong only above the Eigen crop (rows 44:471)
    eigen.update(pred, gt)
    pixel.update(pred, gt)
    assert eigen.compute()["rmse"] == 0.0 and pixel.compute()["rmse"] > 0.5
