"""Tests of :mod:`mtdense.engine.complexity` (``mtdense complexity``): parameter and FLOP counts and the
single-task sum checked against hand counts, the class count from the dataset meta, timing keys, and the CLI.

All models are ResNet-18 based at 64×64 inputs; timings run once without warm-up (no thresholds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mtdense.cli.main import main
from mtdense.engine.complexity import complexity_report, count_flops, flop_breakdown, format_complexity
from mtdense.errors import ConfigError, DataError

SIZE = (64, 64)

# torchvision's resnet18 has 11,689,512 parameters, of which the classifier fc is 512·1000 + 1000 = 513,000;
# the backbone drops fc. By hand, convs (no bias) + BN (2 per channel):
#   stem 3·64·49 + 128 = 9,536; layer1 4·64·64·9 + 4·128 = 147,968;
#   layer2 64·128·9 + 2·128·128·9 + ... = 525,568 (incl. the 1×1 downsample 64·128 and 5 BNs of 256);
#   layer3 2,099,712; layer4 8,393,728 → 11,176,512 = 11,689,512 − 513,000.
RESNET18_BACKBONE_PARAMS = 11_176_512
# Its FLOPs at 64×64 (stride 2 stem and max-pool: 32×32, then 16, 8, 4, 2), 2·Cout·Cin·k²·H'·W' per conv:
#   stem 2·64·3·49·32² = 19,267,584; layer1 4·2·64·64·9·16² = 75,497,472;
#   layer2 2·128·64·9·8² + 3·2·128·128·9·8² + 2·128·64·8² (downsample) = 66,584,576;
#   layer3 (4×4) 66,322,432; layer4 (2×2) 68,419,584 → 296,091,648.
RESNET18_BACKBONE_FLOPS_64 = 296_091_648
# The stl head on ResNet-18 (DeepLab-v3 ASPP on the stride-32 map, 2×2 at 64×64), 512 → 256 channels:
#   params: two 1×1 branches 2·512·256 + three 3×3 dilated 3·512·256·9 + projection 1280·256 + 6 BN·2·256
#           = 4,131,840, plus the 1×1 classifier 256·K + K;
#   FLOPs: 2·256·512·4 + 3·2·256·512·9·4 + 2·256·512·1 (pooled branch) + 2·256·1280·4 = 32,243,712,
#          plus the classifier 2·K·256·4.
ASPP_PARAMS, ASPP_FLOPS_64 = 4_131_840, 32_243_712


def _stl_by_hand(k: int) -> tuple[int, int]:
    """(params, FLOPs at 64×64) of an stl ResNet-18 network with a K-channel output."""
    return (
        RESNET18_BACKBONE_PARAMS + ASPP_PARAMS + 256 * k + k,
        RESNET18_BACKBONE_FLOPS_64 + ASPP_FLOPS_64 + 2 * k * 256 * 4,
    )


def _overrides(tmp_path: Path, *extra: str, num_classes: int = 40) -> list[str]:
    # data.root: a folder whose meta.json gives the class count, whatever the CWD holds.
    if not (tmp_path / "meta.json").is_file():
        (tmp_path / "meta.json").write_text(json.dumps({"num_classes": num_classes}))
    return [f"data.root={tmp_path}", "model.backbone.name=resnet18", *extra]


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


def test_params_and_flops_of_stl_resnet18_match_hand_count(tmp_path: Path) -> None:
    overrides = _overrides(tmp_path, "model.name=stl", "data.tasks=[depth]", "data.aux_tasks=[]")
    report = complexity_report(None, overrides=overrides, size=SIZE)
    params, flops = _stl_by_hand(1)  # depth: one channel
    assert report["params"] == params == 15_308_609
    assert report["per_module"]["backbone"]["params"] == RESNET18_BACKBONE_PARAMS
    assert report["per_module"]["backbone"]["gflops"] * 1e9 == pytest.approx(RESNET18_BACKBONE_FLOPS_64, abs=0.5)
    assert sum(m["params"] for m in report["per_module"].values()) == report["params"]
    assert report["params_m"] == pytest.approx(params / 1e6)
    assert report["gflops"] * 1e9 == pytest.approx(flops, abs=0.5)  # per image of SIZE
    assert report["gmacs"] == pytest.approx(flops / 2e9)
    assert sum(m["gflops"] for m in report["per_module"].values()) == pytest.approx(report["gflops"])
    assert report["stl"] is None  # already single-task
    assert report["train_step_s"] is None and report["infer_s"] is None


def test_stl_sum_matches_hand_count(tmp_path: Path) -> None:
    """mtl on semseg (40 classes) + depth, aux edge → the sum of an stl semseg and an stl depth network."""
    base = _overrides(tmp_path, "model.name=mtl", "data.tasks=[semseg,depth]", "data.aux_tasks=[edge]")
    report = complexity_report(None, overrides=base, size=SIZE)
    stl = report["stl"]
    assert list(stl["per_task"]) == ["semseg", "depth"]
    for task, k in (("semseg", 40), ("depth", 1)):
        params, flops = _stl_by_hand(k)
        assert stl["per_task"][task]["params"] == params
        assert stl["per_task"][task]["gflops"] * 1e9 == pytest.approx(flops, abs=0.5)
    (p_seg, f_seg), (p_dep, f_dep) = _stl_by_hand(40), _stl_by_hand(1)
    assert stl["params"] == p_seg + p_dep == 30_627_241
    assert stl["gflops"] * 1e9 == pytest.approx(f_seg + f_dep, abs=1)
    assert stl["params_ratio"] == pytest.approx(report["params"] / stl["params"])
    # The mtl model shares one backbone among three heads, the two stl models have one backbone each.
    assert report["params"] < stl["params"]
    text = format_complexity(report)
    assert "single-task" in text and "GMACs" in text


def test_stl_models_keep_the_shared_model_options(tmp_path: Path) -> None:
    """The single-task models of the comparison are ``single_task_config``'s: an ``mtl`` option that ``stl``
    also has (the head) is carried over; with a Panoptic-FPN head the stl sum differs from the ASPP one."""
    base = _overrides(tmp_path, "model.name=mtl", "data.tasks=[depth]")
    aspp = complexity_report(None, overrides=base, size=SIZE)["stl"]
    fpn = complexity_report(None, overrides=[*base, "model.head=fpn"], size=SIZE)["stl"]
    assert aspp["params"] == _stl_by_hand(1)[0] and fpn["params"] != aspp["params"]


def test_semseg_classes_from_the_dataset_meta(tmp_path: Path) -> None:
    """7 classes in meta.json → a 7-channel head; without meta.json the class count is what the dataset
    defines (NYUD-MT: 40; an unrendered synthetic family: its classes), else an error naming data.root."""
    seg = ["model.name=stl", "data.tasks=[semseg]", "data.aux_tasks=[]"]
    report = complexity_report(None, overrides=_overrides(tmp_path, *seg, num_classes=7), size=SIZE)
    assert report["num_classes"] == 7 and report["params"] == _stl_by_hand(7)[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    at_empty = [f"data.root={empty}", "model.backbone.name=resnet18", *seg]
    nyud = complexity_report(None, overrides=[*at_empty, "data.dataset=nyud_mt"], size=SIZE)
    assert nyud["num_classes"] == 40 and nyud["params"] == _stl_by_hand(40)[0]
    street = complexity_report(None, overrides=[*at_empty, "data.synth={family: street, train: 2, val: 1}"], size=SIZE)
    from mtdense.data.synthetic.street import CLASS_NAMES

    assert street["num_classes"] == len(CLASS_NAMES) and not (empty / "meta.json").exists()
    with pytest.raises(DataError, match=rf"meta\.json in data\.root = {empty}\) has no 'num_classes'"):
        complexity_report(None, overrides=at_empty, size=SIZE)


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
    # no class count anywhere (a synthetic dataset without data.synth and without meta.json): one error line
    assert main(["complexity", str(config), "--size", "64x64", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: semseg needs the dataset's number of classes") and "\n" not in err
    (tmp_path / "meta.json").write_text(json.dumps({"num_classes": 40}))
    assert main(["complexity", str(config), "--size", "64x64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("params", "gflops", "gmacs", "train_step_s", "infer_s", "per_module", "stl"):
        assert key in report
    assert set(report["per_module"]) >= {"backbone"}
    assert report["stl"]["params"] == 30_627_241 > report["params"]


def test_timed_train_step_runs_the_balancers_own_backward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gradient-level balancer's per-task gradients are part of the timed train step, as in the trainer."""
    from mtdense.losses import PCGrad

    calls: list[list[str]] = []
    combine = PCGrad.combine

    def spy(self: PCGrad, grads: torch.Tensor, tasks: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        calls.append(list(tasks))
        return combine(self, grads, tasks)

    monkeypatch.setattr(PCGrad, "combine", spy)
    overrides = _overrides(tmp_path, "model.name=mtl", "data.tasks=[semseg,depth]", "loss.balancer=pcgrad")
    report = complexity_report(
        None, overrides=overrides, size=SIZE, batch=2, time=True, compare_stl=False, repeats=1, warmup=0
    )
    assert report["train_step_s"] > 0
    assert calls == [["semseg", "depth"]]  # one timed step, no warm-up: one combined update of both tasks
