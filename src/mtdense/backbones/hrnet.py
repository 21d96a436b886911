"""HRNet (HRNetV2) as a dense-prediction backbone, with the official HRNet parameter names.

Wang, Sun, Cheng, et al. "Deep High-Resolution Representation Learning for Visual Recognition",
TPAMI 2020 (HRNetV2); Sun, Xiao, Liu, Wang. "Deep High-Resolution Representation Learning for Human
Pose Estimation", CVPR 2019::

    @article{wang2020deep,
      title={Deep High-Resolution Representation Learning for Visual Recognition},
      author={Wang, Jingdong and Sun, Ke and Cheng, Tianheng and Jiang, Borui and Deng, Chaorui and
              Zhao, Yang and Liu, Dong and Mu, Yadong and Tan, Mingkui and Wang, Xinggang and
              Liu, Wenyu and Xiao, Bin},
      journal={TPAMI}, year={2020}}

Structure and names follow the official HRNet-Image-Classification / HRNet-Semantic-Segmentation
code (and timm, which copies them), so their ImageNet ``.pth`` files load without renaming:
stem ``conv1, bn1, conv2, bn2`` (two stride-2 3x3 convs to 64 channels); ``layer1`` (Bottlenecks,
256 channels out); then for k = 1, 2, 3 a ``transition{k}`` (a 3x3 conv + BN + ReLU per branch whose
width changes; a new, coarser branch by a stride-2 3x3 conv from the coarsest existing branch, keys
``transition{k}.{i}.0.0.weight``) and ``stage{k+1}``, a sequence of :class:`HighResolutionModule`
(``stage{k+1}.{m}.branches.{i}.{b}.conv1...`` and ``stage{k+1}.{m}.fuse_layers.{i}.{j}...``). The
ImageNet classification head (``incre_modules``, ``downsamp_modules``, ``final_layer``,
``classifier``) is left out and is reported as ignored when a checkpoint is loaded.

Choices where the references differ:

* Fusion of a coarser branch j into a finer branch i: 1x1 conv + BN, then **bilinear** resizing
  (``align_corners=False``) to the exact size of branch i, as in HRNet-Semantic-Segmentation and the
  MTI-Net authors' ``seg_hrnet.py``. The classification code upsamples ×2^(j−i) by nearest
  neighbour, which breaks on odd input sizes; neither resizing has parameters, so checkpoints are
  interchangeable.
* BatchNorm momentum 0.01, as in the MTI-Net authors' code (``BN_MOMENTUM = 0.01``).
* Initialisation: Kaiming-normal (fan-out) convolutions and unit/zero BN, as torchvision/timm; the
  segmentation code's N(0, 0.001) is only overwritten by ImageNet weights there, and Kaiming trains
  better from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.backbones._base import Backbone, FeatureInfo, register_backbone
from mtdense.backbones.resnet import BasicBlock, Bottleneck
from mtdense.errors import ConfigError, ShapeError, check_shape

__all__ = [
    "HRNET_SPECS",
    "HRNet",
    "HRNetSpec",
    "HRNetStage",
    "HighResolutionModule",
    "fuse_features",
    "fuse_hrnet_features",
    "hrnet_w18",
    "hrnet_w18_small_v2",
    "hrnet_w48",
]

_BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class HRNetStage:
    """One multi-resolution stage: ``num_modules`` modules of ``num_blocks`` BasicBlocks per branch."""

    num_modules: int
    num_blocks: int
    channels: tuple[int, ...]


@dataclass(frozen=True)
class HRNetSpec:
    """A variant: ``stage1_blocks`` Bottlenecks in ``layer1``, then stages 2, 3, 4."""

    stage1_blocks: int
    stages: tuple[HRNetStage, HRNetStage, HRNetStage]


def _widths(c: int) -> tuple[int, ...]:
    return (c, 2 * c, 4 * c, 8 * c)


def _spec(*, stage1_blocks: int, modules: tuple[int, int, int], blocks: int, width: int) -> HRNetSpec:
    w = _widths(width)
    return HRNetSpec(
        stage1_blocks=stage1_blocks,
        stages=(
            HRNetStage(num_modules=modules[0], num_blocks=blocks, channels=w[:2]),
            HRNetStage(num_modules=modules[1], num_blocks=blocks, channels=w[:3]),
            HRNetStage(num_modules=modules[2], num_blocks=blocks, channels=w),
        ),
    )


#: The official configurations (HRNet-Image-Classification ``experiments/*.yaml``).
HRNET_SPECS: dict[str, HRNetSpec] = {
    "hrnet_w18_small_v2": _spec(stage1_blocks=2, modules=(1, 3, 2), blocks=2, width=18),
    "hrnet_w18": _spec(stage1_blocks=4, modules=(1, 4, 3), blocks=4, width=18),
    "hrnet_w48": _spec(stage1_blocks=4, modules=(1, 4, 3), blocks=4, width=48),
}


def _conv_bn(
    in_ch: int, out_ch: int, *, kernel: int, stride: int, relu: bool, bn_momentum: float
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch, momentum=bn_momentum),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by all-to-all fusion (HRNet paper, Sec. 3).

    Input and output: a list of ``n`` maps, branch i of shape ``(B, channels[i], H_i, W_i)`` with
    ``H_{i+1} = ceil(H_i / 2)``. Output i is ``ReLU(sum_j f_ij(branch_j(x_j)))`` where ``f_ii`` is the
    identity, ``f_ij`` for ``j > i`` is 1x1 conv + BN then bilinear resizing to ``(H_i, W_i)``, and for
    ``j < i`` is ``i - j`` stride-2 3x3 conv + BN (ReLU between them, none after the last).
    """

    def __init__(
        self, *, channels: Sequence[int], num_blocks: int, bn_momentum: float = _BN_MOMENTUM
    ) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c, bn_momentum=bn_momentum) for _ in range(num_blocks)))
            for c in channels
        )
        self.fuse_layers = nn.ModuleList()
        if n > 1:  # a single branch has nothing to fuse; the official code then has no fuse_layers keys
            for i in range(n):
                row = nn.ModuleList()
                for j in range(n):
                    if j > i:
                        row.append(
                            _conv_bn(
                                channels[j],
                                channels[i],
                                kernel=1,
                                stride=1,
                                relu=False,
                                bn_momentum=bn_momentum,
                            )
                        )
                    elif j == i:
                        row.append(nn.Identity())
                    else:
                        steps = [
                            _conv_bn(
                                channels[j],
                                channels[i] if k == i - j - 1 else channels[j],
                                kernel=3,
                                stride=2,
                                relu=k < i - j - 1,
                                bn_momentum=bn_momentum,
                            )
                            for k in range(i - j)
                        ]
                        row.append(nn.Sequential(*steps))
                self.fuse_layers.append(row)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if len(self.fuse_layers) == 0:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, fuse in enumerate(row):
                if j == i:
                    continue
                z = fuse(xs[j])
                if j > i:
                    z = F.interpolate(z, size=xs[i].shape[-2:], mode="bilinear", align_corners=False)
                y = y + z
            out.append(self.relu(y))
        return out


