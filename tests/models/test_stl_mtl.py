"""Shared layers (blocks, heads) and the single-task / shared-encoder multi-task baselines."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import nn

from mtdense.backbones import build_backbone
from mtdense.errors import ConfigError, ShapeError
from mtdense.models import build_model, model_config_class
from mtdense.models._base import IMAGENET_MEAN, IMAGENET_STD, upsample_to
from mtdense.models.layers import (
    ASPP,
    BasicBlock,
    Bottleneck,
    ConvBNReLU,
    DeepLabHead,
    HeadSpec,
    HRNetHead,
    PanopticFPNHead,
    SqueezeExcitation,
    aspp_rates,
    head_for_backbone,
    residual_block,
    resolve_head_kind,
)
from mtdense.models.stl_mtl import SharedEncoderNet


def _cfg(name: str, **extra):
    return model_config_class(name).model_validate({"name": name, **extra})


# ----------------------------------------------------------------------------------------------
# blocks
# ----------------------------------------------------------------------------------------------
def test_conv_bn_relu_sizes() -> None:
    """'same' padding: stride 2 gives ceil(65/2) x ceil(49/2) = 33 x 25; dilation 3 keeps 65 x 49;
    without ReLU negative values survive, with it none do."""
    x = torch.randn(2, 4, 65, 49)
    assert ConvBNReLU(4, 8, 3, stride=2)(x).shape == (2, 8, 33, 25)
    assert ConvBNReLU(4, 8, 3, dilation=3)(x).shape == (2, 8, 65, 49)
    assert (ConvBNReLU(4, 8, 1)(x) >= 0).all()
    assert (ConvBNReLU(4, 8, 1, relu=False)(x) < 0).any()
    with pytest.raises(ConfigError, match="odd"):
        ConvBNReLU(4, 8, 2)


def test_residual_block_projection_only_when_needed() -> None:
    """Identity shortcut for same width and stride 1; 1x1 conv + BN otherwise; Bottleneck inner width
    is out/4 (torchvision)."""
    same = residual_block(BasicBlock, 8, 8)
    assert same.downsample is None
    wider = residual_block(Bottleneck, 16, 32)
    assert isinstance(wider.downsample[0], nn.Conv2d) and wider.downsample[0].kernel_size == (1, 1)
    assert isinstance(wider.downsample[1], nn.BatchNorm2d)
    assert wider.conv1.out_channels == 8
    strided = residual_block(BasicBlock, 8, 8, stride=2)
    assert strided.downsample is not None and strided.downsample[0].stride == (2, 2)
    x = torch.randn(2, 8, 65, 49)
    assert strided(x).shape == (2, 8, 33, 25)
    assert residual_block(Bottleneck, 8, 32)(x).shape == (2, 32, 65, 49)
    with pytest.raises(ConfigError, match="multiple of 4"):
        residual_block(Bottleneck, 8, 30)


def test_squeeze_excitation_by_hand() -> None:
    """C = 2, r = 2 -> one hidden unit. W1 = [1, 0], W2 = [[1], [-1]], zero biases.
    Channel means z = (2, 5) -> hidden relu(2) = 2 -> gate sigmoid(2, -2) -> output x * gate."""
    se = SqueezeExcitation(2, reduction=2)
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([[1.0, 0.0]]))
        se.fc1.bias.zero_()
        se.fc2.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        se.fc2.bias.zero_()
    x = torch.stack([torch.full((3, 4), 2.0), torch.tensor([[5.0] * 4, [4.0] * 4, [6.0] * 4])])[None]
    gate = torch.sigmoid(torch.tensor([2.0, -2.0]))
    torch.testing.assert_close(se(x), x * gate[None, :, None, None])
    assert SqueezeExcitation(18, reduction=16).fc1.out_features == 1  # max(1, 18 // 16)
    with pytest.raises(ShapeError, match="expected"):
        se(torch.randn(1, 3, 4, 4))


# ----------------------------------------------------------------------------------------------
# heads
# ----------------------------------------------------------------------------------------------
def test_aspp_rates_scale_with_output_stride() -> None:
    """DeepLabv3: 6/12/18 at stride 16, doubled at 8; halved (3/6/9) at 32."""
    assert aspp_rates(16) == (6, 12, 18)
    assert aspp_rates(8) == (12, 24, 36)
    assert aspp_rates(32) == (3, 6, 9)


def test_aspp_branches_and_image_pooling() -> None:
    """Five 256-channel branches (1x1, three atrous 3x3, image pooling) -> projection -> 256 channels;
    the pooling branch is the same at every position and equals its conv applied to the mean."""
    aspp = ASPP(16, rates=(1, 2, 3), channels=256).eval()
    dilations = [b[0].dilation for b in aspp.branches[1:4]]
    assert dilations == [(1, 1), (2, 2), (3, 3)]
    x = torch.randn(2, 16, 9, 7)
    assert aspp(x).shape == (2, 256, 9, 7)
    pool = aspp.branches[-1]
    y = pool(x)
    torch.testing.assert_close(y, pool.conv(x.mean(dim=(2, 3), keepdim=True)).expand_as(y))
    assert aspp.project[0].in_channels == 5 * 256


def test_hrnet_head_layout() -> None:
    """1x1 conv C -> C + BN + ReLU, then 1x1 conv C -> K with bias; resolution unchanged."""
    head = HRNetHead(270, 5)
    conv, bn = head.conv[0], head.conv[1]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (270, 270, (1, 1))
    assert isinstance(bn, nn.BatchNorm2d)
    assert head.classifier.kernel_size == (1, 1) and head.classifier.bias is not None
    assert head(torch.randn(2, 270, 17, 13)).shape == (2, 5, 17, 13)


def test_head_for_backbone_auto() -> None:
    """HRNet-W18-small: fused 18 + 36 + 72 + 144 = 270 channels; ResNet-18 at output stride 8:
    ASPP on layer4 (512 channels) with rates 12/24/36; R18-FPN: Panoptic-FPN head over P2..P5 with
    max(1, log2(r / 4)) = 1, 1, 2, 3 conv stages."""
    hr = head_for_backbone(build_backbone("hrnet_w18_small_v2"), 5)
    assert isinstance(hr.head, HRNetHead) and hr.head.conv[0].in_channels == 270

    res = head_for_backbone(build_backbone("resnet18", output_stride=8), 5)
    assert isinstance(res.head, DeepLabHead)
    assert res.head.aspp.in_channels == 512 and res.head.aspp.rates == (12, 24, 36)

    fpn = head_for_backbone(build_backbone("fpn_resnet18"), 5)
    assert isinstance(fpn, PanopticFPNHead)
    assert [len(s) for s in fpn.scale_heads] == [1, 1, 2, 3]


def test_head_kind_explicit_and_unknown() -> None:
    """An explicit kind overrides the family default: ASPP on HRNet's last level (144 ch, stride 32)."""
    backbone = build_backbone("hrnet_w18_small_v2")
    head = head_for_backbone(backbone, 3, "aspp")
    assert head.head.aspp.in_channels == 144 and head.head.aspp.rates == (3, 6, 9)
    assert resolve_head_kind(backbone) == "hrnet"
    with pytest.raises(ConfigError, match="unknown head kind"):
        resolve_head_kind(backbone, "unet")


