"""Every config shipped inside the package validates, builds into its model through the engine's
setup, and runs one forward pass; the ablation rows of MTI-Net Tables 2a and 3 each have a config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtdense.config import load_config
from mtdense.config.load import PACKAGED_CONFIGS
from mtdense.data.synthetic.families import get_family
from mtdense.engine.setup import build_balancer, build_model_for, build_optimizer, build_tasks

CONFIGS = sorted(p for p in PACKAGED_CONFIGS.rglob("*.yaml") if not p.name.startswith("_"))

#: NYUD-v2's 40-class protocol (Gupta et al., CVPR 2013), the one of the NYUD-MT release.
NYUD_CLASSES = 40


def _name(path: Path) -> str:
    return path.relative_to(PACKAGED_CONFIGS).with_suffix("").as_posix()


def _fake_meta(cfg) -> dict:
    """What the dataset's meta.json would say about the classes (the model only needs their number)."""
    if cfg.data.dataset == "synthetic":
        return {"num_classes": get_family(cfg.data.synth.family).num_classes}
    if cfg.data.dataset == "nyud_mt":
        return {"num_classes": NYUD_CLASSES}
    if cfg.data.dataset == "nyud_mtan13":  # the 13-class protocol of Couprie et al. (MTAN / LibMTL)
        return {"num_classes": 13}
    # the protocols of the other readers: PASCAL-Context's 21 VOC classes, Cityscapes' 19/16/8/7, SUN RGB-D's 37,
    # SYNTHIA's 16 shared with Cityscapes, VKITTI2's 14 (and the 8 it shares with Cityscapes)
    other = {"pascal_mt": 21, "cityscapes": 19, "cityscapes16": 16, "cityscapes7": 7, "sunrgbd": 37}
    other |= {"synthia": 16, "vkitti2": 14, "vkitti2_8": 8, "cityscapes8": 8}
    if cfg.data.dataset in other:
        return {"num_classes": other[cfg.data.dataset]}
    raise AssertionError(f"{cfg.data.dataset}: add the class count of this dataset to the test")


def test_ablation_rows_have_configs():
    """MTI-Net (ECCV 2020) Table 2a: every row (none / N / N+E auxiliary tasks for PAD-Net and both
    MTI-Net variants); Table 3: the scale subsets; cross-stitch; PAD-Net's own setting. On NYUD and
    on the synthetic benchmark."""
    names = {_name(p) for p in CONFIGS}
    rows = {
        "stl_semseg_hrnet18s": ("stl", [], None, None),
        "stl_depth_hrnet18s": ("stl", [], None, None),
        "mtl_hrnet18s": ("mtl", [], None, None),
        "padnet_hrnet18s": ("padnet", [], None, None),
        "padnet_hrnet18s_aux_n": ("padnet", ["normals"], None, None),
        "padnet_hrnet18s_aux": ("padnet", ["normals", "edge"], None, None),
        "mtinet_hrnet18s_nofpm": ("mtinet", [], False, [4, 8, 16, 32]),
        "mtinet_hrnet18s_nofpm_aux_n": ("mtinet", ["normals"], False, [4, 8, 16, 32]),
        "mtinet_hrnet18s_nofpm_aux": ("mtinet", ["normals", "edge"], False, [4, 8, 16, 32]),
        "mtinet_hrnet18s": ("mtinet", [], True, [4, 8, 16, 32]),
        "mtinet_hrnet18s_aux_n": ("mtinet", ["normals"], True, [4, 8, 16, 32]),
        "mtinet_hrnet18s_aux": ("mtinet", ["normals", "edge"], True, [4, 8, 16, 32]),
        "mtinet_hrnet18s_s4": ("mtinet", [], True, [4]),
        "mtinet_hrnet18s_s4_8": ("mtinet", [], True, [4, 8]),
        "mtinet_hrnet18s_s4_8_16": ("mtinet", [], True, [4, 8, 16]),
        "cross_stitch_hrnet18s": ("cross_stitch", [], None, None),
    }
    for dataset in ("nyud", "synthetic"):
        for row, (model, aux, fpm, scales) in rows.items():
            assert f"{dataset}/{row}" in names
            cfg = load_config(PACKAGED_CONFIGS / dataset / f"{row}.yaml")
            assert cfg.model.name == model and cfg.data.aux_tasks == aux, row
            assert cfg.model.backbone.name == "hrnet_w18_small_v2", row
            if model == "mtinet":
                assert (cfg.model.fpm, cfg.model.scales) == (fpm, scales), row
            if model == "padnet":
                assert cfg.model.setting == "mtinet_hrnet", row
            if model != "stl":
                assert cfg.data.tasks == ["semseg", "depth"], row
    assert "nyud/padnet_paper_resnet50" in names and "nyud/cross_stitch_resnet50" in names