def _transition(pre: Sequence[int], cur: Sequence[int], *, bn_momentum: float) -> nn.ModuleList:
    """Per target branch i: identity, a 3x3 conv changing width, or stride-2 convs from the last branch."""
    layers = nn.ModuleList()
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(
                nn.Identity()
                if pre[i] == c
                else _conv_bn(pre[i], c, kernel=3, stride=1, relu=True, bn_momentum=bn_momentum)
            )
        else:
            n_down = i + 1 - len(pre)
            layers.append(
                nn.Sequential(
                    *(
                        _conv_bn(
                            pre[-1],
                            c if k == n_down - 1 else pre[-1],
                            kernel=3,
                            stride=2,
                            relu=True,
                            bn_momentum=bn_momentum,
                        )
                        for k in range(n_down)
                    )
                )
            )
    return layers


class HRNet(Backbone):
    """HRNetV2 trunk returning the four branches of ``stage4`` (strides 4, 8, 16, 32).

    ``(B, in_channels, H, W) -> [(B, C, ⌈H/4⌉, ⌈W/4⌉), (B, 2C, ⌈H/8⌉, ...), (B, 4C, ...), (B, 8C, ...)]``
    with C = 18 (W18 variants) or 48 (W48). Use :func:`fuse_hrnet_features` for the concatenated
    stride-4 representation (15C channels: 270 for W18).

    Args:
        spec: the variant (see :data:`HRNET_SPECS`).
        in_channels: input channels.
        bn_momentum: BatchNorm momentum of every BN layer.
    """

    transition1: nn.ModuleList
    transition2: nn.ModuleList
    transition3: nn.ModuleList
    stage2: nn.Sequential
    stage3: nn.Sequential
    stage4: nn.Sequential

    def __init__(self, *, spec: HRNetSpec, in_channels: int = 3, bn_momentum: float = _BN_MOMENTUM) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.spec = spec
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)

        expanded = 64 * Bottleneck.expansion
        downsample = nn.Sequential(
            nn.Conv2d(64, expanded, 1, bias=False), nn.BatchNorm2d(expanded, momentum=bn_momentum)
        )
        self.layer1 = nn.Sequential(
            Bottleneck(64, 64, downsample=downsample, bn_momentum=bn_momentum),
            *(Bottleneck(expanded, 64, bn_momentum=bn_momentum) for _ in range(1, spec.stage1_blocks)),
        )

        pre: Sequence[int] = (expanded,)
        for k, stage in enumerate(spec.stages, start=1):
            self.add_module(f"transition{k}", _transition(pre, stage.channels, bn_momentum=bn_momentum))
            modules = (
                HighResolutionModule(
                    channels=stage.channels, num_blocks=stage.num_blocks, bn_momentum=bn_momentum
                )
                for _ in range(stage.num_modules)
            )
            self.add_module(f"stage{k + 1}", nn.Sequential(*modules))
            pre = stage.channels

        self.feature_info = [
            FeatureInfo(channels=c, reduction=4 * 2**i, module=f"stage4[{i}]") for i, c in enumerate(pre)
        ]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_levels(self, x: Tensor) -> list[Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for transition, stage in (
            (self.transition1, self.stage2),
            (self.transition2, self.stage3),
            (self.transition3, self.stage4),
        ):
            # existing branches go through their own transition, new coarser ones start from the coarsest
            xs = [t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition)]
            xs = stage(xs)
        return xs


