"""PAD-Net: multi-tasks guided prediction-and-distillation network.

Xu, Ouyang, Wang, Sebe, "PAD-Net: Multi-Tasks Guided Prediction-and-Distillation Network for
Simultaneous Depth Estimation and Scene Parsing", CVPR 2018 (seed 001)::

    @inproceedings{xu2018padnet,
      title={{PAD-Net}: Multi-Tasks Guided Prediction-and-Distillation Network for Simultaneous
             Depth Estimation and Scene Parsing},
      author={Xu, Dan and Ouyang, Wanli and Wang, Xiaogang and Sebe, Nicu},
      booktitle={CVPR}, year={2018}}

A front-end predicts every task (main and auxiliary) at 1/4 of the input resolution; a multi-modal
distillation module (:mod:`mtdense.models.layers.distillation`) refines the features of each main
task with messages from the other tasks; a decoder per main task makes the final prediction.

Two settings (``PADNetConfig.setting``):

``"paper"`` (seed 001, Secs. 3.2-3.5):
    * front-end (Sec. 3.2): the backbone's last level is enhanced by multi-scale aggregation: every
      earlier level goes through a 3x3 conv + BN + ReLU to ``agg_channels`` ("convolution ... to
      control the number of feature channels") and is resized bilinearly to the last level's size;
      all are concatenated with the last level. Use a dilated ResNet (``backbone.output_stride: 8``),
      as the paper does ("we also apply the dilated convolution strategy"), so that the front-end is
      at 1/8 and everything below lands at the resolutions the paper states;
    * intermediate predictions (Sec. 3.3): per task a deconvolution (x2) to ``N`` channels for main
      tasks and ``N/2`` for auxiliary ones (+ BN + ReLU), then a 1x1 score conv; the scores are
      resized bilinearly to 1/4 of the input. They are the outputs ``"initial/<task>"``;
    * distillation (Sec. 3.4): the predictions are first "transformed to feature maps with more
      channels via convolutional layers" (3x3 conv + BN + ReLU to the task's width, ``N`` or ``N/2``),
      then module A, B or C (``distillation: concat | message | attention``) at 1/4 resolution;
    * decoders (Sec. 3.5): two deconvolutions, each x2 in resolution and halving the channels
      (+ BN + ReLU), then a 1x1 score conv, resized bilinearly to the input size (a no-op for inputs
      divisible by 4 with an output-stride-8 backbone).

``"mtinet_hrnet"`` (the PAD-Net of the MTI-Net paper's NYUD/PASCAL comparisons, seed 002 Table 2,
and its authors' code):
    * the backbone levels fused at the finest one (HRNet: 18+36+72+144 = 270 channels at 1/4), then
      the authors' fuse layer, a 1x1 conv (with bias) + BN + ReLU keeping those channels; it is part
      of the shared front-end (phase 1 of the two-phase schedule trains it);
    * per task two Bottlenecks to ``channels`` = 256 (a 1x1 projection shortcut on the first) and a
      1x1 conv: the initial prediction ``"initial/<task>"`` (at 1/4, not resized);
    * distillation on those task features, by default MTI-Net's Eq. (1) per (target, source) pair
      (``"pairwise"``, bias-free 3x3 convs);
    * head per main task: two Bottlenecks + 1x1 conv, bilinear to the input size.

Choices where the paper is silent: every score conv is 1x1 (FCN's score layers); deconvolutions
are ``ConvTranspose2d(kernel 4, stride 2, padding 1)`` (an exact x2); BatchNorm + ReLU follow every
deconvolution and feature conv (the Caffe-era BN-free original predates them, but they are what
makes these layers trainable with Adam at our learning rates).

Outputs: ``{"initial/<task>": (B, K_t, ceil(H/4), ceil(W/4)) for every task incl. auxiliary,
"<main task>": (B, K_t, H, W)}``. The paper's loss weighting (Sec. 4.1: 0.8 on the intermediate
contour and normals predictions, 1 on the others) is ``loss.tag_weights: {initial/edge: 0.8,
initial/normals: 0.8}``. The paper's two-phase schedule (Sec. 4.1: first the front-end with scene
parsing only, then everything) is exposed by :meth:`PADNet.phase_parameters` and
:meth:`PADNet.phase_outputs` and run by the trainer with ``train.phase1_steps`` / ``train.phase1_lr``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from mtdense.backbones import FeatureInfo, fuse_hrnet_features
from mtdense.config.schema import ModelConfig
from mtdense.errors import ConfigError
from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import register_model
from mtdense.models.layers.blocks import Bottleneck, ConvBNReLU, residual_block
from mtdense.models.layers.distillation import DISTILLATION_MODULES, Distillation, build_distillation
from mtdense.models.stl_mtl import backbone_from_config, check_task_heads

__all__ = ["PADNet", "PADNetConfig", "build_padnet"]

Setting = Literal["paper", "mtinet_hrnet"]
DistillationName = Literal["concat", "message", "attention", "pairwise"]

#: Per setting: (default distillation, default width of the main-task features).
_SETTING_DEFAULTS: dict[str, tuple[str, int]] = {
    "paper": ("attention", 512),
    "mtinet_hrnet": ("pairwise", 256),
}


class PADNetConfig(ModelConfig):
    """Options of ``padnet``.

    Attributes:
        setting: ``"paper"`` (seed 001) or ``"mtinet_hrnet"`` (the MTI-Net paper's PAD-Net).
        distillation: ``concat`` (module A), ``message`` (B, Eq. 1), ``attention`` (C, Eqs. 2-3) or
            ``pairwise`` (MTI-Net Eq. 1); default ``attention`` for ``paper``, ``pairwise`` for
            ``mtinet_hrnet``. Filled in on validation, so a saved config shows the value used.
        channels: ``N``, the width of the main tasks' features (auxiliary: ``N/2`` in ``paper``,
            ``N`` in ``mtinet_hrnet``); default 512 for ``paper`` and 256 for ``mtinet_hrnet``.
        agg_channels: ``paper`` only: width each earlier backbone level is reduced to before the
            multi-scale aggregation of the front-end.
        pretrain_task: the task of phase 1 of the two-phase schedule (scene parsing in the paper).
    """

    name: str = "padnet"
    setting: Setting = "paper"
    distillation: DistillationName | None = None
    channels: int | None = Field(None, ge=4)
    agg_channels: int = Field(128, ge=1)
    pretrain_task: str = "semseg"

    @model_validator(mode="after")
    def _resolve_defaults(self) -> PADNetConfig:
        distillation, channels = _SETTING_DEFAULTS[self.setting]
        if self.distillation is None:
            self.distillation = distillation  # type: ignore[assignment]
        if self.channels is None:
            self.channels = channels
        if self.channels % 4:
            # paper: two halving deconvolutions; mtinet_hrnet: Bottlenecks expand by 4
            raise ValueError(f"channels must be a multiple of 4, got {self.channels}")
        return self


def _deconv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``: 4x4 transposed conv, stride 2, padding 1, + BN + ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MultiScaleAggregation(nn.Module):
    """PAD-Net's front-end aggregation (Sec. 3.2): enhance the last backbone level with the earlier ones.

    ``[(B, C_i, H_i, W_i)] -> (B, (L-1)*agg_channels + C_last, H_last, W_last)``.
    """

    def __init__(self, feature_info: Sequence[FeatureInfo], agg_channels: int) -> None:
        super().__init__()
        self.reduce = nn.ModuleList([ConvBNReLU(f.channels, agg_channels, 3) for f in feature_info[:-1]])
        self.out_channels = agg_channels * (len(feature_info) - 1) + feature_info[-1].channels

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        size = features[-1].shape[-2:]
        maps = [upsample_to(conv(f), size) for conv, f in zip(self.reduce, features[:-1], strict=True)]
        return torch.cat([*maps, features[-1]], dim=1)


class _PaperFrontEnd(nn.Module):
    """Aggregation, intermediate predictions and prediction-to-feature convs of the ``paper`` setting."""

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        *,
        cfg: PADNetConfig,
        heads: Mapping[str, int],
        aux: Sequence[str],
    ) -> None:
        super().__init__()
        assert cfg.channels is not None
        self.aggregate = MultiScaleAggregation(feature_info, cfg.agg_channels)
        width = {t: cfg.channels // 2 if t in aux else cfg.channels for t in heads}
        self.task_features = nn.ModuleDict({t: _deconv_bn_relu(self.aggregate.out_channels, width[t]) for t in heads})
        self.score = nn.ModuleDict({t: nn.Conv2d(width[t], k, 1) for t, k in heads.items()})
        # Sec. 3.4: "prediction maps ... are first transformed to feature maps with more channels"
        self.embed = nn.ModuleDict({t: ConvBNReLU(k, width[t], 3) for t, k in heads.items()})
        self.out_channels = width

    def shared(self) -> list[nn.Module]:
        return [self.aggregate]

    def branch(self, task: str) -> list[nn.Module]:
        return [self.task_features[task], self.score[task]]

    def forward(self, features: Sequence[Tensor], size: tuple[int, int]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        x = self.aggregate(features)
        preds = {t: upsample_to(self.score[t](f(x)), size) for t, f in self.task_features.items()}
        return preds, {t: self.embed[t](p) for t, p in preds.items()}


class _FusedFrontEnd(nn.Module):
    """Fused multi-level features, a fuse layer, two Bottlenecks and a 1x1 prediction per task (``mtinet_hrnet``).

    The fuse layer (``fuse``) is the MTI-Net authors' ``HighResolutionFuse``, which their PAD-Net
    config puts after the backbone: a 1x1 conv ``C -> C`` *with* bias, BatchNorm (momentum 0.1) and
    ReLU on the concatenated levels, ``C = sum`` of the backbone's ``feature_info`` channels (270 for
    HRNet-W18). The bias is redundant before BN but kept so that the parameter count (and a
    converted checkpoint) matches theirs: PAD-Net + N + E on HRNet-W18-small-v2 with the NYUD heads
    has 12,161,332 parameters in both.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        *,
        cfg: PADNetConfig,
        heads: Mapping[str, int],
        aux: Sequence[str],
    ) -> None:
        super().__init__()
        assert cfg.channels is not None
        c_in, c = sum(f.channels for f in feature_info), cfg.channels
        self.fuse = nn.Sequential(nn.Conv2d(c_in, c_in, 1), nn.BatchNorm2d(c_in), nn.ReLU(inplace=True))
        self.task_features = nn.ModuleDict(
            {t: nn.Sequential(residual_block(Bottleneck, c_in, c), residual_block(Bottleneck, c, c)) for t in heads}
        )
        self.score = nn.ModuleDict({t: nn.Conv2d(c, k, 1) for t, k in heads.items()})
        self.out_channels = {t: c for t in heads}

    def shared(self) -> list[nn.Module]:
        return [self.fuse]

    def branch(self, task: str) -> list[nn.Module]:
        return [self.task_features[task], self.score[task]]

    def forward(self, features: Sequence[Tensor], size: tuple[int, int]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        x = self.fuse(fuse_hrnet_features(features))
        feats = {t: f(x) for t, f in self.task_features.items()}
        return {t: self.score[t](f) for t, f in feats.items()}, feats


def _deconv_decoder(in_channels: int, out_channels: int, width: int) -> nn.Sequential:
    """Sec. 3.5: two x2 deconvolutions halving the channels, then a 1x1 score conv (``width`` unused)."""
    return nn.Sequential(
        _deconv_bn_relu(in_channels, in_channels // 2),
        _deconv_bn_relu(in_channels // 2, in_channels // 4),
        nn.Conv2d(in_channels // 4, out_channels, 1),
    )


def _bottleneck_decoder(in_channels: int, out_channels: int, width: int) -> nn.Sequential:
    """The MTI-Net authors' PAD-Net head: two Bottlenecks to ``width`` and a 1x1 conv."""
    return nn.Sequential(
        residual_block(Bottleneck, in_channels, width),
        residual_block(Bottleneck, width, width),
        nn.Conv2d(width, out_channels, 1),
    )


#: setting -> (front-end class, decoder factory ``(in_channels, out_channels, width)``).
_SETTINGS = {
    "paper": (_PaperFrontEnd, _deconv_decoder),
    "mtinet_hrnet": (_FusedFrontEnd, _bottleneck_decoder),
}


class PADNet(MultiTaskModel):
    """PAD-Net; see the module docstring for the two settings.

    Args:
        backbone: a :class:`mtdense.backbones.Backbone`.
        cfg: the validated :class:`PADNetConfig` (``distillation`` and ``channels`` resolved).
        heads: main task -> output channels (the distillation targets and final outputs).
        aux_heads: auxiliary task -> output channels (intermediate predictions only).

    ``forward(image)``: ``(B, 3, H, W)`` RGB in [0, 1] -> dict, see the module docstring.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        cfg: PADNetConfig,
        heads: Mapping[str, int],
        aux_heads: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(heads, aux_heads)
        check_task_heads(self.heads, self.aux_heads)
        assert cfg.distillation is not None and cfg.channels is not None
        self.backbone = backbone
        self.setting = cfg.setting
        self.pretrain_task = cfg.pretrain_task
        frontend_cls, decoder = _SETTINGS[cfg.setting]
        self.frontend = frontend_cls(backbone.feature_info, cfg=cfg, heads=self.all_heads, aux=list(self.aux_heads))
        self.distillation: Distillation = build_distillation(
            cfg.distillation, channels=self.frontend.out_channels, targets=list(self.heads)
        )
        c_out = self.distillation.out_channels
        self.decoders = nn.ModuleDict({t: decoder(c_out[t], k, cfg.channels) for t, k in self.heads.items()})

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        quarter = (math.ceil(size[0] / 4), math.ceil(size[1] / 4))
        preds, feats = self.frontend(self.backbone(x), quarter)
        out = {f"initial/{t}": p for t, p in preds.items()}
        distilled = self.distillation(feats)
        for t, decoder in self.decoders.items():
            out[t] = upsample_to(decoder(distilled[t]), size)
        return out

    def phase_outputs(self, phase: int) -> list[str] | None:
        """Output keys supervised in ``phase`` of the paper's two-phase schedule (Sec. 4.1).

        Phase 1: only ``"initial/<pretrain_task>"`` (the front-end with scene parsing); phase 2:
        ``None``, meaning every output.
        """
        self._check_phase(phase)
        return [f"initial/{self.pretrain_task}"] if phase == 1 else None

    def phase_parameters(self, phase: int) -> list[nn.Parameter]:
        """Parameters optimised in ``phase`` of the two-phase schedule (Sec. 4.1).

        Phase 1 ("we only optimize the front-end network with the scene parsing task"): the
        backbone, the front-end's shared aggregation and the ``pretrain_task`` branch that makes its
        intermediate prediction. Phase 2: every parameter.
        """
        self._check_phase(phase)
        if phase == 2:
            return list(self.parameters())
        modules = [self.backbone, *self.frontend.shared(), *self.frontend.branch(self.pretrain_task)]
        return [p for m in modules for p in m.parameters()]

    def _check_phase(self, phase: int) -> None:
        if phase not in (1, 2):
            raise ConfigError(f"padnet: phase must be 1 or 2, got {phase}")
        if phase == 1 and self.pretrain_task not in self.all_heads:
            raise ConfigError(
                f"padnet: model.pretrain_task {self.pretrain_task!r} is not one of the tasks {list(self.all_heads)}"
            )


@register_model("padnet", PADNetConfig)
def build_padnet(cfg: PADNetConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> PADNet:
    """Build PAD-Net from its config (backbone from ``cfg.backbone``)."""
    return PADNet(backbone_from_config(cfg.backbone), cfg=cfg, heads=heads, aux_heads=aux_heads)


assert set(DISTILLATION_MODULES) == set(get_args(DistillationName)), "DistillationName out of sync"
