"""Task heads: map backbone features to one task's raw prediction.

Three heads, each the one a reference implementation uses for its backbone family:

* :class:`HRNetHead` on the fused HRNet representation (all levels upsampled to stride 4 and
  concatenated, 270 channels for W18): ``1x1 conv C->C + BN + ReLU, 1x1 conv C->K``. This is the
  head of HRNetV2 (Wang et al., TPAMI 2020, Sec. 3) and of the MTI-Net authors' single-task and MTL
  baselines (MTI-Net, ECCV 2020, Sec. 3.1 "Baselines").
* :class:`DeepLabHead` on the last ResNet level: ASPP (Chen et al., "Rethinking Atrous Convolution",
  arXiv 1706.05587, Sec. 3.3) with three 3x3 atrous branches, a 1x1 branch and image pooling, 256
  channels each, concatenated and projected by 1x1 conv + BN + ReLU, dropout 0.5, then a 1x1
  classifier. Rates are 6/12/18 at output stride 16 and doubled (12/24/36) at output stride 8, as in
  the paper; :func:`aspp_rates` scales them with the stride of the level the head sits on.
  Choice: the paper's layout (projection, then the 1x1 classifier). torchvision's and the MTI-Net
  authors' ``DeepLabHead`` insert an extra 3x3 conv + BN + ReLU before the classifier; the paper
  has none, so neither do we.
* :class:`PanopticFPNHead` for FPN backbones: the semantic branch of Panoptic FPN (Kirillov, Girshick,
  He, Dollár, CVPR 2019, Sec. 3.2 and Fig. 3); the MTI-Net authors' FPN variant decodes this way
  (their public multi-task repository). Each pyramid level goes through
  ``log2(r / r_min)`` stages of 3x3 conv (128 channels) + GroupNorm + ReLU + 2x bilinear upsampling
  (one conv stage without upsampling for the finest level) to the finest stride; the levels are
  summed; a 1x1 conv gives the prediction. GroupNorm uses 32 groups as in the paper
  (``gcd(32, channels)`` when ``channels`` is not a multiple of 32).

:func:`head_for_backbone` builds the right head for a backbone from its ``feature_info`` only (never
from channel numbers in a config). Every head it returns takes the backbone's list of feature maps
and returns ``(B, K, h, w)`` at the stride of the level it reads (HRNet and FPN heads: the finest
level, stride 4; DeepLab: the last level); callers resize to the input size.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.backbones import FPN, Backbone, FeatureInfo, HRNet, ResNet, fuse_hrnet_features
from mtdense.errors import ConfigError, check_shape
from mtdense.models.layers.blocks import ConvBNReLU

__all__ = [
    "ASPP",
    "AUTO_HEAD_KIND",
    "HEAD_BUILDERS",
    "DeepLabHead",
    "FuseLevels",
    "HRNetHead",
    "HeadSpec",
    "PanopticFPNHead",
    "SelectLevel",
    "aspp_rates",
    "head_for_backbone",
    "resolve_head_kind",
]


# ----------------------------------------------------------------------------------------------
# Level selection (parameter-free adapters from a backbone's list of maps to one map)
# ----------------------------------------------------------------------------------------------
class SelectLevel(nn.Module):
    """``features[index]`` of a backbone's list of feature maps."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return features[self.index]


class FuseLevels(nn.Module):
    """The HRNetV2 representation: every level resized bilinearly to the finest and concatenated.

    ``[(B, C_0, H, W), (B, C_1, h_1, w_1), ...] -> (B, sum_i C_i, H, W)``
    (:func:`mtdense.backbones.fuse_hrnet_features`).
    """

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return fuse_hrnet_features(features)


# ----------------------------------------------------------------------------------------------
# HRNet head
# ----------------------------------------------------------------------------------------------
class HRNetHead(nn.Sequential):
    """``1x1 conv (C -> C) + BN + ReLU, 1x1 conv (C -> K)`` on a single map.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``. The first conv has no bias because BN
    follows it (the reference code's bias there is cancelled by BN); the classifier has a bias.
    """

    def __init__(self, in_channels: int, out_channels: int, *, bn_momentum: float = 0.1) -> None:
        super().__init__(
            OrderedDict(
                conv=ConvBNReLU(in_channels, in_channels, 1, bn_momentum=bn_momentum),
                classifier=nn.Conv2d(in_channels, out_channels, 1),
            )
        )