@pytest.mark.parametrize("name", ["nyud/cross_stitch_hrnet18s", "nyud/cross_stitch_resnet50"])
def test_cross_stitch_configs_train_alpha_with_sgd_at_100x(name):
    """As the MTI-Net authors' code: SGD (momentum 0.9), lr 1e-3, and the cross-stitch α in their own
    parameter group at 100 x lr; every other parameter at lr."""
    cfg = load_config(PACKAGED_CONFIGS / f"{name}.yaml")
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.momentum) == ("sgd", 1e-3, 0.9)
    cfg.model.backbone.name = "resnet18" if "resnet" in name else cfg.model.backbone.name  # keep the test light
    tasks = build_tasks(cfg, _fake_meta(cfg))
    model = build_model_for(cfg, tasks)
    optimizer = build_optimizer(cfg, model, build_balancer(cfg, tasks))
    assert isinstance(optimizer, torch.optim.SGD)
    groups = {g["name"]: g for g in optimizer.param_groups}
    alphas = {id(u.alpha) for units in model.cross_stitch for u in units}
    assert {id(p) for p in groups["alpha"]["params"]} == alphas
    assert groups["alpha"]["lr"] == pytest.approx(1e-3 * 100)
    assert groups["new"]["lr"] == groups["backbone"]["lr"] == pytest.approx(1e-3)


#: Backbones whose configs are built as shipped only once per architecture in the default suite (each costs
#: seconds to initialise); the other configs on them are built on :data:`SHALLOW` by default and as shipped
#: under ``-m heavy``.
DEEP = {"resnet50", "resnet101", "hrnet_w18", "hrnet_w48", "fpn_resnet50"}
#: The same-family backbone a deep one is swapped for (the decoders take their widths from ``feature_info``).
SHALLOW = {"resnet50": "resnet18", "resnet101": "resnet18", "fpn_resnet50": "fpn_resnet18"}
SHALLOW |= {"hrnet_w18": "hrnet_w18_small_v2", "hrnet_w48": "hrnet_w18_small_v2"}


def _arch(path: Path) -> tuple[str, str]:
    cfg = load_config(path)
    return cfg.model.name, cfg.model.backbone.name


def _as_shipped_params() -> list:
    """Every config; on a deep backbone, all but the first config of each (architecture, backbone) are heavy."""
    seen: set[tuple[str, str]] = set()
    params = []
    for path in CONFIGS:
        arch = _arch(path)
        heavy = arch[1] in DEEP and arch in seen
        seen.add(arch)
        params.append(pytest.param(path, id=_name(path), marks=(pytest.mark.heavy,) if heavy else ()))
    return params


AS_SHIPPED = _as_shipped_params()
ON_SHALLOW = [p.values[0] for p in AS_SHIPPED if p.marks]


def _build_and_run(cfg) -> None:
    """Tasks (fake meta with the dataset's class count) → model via the engine's setup → one forward pass
    on 1x3x64x64 in eval mode: every main task at 64x64 with its channel count, and every auxiliary task
    present among the intermediate outputs."""
    cfg.model.backbone.pretrained = None  # the local ImageNet checkpoint a user points to is not here
    tasks = build_tasks(cfg, _fake_meta(cfg))
    torch.manual_seed(0)
    model = build_model_for(cfg, tasks).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    for t in cfg.data.tasks:
        assert out[t].shape == (1, tasks[t].out_channels, 64, 64), (t, tuple(out[t].shape))
        assert torch.isfinite(out[t]).all(), t
    for t in cfg.data.aux_tasks:
        inter = [k for k in out if k.split("/")[-1] == t and "/" in k]
        assert inter, f"auxiliary task {t} has no intermediate output in {sorted(out)}"
        assert all(out[k].shape[:2] == (1, tasks[t].out_channels) for k in inter)


@pytest.mark.parametrize("path", AS_SHIPPED)
def test_config_builds_and_runs_forward(path):
    """Load, then build and run the model exactly as shipped (see :func:`_build_and_run`).

    Default suite: every config on a small backbone, and the first config of each (architecture, deep
    backbone) pair, so that each architecture is built once on each deep backbone it ships with; the other
    deep-backbone configs run here under ``-m heavy`` and on their shallow sibling by default
    (:func:`test_deep_config_builds_on_its_shallow_sibling`)."""
    cfg = load_config(path)
    assert cfg.model.name and cfg.data.tasks
    _build_and_run(cfg)


@pytest.mark.parametrize("path", ON_SHALLOW, ids=_name)
def test_deep_config_builds_on_its_shallow_sibling(path):
    """A deep-backbone config whose as-shipped build is heavy: everything as shipped (tasks, class count,
    auxiliary tasks, model options, backbone options such as the output stride) except the backbone's
    depth, swapped for the smallest of its family (:data:`SHALLOW`)."""
    cfg = load_config(path)
    cfg.model.backbone.name = SHALLOW[cfg.model.backbone.name]
    _build_and_run(cfg)
