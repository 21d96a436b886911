"""The "3-ways" multi-task decoder with a cross-task exchange: xTAM/mTEB, PAD-Net, or none.

Decoder of Hoyer, Dai, Chen, Köring, Saha, Van Gool, "Three Ways to Improve Semantic Segmentation with
Self-Supervised Depth Estimation", CVPR 2021 ("3-ways"), used by Lopes et al., WACV 2023 (seed 004,
Sec. 4.1 "Architecture") for their model and for the 3-ways_PAD-Net baseline; see
:mod:`mtdense.models.xtam` for the seed's BibTeX.

Architecture (one registered name, ``threeways``; ``exchange`` picks the Table 1-2 row):

* shared encoder: the backbone (the paper: ResNet-101 at output stride 16, ``backbone.output_stride:
  16``, layer4 dilated);
* one decoder per task (main and auxiliary), each: ASPP on the last backbone level (DeepLabv3: 1x1,
  three 3x3 atrous branches at rates 6/12/18 for output stride 16 (:func:`aspp_rates`), image pooling,
  ``aspp_channels`` wide with BN + ReLU, 1x1 projection, dropout 0.5), then five upsampling steps
  ``i = 4, 3, 2, 1, 0`` (monodepth2's decoder, which 3-ways extends): reflection-padded 3x3 conv +
  ELU to ``decoder_channels[i]``, nearest resize to ``1/2^i`` of the input (a no-op when the map is
  already there: with output stride 16 there is no upsampling between scales 4 and 3), concatenation
  of the encoder level at that stride (skip), a second reflection-padded 3x3 conv + ELU (no BN, as
  the authors' code). ``decoder_channels = [64, 128, 128, 256, 256]`` (scale 0 first);
* after step ``i`` for every ``i`` in ``exchange_scales`` the tasks' features go through the exchange
  block of that scale: ``xtam`` -> :class:`~mtdense.models.xtam.MTEB` (Eq. 5; ``downscale`` ``s``,
  ``fusion``, ``attention``); ``padnet`` -> PAD-Net's multi-modal distillation
  (:mod:`~mtdense.models.layers.distillation`, ``padnet_distillation``); ``none`` -> nothing;
* supervision (Sec. 3.2.2): before every exchange block a 1x1 side output per task, keyed
  ``"scale<i>/<task>"`` at ``1/2^i`` of the input (the task's loss resizes it), and the final 1x1
  output after step 0 at the input size. With ``exchange: none`` the side outputs stay, so that every
  row of Tables 1-2 is supervised identically and only the exchange differs.

Rows of Tables 1-2 on this one decoder: STL = one task, ``exchange: none``; MTL = all tasks,
``exchange: none``; 3-ways_PAD-Net = ``exchange: padnet`` at ``exchange_scales: [2]`` (the authors'
code places it at 1/4 resolution); ours = ``exchange: xtam`` at ``exchange_scales: [1]`` with ``s = 4``
(the paper's best placement, Table 3). (The "PAD-Net" row of the paper is the MTL-survey decoder,
:mod:`mtdense.models.padnet`.)

Choices and deviations, where the papers are silent or our contracts differ:

* the ResNet stem (1/2 resolution, 64 channels) is not a published backbone level (levels start at
  stride 4, ``feature_info``), so scale 1 has no encoder skip; other skips are the backbone levels at
  stride ``2^i`` (with output stride 16 the coarsest step 4 takes layer3, as the authors' code);
  any backbone whose last level is at stride 16 or 32 works;
* ASPP is part of each task's decoder ("one decoder per task");
* ``downscale: null`` uses the authors' per-scale ``s``: 1, 1, 2, 4, 8 at scales 4..0 (``s = 4`` at
  scale 1, the paper's setting);
* ``padnet_distillation: pairwise`` (MTI-Net Eq. 1, source-gated: ``f_i + sum_j conv(f_j) *
  sigmoid(conv(f_j))``) is the PAD-Net module of the MTL survey code that 3-ways_PAD-Net uses; the
  seed describes PAD-Net's exchange as this cross-task self-attention (Sec. 3.1.2, Eq. 3 cites it).
  PAD-Net's own modules (``message``, ``attention``) can be chosen instead;
* the authors average the side-output and final losses; our engine sums them (``loss.tag_weights``
  scales the side outputs): with Adam the factor 2 only matters through gradient clipping;
* inputs are normalised with the ImageNet mean and std (the engine's contract), not the authors'
  ``(x - 0.45) / 0.225``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from mtdense.backbones import Backbone, FeatureInfo
from mtdense.config.schema import ModelConfig
from mtdense.errors import ConfigError
from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import register_model
from mtdense.models.layers.distillation import build_distillation
from mtdense.models.layers.heads import ASPP, aspp_rates
from mtdense.models.stl_mtl import backbone_from_config, check_task_heads
from mtdense.models.xtam import MTEB

__all__ = ["ThreeWaysConfig", "ThreeWaysDecoder", "ThreeWaysNet", "build_threeways", "default_downscale"]

NUM_SCALES = 5


def default_downscale(scale: int) -> int:
    """The authors' ``s`` of xTAM at decoder ``scale``: ``max(1, 2^(3 - scale))`` (4 at scale 1)."""
    return max(1, 2 ** (3 - scale))


