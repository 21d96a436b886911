"""Layers shared by the architectures: convolutional blocks and task heads.

* :mod:`~mtdense.models.layers.blocks`: ``ConvBNReLU``, torchvision ``BasicBlock``/``Bottleneck``,
  :func:`residual_block`, ``SqueezeExcitation``.
* :mod:`~mtdense.models.layers.heads`: ``HRNetHead``, ``DeepLabHead`` (ASPP), ``PanopticFPNHead`` and
  :func:`head_for_backbone`, which picks one from a backbone's ``feature_info``.
"""

from mtdense.models.layers.blocks import BasicBlock, Bottleneck, ConvBNReLU, SqueezeExcitation, residual_block
from mtdense.models.layers.heads import (
    ASPP,
    DeepLabHead,
    FuseLevels,
    HeadSpec,
    HRNetHead,
    PanopticFPNHead,
    SelectLevel,
    aspp_rates,
    head_for_backbone,
    resolve_head_kind,
)

__all__ = [
    "ASPP",
    "BasicBlock",
    "Bottleneck",
    "ConvBNReLU",
    "DeepLabHead",
    "FuseLevels",
    "HRNetHead",
    "HeadSpec",
    "PanopticFPNHead",
    "SelectLevel",
    "SqueezeExcitation",
    "aspp_rates",
    "head_for_backbone",
    "residual_block",
    "resolve_head_kind",
]
