"""Tests of :mod:`mtdense.engine.complexity` (``mtdense complexity``): parameter and FLOP counts checked
against hand counts, the single-task sum against separately built models, timing keys, and the CLI.

All models are ResNet-18 based at 64×64 inputs; timings run once without warm-up (no thresholds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mtdense.cli.main import main
from mtdense.config import load_config
from mtdense.engine.complexity import complexity_report, count_flops, flop_breakdown, format_complexity
from mtdense.engine.setup import build_model_for, build_tasks
from mtdense.errors import ConfigError

SIZE = (64, 64)

# torchvision's resnet18 has 11,689,512 parameters, of which the classifier fc is 512·1000 + 1000 = 513,000;
# the backbone drops fc. By hand, convs (no bias) + BN (2 per channel):
#   stem 3·64·49 + 128 = 9,536; layer1 4·64·64·9 + 4·128 = 147,968;
#   layer2 64·128·9 + 2·128·128·9 + ... = 525,568 (incl. the 1×1 downsample 64·128 and 5 BNs of 256);
#   layer3 2,099,712; layer4 8,393,728 → 11,176,512 = 11,689,512 − 513,000.
RESNET18_BACKBONE_PARAMS = 11_176_512


def _overrides(tmp_path: Path, *extra: str) -> list[str]:
    # data.root: an empty folder, so no meta.json is found (40 classes assumed) whatever the CWD holds.
    return [f"data.root={tmp_path}", "model.backbone.name=resnet18", *extra]


def _build(overrides: list[str]) -> nn.Module:
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    return build_model_for(cfg, build_tasks(cfg, {"num_classes": 40}))


def test_count_flops_of_single_convs_by_hand() -> None:
    """FLOPs = 2·B·Cout·(Cin/groups)·k²·H'·W' (multiply-add = 2 FLOPs, bias not counted).

    * 3→8, 3×3, pad 1 on (2, 3, 10, 10): 2·2·8·3·9·100 = 86,400
    * 4→6, 3×3, stride 2, pad 1 on (1, 4, 16, 16) → 8×8 output: 2·1·6·4·9·64 = 27,648
    * depthwise 4→4, groups 4, 3×3, pad 1 on (1, 4, 8, 8): 2·1·4·1·9·64 = 4,608
    * linear 5→3 on (7, 5): 2·7·3·5 = 210
    """
    assert count_flops(nn.Conv2d(3, 8, 3, padding=1), torch.zeros(2, 3, 10, 10)) == 86_400
    assert count_flops(nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.zeros(1, 4, 16, 16)) == 27_648
    assert count_flops(nn.Conv2d(4, 4, 3, padding=1, groups=4), torch.zeros(1, 4, 8, 8)) == 4_608
    assert count_flops(nn.Linear(5, 3), torch.zeros(7, 5)) == 210


def test_flop_breakdown_per_child() -> None:
    """A ReLU costs nothing; the nested conv 8→4 1×1 on (1, 8, 10, 10) costs 2·4·8·100 = 6,400; the first
    conv 3→8 3×3 costs 2·8·3·9·100 = 43,200."""
    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(3, 8, 3, padding=1))
    net.add_module("act", nn.ReLU())
    net.add_module("head", nn.Sequential(nn.Conv2d(8, 4, 1)))
    flops = flop_breakdown(net, torch.zeros(1, 3, 10, 10))
    assert flops == {"total": 49_600, "stem": 43_200, "act": 0, "head": 6_400}


def test_params_of_stl_resnet18_match_hand_count(tmp_path: Path) -> None:
    overrides = _overrides(tmp_path, "model.name=stl", "data.tasks=[depth]", "data.aux_tasks=[]")
    report = complexity_report(None, overrides=overrides, size=SIZE)
    model = _build(overrides)
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["per_module"]["backbone"]["params"] == RESNET18_BACKBONE_PARAMS
    assert sum(m["params"] for m in report["per_module"].values()) == report["params"]
    assert report["params_m"] == pytest.approx(report["params"] / 1e6)
    # Per image: the count for a batch of 1 at SIZE, which is exactly what count_flops gives.
    assert report["gflops"] == pytest.approx(count_flops(model.eval(), torch.zeros(1, 3, *SIZE)) / 1e9)
    assert report["gmacs"] == pytest.approx(report["gflops"] / 2)
    assert sum(m["gflops"] for m in report["per_module"].values()) == pytest.approx(report["gflops"])
    assert report["stl"] is None  # already single-task
    assert report["train_step_s"] is None and report["infer_s"] is None


def test_stl_sum_equals_separately_built_models(tmp_path: Path) -> None:
    base = _overrides(tmp_path, "model.name=mtl", "data.tasks=[semseg,depth]", "data.aux_tasks=[edge]")
    report = complexity_report(None, overrides=base, size=SIZE)
    stl = report["stl"]
    assert list(stl["per_task"]) == ["semseg", "depth"]
    params, gflops = 0, 0.0
    for task in ("semseg", "depth"):
        model = _build(_overrides(tmp_path, "model.name=stl", f"data.tasks=[{task}]", "data.aux_tasks=[]"))
        n = sum(p.numel() for p in model.parameters())
        f = count_flops(model.eval(), torch.zeros(1, 3, *SIZE)) / 1e9
        assert stl["per_task"][task]["params"] == n
        assert stl["per_task"][task]["gflops"] == pytest.approx(f)
        params, gflops = params + n, gflops + f
    assert stl["params"] == params
    assert stl["gflops"] == pytest.approx(gflops)
    assert stl["params_ratio"] == pytest.approx(report["params"] / params)
    # The mtl model shares one backbone among three heads, the two stl models have one backbone each.
    assert report["params"] < params
    text = format_complexity(report)
    assert "single-task" in text and "GMACs" in text


def test_semseg_classes_from_meta_json(tmp_path: Path) -> None:
    """7 classes in meta.json → a 7-channel head: the 1×1 score conv (and everything else) shrinks."""
    (tmp_path / "meta.json").write_text(json.dumps({"num_classes": 7}))
    overrides = _overrides(tmp_path, "model.name=stl", "data.tasks=[semseg]", "data.aux_tasks=[]")
    report = complexity_report(None, overrides=overrides, size=SIZE)
    assert report["num_classes"] == 7
    nyud = complexity_report(None, overrides=[*overrides, "data.dataset=nyud_mt"], size=SIZE)
    assert nyud["num_classes"] == 40
    assert nyud["params"] > report["params"]


def test_timing_keys_positive(tmp_path: Path) -> None:
    overrides = _overrides(tmp_path, "model.name=mtl", "data.tasks=[semseg,depth]", "data.aux_tasks=[normals]")
    report = complexity_report(
        None,
        overrides=overrides,
        size=SIZE,
        batch=2,
        time=True,
        bf16=True,
        compare_stl=False,
        repeats=1,
        warmup=0,
    )
    assert report["train_step_s"] > 0 and report["infer_s"] > 0
    # One timed run: the fastest run is the median.
    assert report["train_step_min_s"] == report["train_step_s"] and report["infer_min_s"] == report["infer_s"]
    assert report["dtype"] == "bf16-autocast" and report["batch"] == 2
    assert report["stl"] is None
    assert "train step" in format_complexity(report)


def test_unknown_config_key_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.bogus"):
        complexity_report(None, overrides=_overrides(tmp_path, "model.name=mtl", "model.bogus=1"), size=SIZE)


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mtl.yaml"
    config.write_text(
        f"data:\n  root: {tmp_path}\n  tasks: [semseg, depth]\nmodel:\n  name: mtl\n  backbone: {{name: resnet18}}\n"
    )
    assert main(["complexity", str(config), "--size", "64x64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("params", "gflops", "gmacs", "train_step_s", "infer_s", "per_module", "stl"):
        assert key in report
    assert set(report["per_module"]) >= {"backbone"}
    assert report["stl"]["params"] > report["params"]
