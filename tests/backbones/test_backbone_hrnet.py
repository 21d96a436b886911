"""HRNet: official parameter names, stage structure, parameter counts, fusion at exact sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtdense.backbones import build_backbone, fuse_hrnet_features, load_pretrained
from mtdense.backbones.hrnet import HighResolutionModule, fuse_features
from mtdense.errors import ShapeError

# Keys as the official HRNet code (hence its ImageNet checkpoints) names them:
# fuse j < i is a Sequential of stride-2 steps, each Sequential(conv, BN[, ReLU]) -> 4 indices;
# fuse j > i is Sequential(conv1x1, BN) -> 3 indices; a new branch in a transition is a
# Sequential of Sequential(conv, BN, ReLU); a width change in an existing branch is one Sequential.
OFFICIAL_KEYS = [
    "conv1.weight",
    "bn1.running_mean",
    "conv2.weight",
    "bn2.weight",
    "layer1.0.conv3.weight",
    "layer1.0.downsample.0.weight",
    "layer1.0.downsample.1.running_var",
    "layer1.1.bn3.bias",
    "transition1.0.0.weight",  # 256 -> 18, stride 1
    "transition1.0.1.weight",
    "transition1.1.0.0.weight",  # 256 -> 36, stride 2 (new branch)
    "transition2.2.0.0.weight",
    "transition3.3.0.1.running_mean",
    "stage2.0.branches.0.0.conv1.weight",
    "stage2.0.branches.1.1.bn2.weight",
    "stage2.0.fuse_layers.0.1.0.weight",  # 36 -> 18, 1x1
    "stage2.0.fuse_layers.0.1.1.weight",
    "stage2.0.fuse_layers.1.0.0.0.weight",  # 18 -> 36, 3x3 stride 2
    "stage2.0.fuse_layers.1.0.0.1.weight",
    "stage3.2.fuse_layers.2.0.1.0.weight",  # two stride-2 steps from branch 0 to branch 2
    "stage4.1.fuse_layers.3.0.2.0.weight",
    "stage4.1.fuse_layers.0.3.1.bias",
    "stage4.1.branches.3.1.conv2.weight",
]
TOP_LEVEL = {
    "conv1",
    "bn1",
    "conv2",
    "bn2",
    "layer1",
    "transition1",
    "stage2",
    "transition2",
    "stage3",
    "transition3",
    "stage4",
}


def test_official_key_names(cached_backbone):
    state = cached_backbone("hrnet_w18_small_v2").state_dict()
    missing = [k for k in OFFICIAL_KEYS if k not in state]
    assert not missing
    assert {k.split(".")[0] for k in state} == TOP_LEVEL
    # identity transitions / fuse entries have no parameters, as the official None entries
    assert not any(
        k.startswith(("transition2.0.", "transition2.1.", "stage2.0.fuse_layers.0.0.")) for k in state
    )
    assert state["stage2.0.fuse_layers.1.0.0.0.weight"].shape == (36, 18, 3, 3)
    assert state["stage4.1.fuse_layers.3.0.2.0.weight"].shape == (144, 18, 3, 3)
    assert state["stage4.1.fuse_layers.3.0.0.0.weight"].shape == (
        18,
        18,
        3,
        3,
    )  # intermediate steps keep width
    assert state["transition1.1.0.0.weight"].shape == (36, 256, 3, 3)


@pytest.mark.parametrize(
    ("name", "layer1", "modules", "blocks", "width"),
    [
        ("hrnet_w18_small_v2", 2, (1, 3, 2), 2, 18),
        ("hrnet_w18", 4, (1, 4, 3), 4, 18),
        ("hrnet_w48", 4, (1, 4, 3), 4, 48),
    ],
)
def test_stage_structure(name, layer1, modules, blocks, width, cached_backbone):
    model = cached_backbone(name)
    assert len(model.layer1) == layer1
    assert (len(model.stage2), len(model.stage3), len(model.stage4)) == modules
    assert all(
        len(branch) == blocks
        for stage in (model.stage2, model.stage3, model.stage4)
        for m in stage
        for branch in m.branches
    )
    assert model.channels() == [width, 2 * width, 4 * width, 8 * width]


def _classification_head_params(c: list[int]) -> int:
    """Parameters of the official HRNet ImageNet head on branches of widths ``c``.

    incre_modules: per branch one Bottleneck(c_i -> planes h_i, out 4 h_i) with a 1x1 projection,
    h = 32, 64, 128, 256: conv1 c h + bn 2h + conv2 9h^2 + bn 2h + conv3 4h^2 + bn 8h + proj 4 c h + bn 8h
    = 5 c h + 13 h^2 + 20 h. downsamp_modules: 3x3 stride-2 conv with bias 4h_i -> 4h_{i+1} + BN.
    final_layer: 1x1 conv with bias 1024 -> 2048 + BN. classifier: Linear(2048, 1000).
    """
    h = [32, 64, 128, 256]
    total = sum(5 * ci * hi + 13 * hi * hi + 20 * hi for ci, hi in zip(c, h, strict=True))
    total += sum(9 * (4 * a) * (4 * b) + 4 * b + 2 * 4 * b for a, b in zip(h[:-1], h[1:], strict=True))
    total += 1024 * 2048 + 2048 + 2 * 2048
    total += 2048 * 1000 + 1000
    return total


# Published totals of the ImageNet classifiers (README of HRNet-Image-Classification: 15.6M, 21.3M,
# 77.5M; exact counts asserted in the imgclsmob/pytorchcv model zoo: 15,597,464, 21,299,004, 77,469,864).
@pytest.mark.parametrize(
    ("name", "published_total"),
    [("hrnet_w18_small_v2", 15_597_464), ("hrnet_w18", 21_299_004), ("hrnet_w48", 77_469_864)],
)
def test_parameter_count_plus_classifier_head_equals_published(name, published_total, cached_backbone):
    model = cached_backbone(name)
    backbone = sum(p.numel() for p in model.parameters())
    assert backbone + _classification_head_params(model.channels()) == published_total


def test_bn_momentum_is_001(cached_backbone):
    bns = [m for m in cached_backbone("hrnet_w18_small_v2").modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 for m in bns)


def test_fusion_resizes_to_exact_branch_size():
    """Branch sizes 5x3 and 3x2 (odd): the 3x2 map is resized to 5x3, not doubled to 6x4."""
    module = HighResolutionModule(channels=(4, 8), num_blocks=1).eval()
    with torch.no_grad():
        out = module([torch.randn(1, 4, 5, 3), torch.randn(1, 8, 3, 2)])
    assert [tuple(o.shape) for o in out] == [(1, 4, 5, 3), (1, 8, 3, 2)]


def test_imagenet_checkpoint_head_is_ignored(tmp_path, cached_backbone):
    state = {k: v.clone() for k, v in cached_backbone("hrnet_w18_small_v2").state_dict().items()}
    head = {
        "incre_modules.0.0.conv1.weight": torch.zeros(32, 18, 1, 1),
        "downsamp_modules.0.0.weight": torch.zeros(256, 128, 3, 3),
        "final_layer.0.weight": torch.zeros(2048, 1024, 1, 1),
        "classifier.weight": torch.zeros(1000, 2048),
        "classifier.bias": torch.zeros(1000),
    }
    path = tmp_path / "hrnet_w18_small_model_v2.pth"
    torch.save({**state, **head}, path)
    report = load_pretrained(build_backbone("hrnet_w18_small_v2"), path)
    assert report.ignored == tuple(sorted(head))
    assert report.missing == () and report.unexpected == ()
    assert len(report.loaded) == len(state)


def test_fuse_features_bilinear_values():
    """Level 1 ``[[0, 1]]`` (1x2) resized to 1x4 with align_corners=False: source x = (x' + 0.5) / 2 - 0.5
    = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1] -> values 0, 0.25, 0.75, 1."""
    f0 = torch.arange(4.0).view(1, 1, 1, 4)
    f1 = torch.tensor([[[[0.0, 1.0]]]])
    fused = fuse_hrnet_features([f0, f1])
    assert fused.shape == (1, 2, 1, 4)
    torch.testing.assert_close(fused[0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    torch.testing.assert_close(fused[0, 1, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert fuse_features is fuse_hrnet_features


def test_fuse_features_on_w18_odd_size(cached_backbone):
    with torch.no_grad():
        feats = cached_backbone("hrnet_w18_small_v2")(torch.randn(2, 3, 65, 47))
    fused = fuse_hrnet_features(feats)
    assert fused.shape == (2, 270, 17, 12)
    torch.testing.assert_close(fused[:, :18], feats[0], rtol=0, atol=0)


def test_fuse_features_checks_input():
    with pytest.raises(ShapeError, match="empty"):
        fuse_hrnet_features([])
    with pytest.raises(ShapeError, match=r"features\[1\]: expected \(2, C, h, w\)"):
        fuse_hrnet_features([torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 2, 2)])