# ----------------------------------------------------------------------------------------------
# DeepLab (ASPP) head
# ----------------------------------------------------------------------------------------------
def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """ASPP atrous rates for a feature map at ``output_stride``.

    DeepLabv3 (Sec. 3.3, 4.1) uses 6/12/18 at output stride 16 and doubles them at output stride 8,
    i.e. the rates keep a fixed field of view in input pixels. We extend the same rule to other
    strides: ``rate = round(r * 16 / output_stride)`` for r in (6, 12, 18), at least 1
    (3/6/9 at stride 32, 12/24/36 at stride 8).
    """
    if output_stride < 1:
        raise ConfigError(f"aspp_rates: output_stride must be >= 1, got {output_stride}")
    r1, r2, r3 = (max(1, round(r * 16 / output_stride)) for r in (6, 12, 18))
    return r1, r2, r3


class _ASPPPooling(nn.Module):
    """Image-level features: global average pool, 1x1 conv + BN + ReLU, broadcast back to ``(H, W)``.

    Note: in training mode BatchNorm on a ``(B, C, 1, 1)`` map needs ``B >= 2`` (PyTorch refuses to
    normalise a single value per channel), as in every DeepLabv3 implementation.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        # upsampling a 1x1 map bilinearly is a broadcast, so expand it instead of interpolating
        return self.conv(self.pool(x)).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3, Sec. 3.3).

    Branches: 1x1 conv; three 3x3 convs with dilation ``rates``; image pooling; each ``channels`` wide
    with BN + ReLU. Concatenated (``5 * channels``), projected by 1x1 conv + BN + ReLU to
    ``channels``, then dropout ``dropout``.

    ``(B, in_channels, H, W) -> (B, channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        rates: Sequence[int] = (12, 24, 36),
        channels: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, channels, 1)]
            + [ConvBNReLU(in_channels, channels, 3, dilation=r) for r in self.rates]
            + [_ASPPPooling(in_channels, channels)]
        )
        self.project = ConvBNReLU(channels * len(self.branches), channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(
            "ASPP input",
            x.shape,
            f"(B, {self.in_channels}, H, W)",
            x.ndim == 4 and x.shape[1] == self.in_channels,
        )
        y = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.dropout(self.project(y))


class DeepLabHead(nn.Sequential):
    """DeepLabv3 head: :class:`ASPP` then a 1x1 classifier (with bias).

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    Args:
        in_channels: channels of the backbone level.
        out_channels: the task's output channels ``K``.
        rates: atrous rates (see :func:`aspp_rates`).
        channels: ASPP width (256 in the paper).
        dropout: dropout after the ASPP projection (0.5 in the reference implementations).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        rates: Sequence[int] = (12, 24, 36),
        channels: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(
            OrderedDict(
                aspp=ASPP(in_channels, rates=rates, channels=channels, dropout=dropout),
                classifier=nn.Conv2d(channels, out_channels, 1),
            )
        )