class ThreeWaysConfig(ModelConfig):
    """Options of ``threeways``.

    Attributes:
        exchange: ``xtam`` (mTEB, seed 004), ``padnet`` (3-ways_PAD-Net) or ``none`` (MTL / STL).
        exchange_scales: decoder scales (0 = input resolution ... 4) with an exchange block and, before
            it, the side outputs; the paper's best is ``[1]`` (Table 3).
        decoder_channels: width of decoder scales 0..4.
        aspp_channels: ASPP width.
        aspp_dropout: dropout after the ASPP projection.
        downscale: xTAM's ``s`` at every exchange scale; ``null``: :func:`default_downscale`.
        fusion: mTEB fusion, Table 4a.
        attention: xTAM correlation type, Table 4b.
        padnet_distillation: the distillation module of ``exchange: padnet``.
    """

    name: str = "threeways"
    exchange: Literal["none", "padnet", "xtam"] = "xtam"
    exchange_scales: list[int] = Field(default_factory=lambda: [1])
    decoder_channels: list[int] = Field(
        default_factory=lambda: [64, 128, 128, 256, 256], min_length=NUM_SCALES, max_length=NUM_SCALES
    )
    aspp_channels: int = Field(256, ge=1)
    aspp_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    downscale: int | None = Field(None, ge=1)
    fusion: Literal["add", "prod", "concat"] = "add"
    attention: Literal["spatial", "channel", "both"] = "spatial"
    padnet_distillation: Literal["pairwise", "message", "attention"] = "pairwise"

    @model_validator(mode="after")
    def _check(self) -> ThreeWaysConfig:
        bad = [s for s in self.exchange_scales if not 0 <= s < NUM_SCALES]
        if bad or len(set(self.exchange_scales)) != len(self.exchange_scales):
            raise ValueError(f"exchange_scales: expected distinct scales in 0..4, got {self.exchange_scales}")
        self.exchange_scales = sorted(self.exchange_scales, reverse=True)  # decoding order
        if any(c < 1 for c in self.decoder_channels):
            raise ValueError(f"decoder_channels: expected positive widths, got {self.decoder_channels}")
        odd = [s for s in self.exchange_scales if self.decoder_channels[s] % 2]
        if self.exchange == "xtam" and odd:
            raise ValueError(
                f"decoder_channels: xTAM halves the channels (Eq. 3), so scales {odd} need an even width, "
                f"got {[self.decoder_channels[s] for s in odd]}"
            )
        return self


class _UpConv(nn.Sequential):
    """3x3 conv with reflection padding + ELU (monodepth2's ``ConvBlock``), no BN."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3), nn.ELU(inplace=True))


def _skip_levels(info: Sequence[FeatureInfo]) -> dict[int, int]:
    """``{decoder scale i: backbone level index}`` for the levels (all but the last) at stride ``2^i``."""
    out: dict[int, int] = {}
    for idx, f in enumerate(info[:-1]):
        scale = int(math.log2(f.reduction)) if f.reduction > 0 else -1
        if 2**scale == f.reduction and 0 <= scale < NUM_SCALES:
            out[scale] = idx  # several levels at one stride: the deepest
    return out


class ThreeWaysDecoder(nn.Module):
    """One task's decoder: ASPP on the last level and five upsampling steps (see the module docstring).

    Call :meth:`stem` once, then :meth:`step` for ``i = 4 .. 0``; each returns ``(B, channels[i],
    ceil(H / 2^i), ceil(W / 2^i))``.
    """

    def __init__(
        self, info: Sequence[FeatureInfo], *, channels: Sequence[int], aspp_channels: int, aspp_dropout: float
    ) -> None:
        super().__init__()
        last = info[-1]
        if last.reduction not in (16, 32):
            raise ConfigError(
                f"model threeways: the backbone's last level must be at stride 16 or 32 (the decoder starts at "
                f"1/16), got {last.reduction}; for ResNet set model.backbone.output_stride to 16 or 32"
            )
        self.skips = _skip_levels(info)
        self.aspp = ASPP(last.channels, rates=aspp_rates(last.reduction), channels=aspp_channels, dropout=aspp_dropout)
        widths = [aspp_channels, *reversed(channels)]  # input width of steps 4..0
        self.first = nn.ModuleList()
        self.second = nn.ModuleList()
        for i in range(NUM_SCALES - 1, -1, -1):
            c_in, c = widths[NUM_SCALES - 1 - i], channels[i]
            skip = info[self.skips[i]].channels if i in self.skips else 0
            self.first.append(_UpConv(c_in, c))
            self.second.append(_UpConv(c + skip, c))

    def stem(self, features: Sequence[Tensor]) -> Tensor:
        return self.aspp(features[-1])

    def step(self, i: int, x: Tensor, features: Sequence[Tensor], *, size: tuple[int, int]) -> Tensor:
        """Decoder step ``i`` on ``x``; ``size`` is the input image's ``(H, W)``."""
        k = NUM_SCALES - 1 - i
        x = self.first[k](x)
        target = (math.ceil(size[0] / 2**i), math.ceil(size[1] / 2**i))
        if x.shape[-2:] != target:
            x = F.interpolate(x, size=target, mode="nearest")
        if i in self.skips:
            x = torch.cat([x, features[self.skips[i]]], dim=1)
        return self.second[k](x)


