"""Feature Pyramid Network on a ResNet trunk (MTI-Net's R18-FPN / R50-FPN backbones).

Lin, Dollár, Girshick, He, Hariharan, Belongie. "Feature Pyramid Networks for Object Detection",
CVPR 2017::

    @inproceedings{lin2017feature,
      title={Feature Pyramid Networks for Object Detection},
      author={Lin, Tsung-Yi and Doll{\\'a}r, Piotr and Girshick, Ross and He, Kaiming and
              Hariharan, Bharath and Belongie, Serge},
      booktitle={CVPR}, year={2017}}

Sec. 3 of the paper: a 1x1 lateral conv maps every trunk level C_i to ``d`` channels (d = 256); the
top-down pathway adds the nearest-neighbour upsampled coarser map, ``M_5 = L_5(C_5)``,
``M_i = L_i(C_i) + up(M_{i+1})``; a 3x3 conv on each merged map gives ``P_i`` ("to reduce the aliasing
effect of upsampling"). No non-linearities in these extra layers, as in the paper.

Parameter names: the trunk lives under ``body.`` with torchvision names (``body.conv1.weight``,
``body.layer1.0.conv1.weight``, ...), the pyramid under ``lateral.{i}`` and ``output.{i}`` (i = 0 for
P2). ``pretrained_target()`` is the trunk, so ``build_backbone("fpn_resnet50", pretrained=path)``
loads a torchvision ResNet-50 ``.pth`` into ``body`` and leaves the FPN layers at their
initialisation.

Choices: upsampling resizes to the exact size of the finer map (``F.interpolate(size=...)``), which
is the paper's ×2 for even sizes and stays correct for odd ones; lateral and output convs have a bias
and are initialised with Kaiming-uniform (a = 1) and zero bias, as Detectron/torchvision do.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.backbones._base import Backbone, FeatureInfo, register_backbone
from mtdense.backbones.resnet import resnet18, resnet34, resnet50, resnet101
from mtdense.errors import ConfigError

__all__ = ["FPN", "build_fpn_resnet", "fpn_resnet18", "fpn_resnet50"]

_RESNETS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101}


class FPN(Backbone):
    """FPN over any multi-level backbone ``body``; outputs P2..P5 (one per body level).

    ``(B, C_in, H, W) -> [(B, d, ⌈H/r_i⌉, ⌈W/r_i⌉)]`` with the body's reductions ``r_i`` (4, 8, 16, 32
    for a ResNet at output stride 32) and ``d = out_channels``.

    Args:
        body: the trunk; its ``feature_info`` gives the lateral input channels.
        out_channels: ``d``, the channels of every pyramid level (256 in the paper).
    """

    def __init__(self, *, body: Backbone, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.in_channels = body.in_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in body.channels())
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in body.channels()
        )
        self.feature_info = [
            FeatureInfo(channels=out_channels, reduction=r, module=f"output.{i}")
            for i, r in enumerate(body.reductions())
        ]
        for m in (*self.lateral, *self.output):
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.zeros_(m.bias)

    def pretrained_target(self) -> nn.Module:
        """ImageNet checkpoints are for the trunk."""
        return self.body.pretrained_target()

    def forward_levels(self, x: Tensor) -> list[Tensor]:
        feats = self.body.forward_levels(x)
        merged = self.lateral[-1](feats[-1])
        outs = [self.output[-1](merged)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[i](feats[i])
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            outs.append(self.output[i](merged))
        return outs[::-1]


def build_fpn_resnet(
    resnet: str = "resnet50", *, out_channels: int = 256, output_stride: int = 32, in_channels: int = 3
) -> FPN:
    """FPN on ``resnet`` (one of resnet18/34/50/101), e.g. ``build_fpn_resnet("resnet34")``."""
    if resnet not in _RESNETS:
        raise ConfigError(f"fpn trunk: unknown resnet {resnet!r}; valid: {', '.join(sorted(_RESNETS))}")
    body = _RESNETS[resnet](output_stride=output_stride, in_channels=in_channels)
    return FPN(body=body, out_channels=out_channels)


@register_backbone("fpn_resnet18")
def fpn_resnet18(*, out_channels: int = 256, output_stride: int = 32, in_channels: int = 3) -> FPN:
    """R18-FPN: P2..P5 with ``out_channels`` each."""
    return build_fpn_resnet(
        "resnet18", out_channels=out_channels, output_stride=output_stride, in_channels=in_channels
    )


@register_backbone("fpn_resnet50")
def fpn_resnet50(*, out_channels: int = 256, output_stride: int = 32, in_channels: int = 3) -> FPN:
    """R50-FPN: P2..P5 with ``out_channels`` each."""
    return build_fpn_resnet(
        "resnet50", out_channels=out_channels, output_stride=output_stride, in_channels=in_channels
    )