# ----------------------------------------------------------------------------------------------
# Panoptic-FPN semantic head
# ----------------------------------------------------------------------------------------------
def _conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.GroupNorm(math.gcd(32, out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class PanopticFPNHead(nn.Module):
    """Semantic branch of Panoptic FPN over every level of a pyramid.

    Level i (reduction ``r_i``, ``n_i = log2(r_i / r_min)``) goes through ``max(1, n_i)`` stages of
    3x3 conv + GroupNorm + ReLU, each but the extra one of the finest level followed by 2x bilinear
    upsampling (to the exact size the next finer level has, so odd input sizes work); the results,
    all at the finest level's size, are summed and a 1x1 conv (with bias) predicts ``K`` channels.

    ``[(B, C_i, ceil(H / r_i), ceil(W / r_i))]_i -> (B, K, ceil(H / r_min), ceil(W / r_min))``.

    Args:
        in_channels: channels of each level.
        reductions: reduction of each level; every ``r_i / r_min`` must be a power of two.
        out_channels: ``K``.
        channels: width of the branch (128 in the paper).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        reductions: Sequence[int],
        out_channels: int,
        *,
        channels: int = 128,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(reductions) or not in_channels:
            raise ConfigError(
                f"PanopticFPNHead: expected one reduction per level, got {len(in_channels)} channel entries "
                f"and {len(reductions)} reductions"
            )
        self.base = min(reductions)
        self.num_up: list[int] = []
        for r in reductions:
            ratio = r // self.base
            if r % self.base != 0 or ratio & (ratio - 1):
                raise ConfigError(
                    f"PanopticFPNHead: level reductions {list(reductions)} are not power-of-two multiples "
                    f"of {self.base}"
                )
            self.num_up.append(ratio.bit_length() - 1)
        self.reductions = tuple(reductions)
        self.scale_heads = nn.ModuleList(
            nn.Sequential(*(_conv_gn_relu(c if k == 0 else channels, channels) for k in range(max(1, n))))
            for c, n in zip(in_channels, self.num_up, strict=True)
        )
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.scale_heads):
            raise ConfigError(
                f"PanopticFPNHead: expected {len(self.scale_heads)} feature maps, got {len(features)}"
            )
        finest = features[self.reductions.index(self.base)]
        h0, w0 = finest.shape[-2:]
        total: Tensor | None = None
        for f, stages, n in zip(features, self.scale_heads, self.num_up, strict=True):
            y = f
            for k, stage in enumerate(stages):
                y = stage(y)
                if k < n:
                    # the level at reduction base * 2^m has size ceil(size_finest / 2^m)
                    m = n - k - 1
                    size = (-(-h0 // 2**m), -(-w0 // 2**m))
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        assert total is not None
        return self.classifier(total)


# ----------------------------------------------------------------------------------------------
# Choosing a head for a backbone
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadSpec:
    """Which head to put on a backbone, and its options.

    Attributes:
        kind: ``"auto"`` (by backbone family, see :data:`AUTO_HEAD_KIND`), ``"hrnet"`` (fused levels +
            :class:`HRNetHead`), ``"aspp"`` (:class:`DeepLabHead` on the last level) or ``"fpn"``
            (:class:`PanopticFPNHead` over all levels). Every kind works on every backbone.
        aspp_dropout: dropout of the DeepLab head.
        fpn_channels: width of the Panoptic-FPN head.
    """

    kind: str = "auto"
    aspp_dropout: float = 0.5
    fpn_channels: int = 128

    def build(self, backbone: Backbone, out_channels: int) -> nn.Module:
        """The head for ``backbone`` predicting ``out_channels`` (see :func:`head_for_backbone`)."""
        kind = resolve_head_kind(backbone, self.kind)
        return HEAD_BUILDERS[kind](list(backbone.feature_info), out_channels, self)


def _build_hrnet(info: list[FeatureInfo], out_channels: int, spec: HeadSpec) -> nn.Module:
    return nn.Sequential(
        OrderedDict(fuse=FuseLevels(), head=HRNetHead(sum(f.channels for f in info), out_channels))
    )


def _build_aspp(info: list[FeatureInfo], out_channels: int, spec: HeadSpec) -> nn.Module:
    last = info[-1]
    return nn.Sequential(
        OrderedDict(
            select=SelectLevel(len(info) - 1),
            head=DeepLabHead(
                last.channels, out_channels, rates=aspp_rates(last.reduction), dropout=spec.aspp_dropout
            ),
        )
    )


def _build_fpn(info: list[FeatureInfo], out_channels: int, spec: HeadSpec) -> nn.Module:
    return PanopticFPNHead(
        [f.channels for f in info], [f.reduction for f in info], out_channels, channels=spec.fpn_channels
    )


#: head kind -> builder ``(feature_info, out_channels, spec) -> module`` taking the list of levels.
HEAD_BUILDERS: dict[str, Callable[[list[FeatureInfo], int, HeadSpec], nn.Module]] = {
    "hrnet": _build_hrnet,
    "aspp": _build_aspp,
    "fpn": _build_fpn,
}

#: backbone family -> the head its reference implementation uses (searched along the class's MRO).
#: A backbone of another family gets the fused ``"hrnet"`` head, which works on any list of levels.
AUTO_HEAD_KIND: dict[type[Backbone], str] = {HRNet: "hrnet", FPN: "fpn", ResNet: "aspp"}


def resolve_head_kind(backbone: Backbone, kind: str = "auto") -> str:
    """The concrete head kind for ``backbone`` (``kind`` itself unless it is ``"auto"``).

    Raises:
        ConfigError: ``kind`` is neither ``"auto"`` nor a key of :data:`HEAD_BUILDERS`.
    """
    if kind == "auto":
        for cls in type(backbone).__mro__:
            if cls in AUTO_HEAD_KIND:
                return AUTO_HEAD_KIND[cls]
        return "hrnet"
    if kind not in HEAD_BUILDERS:
        raise ConfigError(f"unknown head kind {kind!r}; valid: auto, {', '.join(sorted(HEAD_BUILDERS))}")
    return kind


def head_for_backbone(
    backbone: Backbone,
    out_channels: int,
    kind: str = "auto",
    *,
    aspp_dropout: float = 0.5,
    fpn_channels: int = 128,
) -> nn.Module:
    """A task head reading ``backbone``'s list of feature maps (channels from ``feature_info``).

    ``"auto"`` picks by backbone family: HRNet -> fused levels + :class:`HRNetHead`; ResNet ->
    :class:`DeepLabHead` on the last level with rates from its stride (:func:`aspp_rates`); FPN ->
    :class:`PanopticFPNHead`. The returned module maps ``list[Tensor]`` (the backbone output) to
    ``(B, out_channels, h, w)`` at the stride of the level(s) it reads.
    """
    return HeadSpec(kind=kind, aspp_dropout=aspp_dropout, fpn_channels=fpn_channels).build(
        backbone, out_channels
    )