def fuse_hrnet_features(features: Sequence[Tensor]) -> Tensor:
    """Concatenate HRNet levels at the finest resolution (the HRNetV2 representation).

    Levels 1.. are resized bilinearly (``align_corners=False``) to the exact size of level 0 and
    concatenated along channels after it, as the HRNet segmentation head and the MTI-Net authors'
    ``HighResolutionHead`` do.

    Args:
        features: ``[(B, C_0, H, W), (B, C_1, H_1, W_1), ...]``, finest first.

    Returns:
        ``(B, sum_i C_i, H, W)``; 18 + 36 + 72 + 144 = 270 channels for HRNet-W18.
    """
    if len(features) == 0:
        raise ShapeError("fuse_hrnet_features: expected at least one feature map, got an empty list")
    first = features[0]
    check_shape("fuse_hrnet_features: features[0]", first.shape, "(B, C, H, W)", first.ndim == 4)
    size = first.shape[-2:]
    maps = [first]
    for i, f in enumerate(features[1:], start=1):
        check_shape(
            f"fuse_hrnet_features: features[{i}]",
            f.shape,
            f"({first.shape[0]}, C, h, w)",
            f.ndim == 4 and f.shape[0] == first.shape[0],
        )
        maps.append(F.interpolate(f, size=size, mode="bilinear", align_corners=False))
    return torch.cat(maps, dim=1)


#: Alias of :func:`fuse_hrnet_features` under the name the heads may import.
fuse_features = fuse_hrnet_features


def _build(name: str, in_channels: int, output_stride: int) -> HRNet:
    if output_stride != 32:
        raise ConfigError(
            f"{name} output_stride: HRNet has fixed strides 4-32, expected 32, got {output_stride}"
        )
    return HRNet(spec=HRNET_SPECS[name], in_channels=in_channels)


@register_backbone("hrnet_w18_small_v2")
def hrnet_w18_small_v2(*, in_channels: int = 3, output_stride: int = 32) -> HRNet:
    """HRNet-W18-Small-v2 (the MTI-Net paper's "HRNet-18"): channels 18/36/72/144."""
    return _build("hrnet_w18_small_v2", in_channels, output_stride)


@register_backbone("hrnet_w18")
def hrnet_w18(*, in_channels: int = 3, output_stride: int = 32) -> HRNet:
    """HRNetV2-W18: channels 18/36/72/144."""
    return _build("hrnet_w18", in_channels, output_stride)


@register_backbone("hrnet_w48")
def hrnet_w48(*, in_channels: int = 3, output_stride: int = 32) -> HRNet:
    """HRNetV2-W48 (MTI-Net's NYUD state-of-the-art table): channels 48/96/192/384."""
    return _build("hrnet_w48", in_channels, output_stride)
