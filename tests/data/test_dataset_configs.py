"""The shipped configs of the NYUD-v2, SUN RGB-D, PASCAL-Context, Cityscapes, SYNTHIA and VKITTI2 protocols load,
name registered datasets and tasks those datasets have, and carry the papers' settings."""

from __future__ import annotations

from importlib.resources import files

import pytest

from mtdense.config import load_config
from mtdense.data.registry import DATASETS

CONFIGS = sorted(
    p
    for folder in ("nyud", "sunrgbd", "pascal", "cityscapes", "synthia", "vkitti2")
    for p in (files("mtdense") / "configs" / folder).iterdir()
    if p.name.endswith(".yaml") and not p.name.startswith("_")
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_with_tasks_its_dataset_has(path):
    cfg = load_config(path)
    assert cfg.data.dataset in DATASETS
    builder_module = __import__(DATASETS[cfg.data.dataset].__module__, fromlist=["TASKS"])
    assert set(cfg.data.tasks) <= set(builder_module.TASKS)


def test_pascal_recipe_is_the_papers():
    cfg = load_config(files("mtdense") / "configs" / "pascal" / "mtinet_hrnet18s.yaml")
    assert cfg.data.scale_range == [0.75, 1.25] and cfg.data.rotation == 20.0 and cfg.data.flip
    assert cfg.loss.weights == {"semseg": 1.0, "parts": 2.0, "saliency": 5.0, "edge": 50.0, "normals": 10.0}
    assert cfg.eval.edge_max_dist == 0.0075 and cfg.train.optimizer == "adam" and cfg.train.lr == 1e-4


def test_pascal_augmentation_is_built_from_the_config():
    """data.scale_range and data.rotation become the joint transforms the trainer applies."""
    from mtdense.config.load import apply_overrides
    from mtdense.config.schema import Config
    from mtdense.data import transforms as T
    from mtdense.engine.data import build_train_transform
    from mtdense.errors import ConfigError

    cfg = load_config(files("mtdense") / "configs" / "pascal" / "mtl_hrnet18s.yaml")
    steps = build_train_transform(cfg).transforms
    assert [type(s) for s in steps] == [T.RandomScale, T.RandomRotation, T.RandomCrop, T.RandomHorizontalFlip]
    assert steps[0].scale_range == (0.75, 1.25) and steps[1].degrees == 20.0
    raw = apply_overrides(cfg.model_dump(), ["data.scales=[1.0,1.2]"])
    with pytest.raises(ConfigError, match="scale_range and data.scales"):
        build_train_transform(Config.model_validate(raw))


@pytest.mark.parametrize(
    "name", ["nyud/trl_resnet18", "nyud/psd_resnet50", "sunrgbd/trl_resnet18", "synthetic/trl_resnet18"]
)
def test_trl_and_psd_rotate_as_their_papers(name):
    """TRL (Sec. 4) and PSD (Sec. 4.2) rotate the NYUD / SUN RGB-D training images (±5°, Eigen & Fergus's angle);
    the synthetic rows keep the synthetic recipe's augmentation, without rotation."""
    from mtdense.config.load import resolve_config

    cfg = load_config(resolve_config(name))
    assert cfg.data.rotation == (0.0 if name.startswith("synthetic") else 5.0)


def test_synthia_has_the_papers_sdn_set():
    """DenseMTL Table 1 reports Synthia in 'S-D' and 'S-D-N' (normals derived from depth)."""
    cfg = load_config(files("mtdense") / "configs" / "synthia" / "xtam_resnet101_sdn.yaml")
    assert cfg.data.tasks == ["semseg", "depth", "normals"]
    weights = {t: cfg.loss.weights[t] for t in cfg.data.tasks}  # the recipe's edge weight is unused here
    assert weights == {"semseg": 100.0, "depth": 1.0, "normals": 100.0}