def test_panoptic_fpn_head_sums_levels() -> None:
    """The head is ``classifier(sum_i branch_i(f_i))`` with an affine classifier and branches that map
    zero maps to zero (bias-free convs, GroupNorm of a constant is 0 with zero shift, ReLU(0) = 0).
    Hence head(a, b) = head(a, 0) + head(0, b) - classifier.bias. Output at the finest size for odd
    input sizes (level sizes ceil(65/4) x ceil(49/4) = 17 x 13, then 9 x 7, 5 x 4)."""
    torch.manual_seed(0)
    head = PanopticFPNHead([8, 8, 8], [4, 8, 16], 3, channels=32).eval()
    sizes = [(17, 13), (9, 7), (5, 4)]
    a = [torch.randn(2, 8, *sizes[0]), torch.zeros(2, 8, *sizes[1]), torch.randn(2, 8, *sizes[2])]
    b = [torch.zeros(2, 8, *sizes[0]), torch.randn(2, 8, *sizes[1]), torch.zeros(2, 8, *sizes[2])]
    both = [a[0], b[1], a[2]]
    with torch.no_grad():
        out = head(both)
        parts = head(a) + head(b) - head.classifier.bias[None, :, None, None]
    assert out.shape == (2, 3, 17, 13)
    torch.testing.assert_close(out, parts, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="power-of-two"):
        PanopticFPNHead([8, 8], [4, 12], 3)


