"""The shipped configs of the PASCAL-Context, Cityscapes, SYNTHIA and VKITTI2 protocols load, name registered
datasets and tasks those datasets have, and carry the papers' settings."""

from __future__ import annotations

from importlib.resources import files

import pytest

from mtdense.config import load_config
from mtdense.data.registry import DATASETS

CONFIGS = sorted(
    p
    for folder in ("pascal", "cityscapes", "synthia", "vkitti2")
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