class ThreeWaysNet(MultiTaskModel):
    """Shared encoder, one :class:`ThreeWaysDecoder` per task, exchange blocks between them.

    ``forward(image (B, 3, H, W) in [0, 1])`` returns ``{task: (B, K, H, W)}`` per main task,
    ``{"aux/<task>": (B, K, H, W)}`` per auxiliary task and ``{"scale<i>/<task>": (B, K, ceil(H/2^i),
    ceil(W/2^i))}`` per task and exchange scale ``i`` (before the exchange).

    Args:
        backbone: the shared encoder.
        cfg: the validated :class:`ThreeWaysConfig`.
        heads: main task -> output channels.
        aux_heads: auxiliary task -> output channels.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        cfg: ThreeWaysConfig,
        heads: Mapping[str, int],
        aux_heads: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(heads, aux_heads)
        check_task_heads(self.heads, self.aux_heads)
        tasks = list(self.all_heads)  # fixed order: data.tasks then data.aux_tasks
        if cfg.exchange != "none" and len(tasks) < 2:
            raise ConfigError(
                f"model threeways: exchange {cfg.exchange!r} needs at least two tasks, got {tasks}; "
                "use exchange: none for a single-task network"
            )
        self.backbone = backbone
        self.tasks = tuple(tasks)
        self.exchange = cfg.exchange
        self.exchange_scales = tuple(cfg.exchange_scales)
        ch = cfg.decoder_channels
        info = list(backbone.feature_info)
        self.decoders = nn.ModuleDict(
            {
                t: ThreeWaysDecoder(info, channels=ch, aspp_channels=cfg.aspp_channels, aspp_dropout=cfg.aspp_dropout)
                for t in tasks
            }
        )
        self.side = nn.ModuleDict(
            {
                f"scale{s}": nn.ModuleDict({t: nn.Conv2d(ch[s], k, 1) for t, k in self.all_heads.items()})
                for s in self.exchange_scales
            }
        )
        self.blocks = nn.ModuleDict(
            {f"scale{s}": _EXCHANGES[cfg.exchange](cfg, tasks, ch[s], s) for s in self.exchange_scales}
        )
        self.final = nn.ModuleDict({t: nn.Conv2d(ch[0], k, 1) for t, k in self.all_heads.items()})

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:
        size = (x.shape[-2], x.shape[-1])
        features = self.backbone(x)
        feats = {t: d.stem(features) for t, d in self.decoders.items()}
        out: dict[str, Tensor] = {}
        for i in range(NUM_SCALES - 1, -1, -1):
            feats = {t: self.decoders[t].step(i, f, features, size=size) for t, f in feats.items()}
            tag = f"scale{i}"
            if tag in self.blocks:
                out.update({f"{tag}/{t}": head(feats[t]) for t, head in self.side[tag].items()})
                feats = self.blocks[tag](feats)
        for t, head in self.final.items():
            out[t if t in self.heads else f"aux/{t}"] = upsample_to(head(feats[t]), size)
        return out

    def exchange_param_count(self) -> int:
        """Parameters of all exchange blocks (Table 3's "Param." column, in units)."""
        return sum(p.numel() for p in self.blocks.parameters() if p.requires_grad)


class _NoExchange(nn.Module):
    """``exchange: none``: the identity on the task features (no parameters)."""

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return dict(features)


def _xtam_block(cfg: ThreeWaysConfig, tasks: Sequence[str], channels: int, scale: int) -> nn.Module:
    s = cfg.downscale if cfg.downscale is not None else default_downscale(scale)
    return MTEB(tasks, channels, downscale=s, fusion=cfg.fusion, attention=cfg.attention)


def _padnet_block(cfg: ThreeWaysConfig, tasks: Sequence[str], channels: int, scale: int) -> nn.Module:
    return build_distillation(cfg.padnet_distillation, channels={t: channels for t in tasks}, targets=list(tasks))


def _no_block(cfg: ThreeWaysConfig, tasks: Sequence[str], channels: int, scale: int) -> nn.Module:
    return _NoExchange()


#: exchange -> builder ``(cfg, tasks, channels, scale) -> module({task: map}) -> {task: map}``.
_EXCHANGES = {"xtam": _xtam_block, "padnet": _padnet_block, "none": _no_block}


@register_model("threeways", ThreeWaysConfig)
def build_threeways(cfg: ThreeWaysConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> ThreeWaysNet:
    """Build the 3-ways decoder network (backbone from ``cfg.backbone``)."""
    return ThreeWaysNet(backbone_from_config(cfg.backbone), cfg=cfg, heads=heads, aux_heads=aux_heads)