# ----------------------------------------------------------------------------------------------
# stl / mtl
# ----------------------------------------------------------------------------------------------
def test_mtl_is_backbone_plus_heads_on_normalised_input() -> None:
    """Main outputs = bilinear resize to the input of head(backbone((x - mean) / std)); auxiliary
    outputs = the head output at its own resolution; one backbone shared by all heads."""
    torch.manual_seed(0)
    model = build_model(
        _cfg("mtl", backbone={"name": "hrnet_w18_small_v2"}),
        heads={"semseg": 4, "depth": 1},
        aux_heads={"edge": 1},
    ).eval()
    x = torch.rand(1, 3, 35, 27)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(x)
        feats = model.backbone((x - mean) / std)
        for t in ("semseg", "depth"):
            torch.testing.assert_close(out[t], upsample_to(model.task_heads[t](feats), (35, 27)))
        torch.testing.assert_close(out["aux/edge"], model.aux_task_heads["edge"](feats))
    assert out["aux/edge"].shape == (1, 1, 9, 7)  # HRNet head at stride 4: ceil(35/4) x ceil(27/4)
    assert set(out) == {"semseg", "depth", "aux/edge"}
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in model.param_groups()["backbone"]} == backbone_ids
    n_backbone = sum(p.numel() for p in build_backbone("hrnet_w18_small_v2").parameters())
    assert sum(p.numel() for p in model.backbone.parameters()) == n_backbone


def test_mtl_head_option_and_output_stride() -> None:
    """``head: fpn`` on a plain ResNet builds the Panoptic-FPN head; ``backbone.output_stride: 8``
    reaches the backbone (last level at stride 8) and the ASPP rates (12/24/36)."""
    fpn = build_model(_cfg("mtl", head="fpn"), heads={"depth": 1})
    assert isinstance(fpn.task_heads["depth"], PanopticFPNHead)
    os8 = build_model(_cfg("mtl", backbone={"name": "resnet18", "output_stride": 8}), heads={"depth": 1})
    assert os8.backbone.feature_info[-1].reduction == 8
    assert os8.task_heads["depth"].head.aspp.rates == (12, 24, 36)


def test_stl_needs_exactly_one_task_and_no_aux() -> None:
    with pytest.raises(ConfigError, match="exactly one task"):
        build_model(_cfg("stl"), heads={"semseg": 4, "depth": 1})
    with pytest.raises(ConfigError, match="no auxiliary tasks"):
        build_model(_cfg("stl"), heads={"depth": 1}, aux_heads={"edge": 1})
    model = build_model(_cfg("stl", head="hrnet"), heads={"depth": 1})
    assert isinstance(model, SharedEncoderNet) and list(model.task_heads) == ["depth"]


def test_task_heads_are_validated() -> None:
    backbone = build_backbone("resnet18")
    with pytest.raises(ConfigError, match="at least one main task"):
        SharedEncoderNet(backbone, {})
    with pytest.raises(ConfigError, match="both main"):
        SharedEncoderNet(backbone, {"depth": 1}, {"depth": 1})
    with pytest.raises(ConfigError, match="'/'"):
        SharedEncoderNet(backbone, {"aux/depth": 1})
    with pytest.raises(ConfigError, match="output channels"):
        SharedEncoderNet(backbone, {"depth": 0})


def test_backbone_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="model.backbone: unknown backbone 'resnet7'"):
        build_model(_cfg("mtl", backbone={"name": "resnet7"}), heads={"depth": 1})
    with pytest.raises(ConfigError, match="model.backbone: .*output_stride"):
        build_model(
            _cfg("mtl", backbone={"name": "hrnet_w18_small_v2", "output_stride": 8}), heads={"depth": 1}
        )


@pytest.mark.parametrize(
    "extra", [{"head": "unet"}, {"aspp_dropout": 1.0}, {"fpn_channels": 0}, {"aspp_dropout": "0.5"}]
)
def test_config_rejects_bad_values(extra) -> None:
    for name in ("stl", "mtl"):
        with pytest.raises(pydantic.ValidationError):
            _cfg(name, **extra)


def test_head_spec_defaults_match_config_defaults() -> None:
    """The library default (``HeadSpec()``) and the config default describe the same head."""
    cfg = _cfg("mtl")
    spec = HeadSpec()
    assert (cfg.head, cfg.aspp_dropout, cfg.fpn_channels) == (spec.kind, spec.aspp_dropout, spec.fpn_channels)
    assert math.isclose(cfg.aspp_dropout, 0.5)
