"""``single_task_config``: the one derivation of a single-task baseline config, used by ``mtdense demo`` and
``mtdense complexity`` (the stl sum of the complexity report is checked by hand in
``tests/engine/test_complexity.py``)."""

from __future__ import annotations

import pytest

from mtdense.config import config_to_dict, list_configs, load_config, single_task_config
from mtdense.errors import ConfigError

MTI = [
    "model.name=mtinet",
    "model.fpm=false",
    "model.backbone={name: resnet18, output_stride: 16}",
    "data.tasks=[semseg,depth]",
    "data.aux_tasks=[edge,normals]",
    "loss.weights={semseg: 2.0, depth: 3.0, normals: 10.0, edge: 50.0}",
    "train.lr=0.003",
    "eval.baseline=stl.json",
    "seed=7",
]


def test_derived_config_by_rule():
    cfg = load_config(None, MTI)
    stl = single_task_config(cfg, "depth")
    assert stl.model.name == "stl"
    assert stl.model.backbone == cfg.model.backbone  # same encoder
    assert not hasattr(stl.model, "fpm")  # MTI-Net's own option is dropped
    assert stl.data.tasks == ["depth"] and stl.data.aux_tasks == []
    assert stl.loss.weights == {"depth": 3.0} and stl.loss.tag_weights == {}
    assert stl.eval.baseline is None
    # everything else is the multi-task recipe, unchanged
    assert (stl.seed, stl.train.lr, stl.data.root) == (7, 0.003, cfg.data.root)
    assert config_to_dict(stl)["train"] == config_to_dict(cfg)["train"]


def test_options_stl_shares_are_carried_over():
    mtl = load_config(None, ["model.name=mtl", "model.head=fpn", "model.fpn_channels=32", "data.tasks=[semseg,edge]"])
    stl = single_task_config(mtl, "edge")
    assert (stl.model.name, stl.model.head, stl.model.fpn_channels) == ("stl", "fpn", 32)


def test_raw_dict_and_config_give_the_same():
    from mtdense.config.load import apply_overrides

    raw = apply_overrides({}, MTI)
    assert single_task_config(raw, "semseg", source="x.yaml") == single_task_config(load_config(None, MTI), "semseg")


def test_task_must_be_a_main_task():
    with pytest.raises(ConfigError, match=r"x\.yaml: no single-task config for 'edge': it is not one of data\.tasks"):
        single_task_config(load_config(None, MTI), "edge", source="x.yaml")


@pytest.mark.parametrize("name", [n for n, _ in list_configs()])
def test_every_packaged_multitask_config_has_valid_single_task_configs(name):
    """Including PAD-Net's two-phase recipe (no phases, no tag weights in a single-task network)."""
    cfg = load_config(name)
    for task in cfg.data.tasks:
        stl = single_task_config(cfg, task, source=name)
        assert stl.model.name == "stl" and stl.data.tasks == [task]
        if "phase1_steps" in type(stl.train).model_fields:
            assert stl.train.phase1_steps == 0


def test_demo_trains_the_derived_single_task_configs(tmp_path):
    """``mtdense demo``'s single-task runs are exactly ``single_task_config`` of the demo config (before, the
    demo built its own, dropping every model option but the backbone); the demo trains what ``plan_demo`` returns
    (tests/engine/test_demo.py runs it)."""
    from mtdense.engine.demo import plan_demo

    overrides = ["model.name=mtl", "model.head=fpn", "data.tasks=[semseg,depth]"]
    mt, stl = plan_demo(out=tmp_path, overrides=overrides, jobs=1)
    cfg = load_config("demo", overrides)
    assert mt.config == config_to_dict(cfg)
    for task in ("semseg", "depth"):
        assert stl[task].config == config_to_dict(single_task_config(cfg, task))
        assert stl[task].out == tmp_path / f"stl_{task}"
    assert stl["depth"].config["model"]["head"] == "fpn"
