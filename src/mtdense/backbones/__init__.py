"""Backbones: image -> list of multi-scale feature maps described by ``feature_info``.

Registered names (see :func:`list_backbones`): ``resnet18/34/50/101`` (torchvision names,
output stride 32/16/8), ``hrnet_w18_small_v2``, ``hrnet_w18``, ``hrnet_w48`` (official HRNet names),
``fpn_resnet18``, ``fpn_resnet50`` (ResNet under ``body.``). Build one with
``build_backbone(name, pretrained=path, **options)``.
"""

from mtdense.backbones import fpn, hrnet, resnet  # noqa: F401  (importing registers the builders)
from mtdense.backbones._base import (
    BACKBONES,
    Backbone,
    FeatureInfo,
    build_backbone,
    list_backbones,
    register_backbone,
)
from mtdense.backbones._pretrained import LoadReport, load_pretrained, read_state_dict
from mtdense.backbones.fpn import FPN
from mtdense.backbones.hrnet import HRNet, fuse_hrnet_features
from mtdense.backbones.resnet import BasicBlock, Bottleneck, ResNet

__all__ = [
    "BACKBONES",
    "FPN",
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "FeatureInfo",
    "HRNet",
    "LoadReport",
    "ResNet",
    "build_backbone",
    "fuse_hrnet_features",
    "list_backbones",
    "load_pretrained",
    "read_state_dict",
    "register_backbone",
]
