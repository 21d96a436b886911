"""MTI-Net: multi-scale task interaction networks.

Vandenhende, Georgoulis, Van Gool, "MTI-Net: Multi-Scale Task Interaction Networks for Multi-Task
Learning", ECCV 2020 (seed 002)::

    @inproceedings{vandenhende2020mtinet,
      title={{MTI-Net}: Multi-Scale Task Interaction Networks for Multi-Task Learning},
      author={Vandenhende, Simon and Georgoulis, Stamatios and Van Gool, Luc},
      booktitle={ECCV}, year={2020}}

From a multi-scale backbone (HRNet, or an FPN; any backbone whose ``feature_info`` has one level per
used reduction), scales are processed from coarse to fine (1/32 -> 1/16 -> 1/8 -> 1/4):

1. **Initial task predictions** (Sec. 2.3, 3.1 "two basic residual blocks"): per scale ``s`` and per
   task (main and auxiliary) two BasicBlocks give the task features ``F_{t,s}`` (``C_s`` channels,
   ``C_s`` = the backbone level's width), and a 1x1 conv the initial prediction, output
   ``"initial/s<r>/<task>"`` at the scale's own resolution (deep supervision, same task weights as
   the final outputs, Sec. 3.1). At the coarsest scale the blocks read the backbone feature ``x_s``;
   at the others they read ``[x_s, up(FPM output of the previous scale)]`` (Sec. 2.4), the first
   block then having a 1x1 conv + BN projection shortcut (``C_s + C_{s'} -> C_s``). ``up`` is bilinear
   to the exact size of ``x_s`` (x2 for consecutive scales).
2. **Feature propagation module** (FPM, Sec. 2.4, Fig. 3) between consecutive scales:
   :class:`FeaturePropagation`.
3. **Multi-scale multi-modal distillation** (Sec. 2.3, Eq. 1) at every scale:
   :class:`mtdense.models.layers.distillation.PairwiseGatedDistillation`; targets are the main
   tasks, sources all tasks. (The FPM output is only propagated; distillation refines ``F_{t,s}``.)
4. **Feature aggregation** (Sec. 2.5, supplementary A.2) per main task over the distilled features
   of all used scales: for HRNet, bilinear upsampling to the finest scale, concatenation and the
   HRNet head (1x1 conv + BN + ReLU, 1x1 conv); for FPN, the semantic branch of Panoptic FPN. The
   result is resized bilinearly to the input size and is the output ``"<task>"``.

Ablation switches (``MTINetConfig``): ``scales`` (Table 3: which backbone reductions are used; the
coarsest used one starts the chain), ``fpm`` (Table 2: without it every scale works in isolation,
"In Section 2.3 actions at each scale were performed in isolation", Sec. 2.4), auxiliary tasks come
from ``data.aux_tasks`` (Table 2: none, N, N+E).

Difference with the authors' code (followed: the paper): the FPM's task-attention softmax. The paper
applies it "along the task dimension" (for every channel and pixel, the N task weights sum to 1); the
authors' code reshapes the concatenated ``(B, N*C, H, W)`` tensor to ``(B, C, N, H, W)`` before the
softmax over dim 2, which, because the concatenation is task-major, normalises groups of N adjacent
channels of mostly one task. We reshape to ``(B, N, C, H, W)`` and normalise over the task axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from mtdense.backbones import FPN, Backbone, FeatureInfo
from mtdense.config.schema import ModelConfig
from mtdense.errors import ConfigError, check_shape
from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import register_model
from mtdense.models.layers.blocks import BasicBlock, SqueezeExcitation, residual_block
from mtdense.models.layers.distillation import PairwiseGatedDistillation
from mtdense.models.layers.heads import HEAD_BUILDERS, HeadSpec
from mtdense.models.stl_mtl import backbone_from_config, check_task_heads

__all__ = ["FeaturePropagation", "InitialTaskPrediction", "MTINet", "MTINetConfig", "build_mtinet"]

#: backbone family -> feature aggregation (supplementary A.2); other families get ``"hrnet"``.
_AUTO_AGGREGATION: dict[type[Backbone], str] = {FPN: "fpn"}


class MTINetConfig(ModelConfig):
    """Options of ``mtinet``.

    Attributes:
        scales: backbone reductions used (Table 3), any non-empty subset of the backbone's, e.g.
            ``[4, 8]``; order does not matter (processing is always coarse to fine).
        fpm: use the feature propagation module between scales (Table 2 "w/ FPM").
        aggregation: ``"hrnet"`` (concat + HRNet head), ``"fpn"`` (Panoptic-FPN semantic branch) or
            ``"auto"`` (``fpn`` on FPN backbones, ``hrnet`` otherwise, as supplementary A.2).
        se_reduction: reduction ratio of the FPM's squeeze-and-excitation blocks (16).
        fpn_channels: width of the Panoptic-FPN aggregation (128 in Panoptic FPN).
    """

    name: str = "mtinet"
    scales: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    fpm: bool = True
    aggregation: Literal["auto", "hrnet", "fpn"] = "auto"
    se_reduction: int = Field(16, ge=1)
    fpn_channels: int = Field(128, ge=1)

    @field_validator("scales")
    @classmethod
    def _unique_scales(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 1:
            raise ValueError(f"scales must be distinct positive reductions, got {v}")
        return v


class InitialTaskPrediction(nn.Module):
    """Task features and initial predictions at one scale (Sec. 2.3 and 3.1).

    Per task ``t``: ``F_t = BasicBlock(BasicBlock(x_t))`` with ``x_t = x`` or ``[x, propagated_t]``,
    ``(B, in_channels, h, w) -> (B, channels, h, w)``; prediction ``conv1x1(F_t)``,
    ``(B, K_t, h, w)``.

    Args:
        heads: every task (main and auxiliary) -> output channels ``K_t``.
        in_channels: width of the blocks' input (``C_s``, or ``C_s + C_{s'}`` with propagation).
        channels: ``C_s``.
    """

    def __init__(self, heads: Mapping[str, int], *, in_channels: int, channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.blocks = nn.ModuleDict(
            {
                t: nn.Sequential(
                    residual_block(BasicBlock, in_channels, channels), residual_block(BasicBlock, channels, channels)
                )
                for t in heads
            }
        )
        self.predict = nn.ModuleDict({t: nn.Conv2d(channels, k, 1) for t, k in heads.items()})

    def forward(
        self, x: Tensor, propagated: Mapping[str, Tensor] | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(task features, initial predictions)``, both ``{task: tensor}``.

        Args:
            x: backbone feature ``(B, C_s, h, w)``.
            propagated: ``{task: (B, C_{s'}, h', w')}`` from the previous scale's FPM (resized here to
                ``(h, w)``), or ``None`` at the coarsest scale / without FPM.
        """
        if propagated is None:
            feats = {t: block(x) for t, block in self.blocks.items()}
        else:
            size = x.shape[-2:]
            feats = {t: block(torch.cat([x, upsample_to(propagated[t], size)], 1)) for t, block in self.blocks.items()}
        return feats, {t: self.predict[t](f) for t, f in feats.items()}


class FeaturePropagation(nn.Module):
    """Feature propagation module (FPM), MTI-Net Sec. 2.4 and Fig. 3.

    Input: ``N`` task features ``F_t`` of shape ``(B, C, H, W)``. Feature harmonisation: the
    concatenation ``X`` (``N*C`` channels, task-major) goes through the non-linear function ``f`` =
    BasicBlock(``N*C -> N*C/4``) -> BasicBlock(``N*C/4``) -> 1x1 conv (``-> N*C``) (supplementary A.2:
    "two basic residual blocks that aggressively reduce the number of channels followed by a 1x1
    convolutional layer"); ``f(X)`` is split into ``N`` chunks of ``C`` channels and a softmax along
    the task dimension gives the task attention ``A`` (``A[:, :, c, y, x]`` sums to 1 over tasks);
    the attended features ``A * X`` (concatenated again) go through BasicBlock(``N*C -> C``): the shared
    representation ``S``. Refinement: ``out_t = SE_t(S) + F_t`` with a squeeze-and-excitation block per
    task (reduction 16).

    Args:
        tasks: the ``N`` tasks (main and auxiliary), in concatenation order.
        channels: ``C``.
        se_reduction: SE reduction ratio.
    """

    def __init__(self, tasks: Sequence[str], channels: int, *, se_reduction: int = 16) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.channels = channels
        n_c = len(self.tasks) * channels
        hidden = max(1, n_c // 4)
        self.harmonize = nn.Sequential(
            residual_block(BasicBlock, n_c, hidden),
            residual_block(BasicBlock, hidden, hidden),
            nn.Conv2d(hidden, n_c, 1),
        )
        self.reduce = residual_block(BasicBlock, n_c, channels)
        self.se = nn.ModuleDict({t: SqueezeExcitation(channels, se_reduction) for t in self.tasks})

    def _concat(self, features: Mapping[str, Tensor]) -> Tensor:
        for t in self.tasks:
            f = features.get(t)
            check_shape(
                f"FeaturePropagation input {t!r}",
                (0,) if f is None else f.shape,
                f"(B, {self.channels}, H, W)",
                f is not None and f.ndim == 4 and f.shape[1] == self.channels,
            )
        return torch.cat([features[t] for t in self.tasks], dim=1)

    def attention(self, features: Mapping[str, Tensor]) -> Tensor:
        """The task attention ``A``, ``(B, N, C, H, W)``, summing to 1 over dim 1 (the tasks)."""
        x = self._concat(features)
        return self._attention(x)

    def _attention(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        logits = self.harmonize(x).reshape(b, len(self.tasks), self.channels, h, w)
        return torch.softmax(logits, dim=1)

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Refined task features ``{t: (B, C, H, W)}`` to propagate to the next finer scale."""
        x = self._concat(features)
        b, n_c, h, w = x.shape
        attended = (self._attention(x) * x.reshape(b, len(self.tasks), self.channels, h, w)).reshape(b, n_c, h, w)
        shared = self.reduce(attended)
        return {t: self.se[t](shared) + features[t] for t in self.tasks}


class MTINet(MultiTaskModel):
    """MTI-Net; see the module docstring.

    Args:
        backbone: a multi-scale :class:`mtdense.backbones.Backbone`.
        cfg: the validated :class:`MTINetConfig`.
        heads: main task -> output channels.
        aux_heads: auxiliary task -> output channels (initial predictions only).

    ``forward(image)``: ``(B, 3, H, W)`` RGB in [0, 1] -> ``{"<main task>": (B, K, H, W),
    "initial/s<r>/<task>": (B, K, ceil(H/r), ceil(W/r)) for every used reduction r and every task}``.

    Raises:
        ConfigError: a scale that is not exactly one level of the backbone.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        cfg: MTINetConfig,
        heads: Mapping[str, int],
        aux_heads: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(heads, aux_heads)
        check_task_heads(self.heads, self.aux_heads)
        self.backbone = backbone
        info = list(backbone.feature_info)
        reductions = [f.reduction for f in info]
        levels = {}
        for s in cfg.scales:
            found = [i for i, r in enumerate(reductions) if r == s]
            if len(found) != 1:
                raise ConfigError(
                    f"model.scales: reduction {s} must be exactly one level of backbone {cfg.backbone.name!r}, "
                    f"whose levels have reductions {reductions}"
                )
            levels[s] = found[0]
        #: used reductions, coarse to fine, and the backbone level of each
        self.scales = sorted(levels, reverse=True)
        self._levels = [levels[s] for s in self.scales]
        self.use_fpm = cfg.fpm
        tasks = self.all_heads
        width = {s: info[levels[s]].channels for s in self.scales}

        self.initial = nn.ModuleDict()
        self.fpm = nn.ModuleDict()
        self.distillation = nn.ModuleDict()
        for i, s in enumerate(self.scales):
            key = f"s{s}"
            propagated = width[self.scales[i - 1]] if cfg.fpm and i > 0 else 0
            self.initial[key] = InitialTaskPrediction(tasks, in_channels=width[s] + propagated, channels=width[s])
            if cfg.fpm and i < len(self.scales) - 1:
                self.fpm[key] = FeaturePropagation(list(tasks), width[s], se_reduction=cfg.se_reduction)
            self.distillation[key] = PairwiseGatedDistillation({t: width[s] for t in tasks}, list(self.heads))

        finest_first = self.scales[::-1]
        agg_info = [FeatureInfo(width[s], s, f"distillation.s{s}") for s in finest_first]
        kind = cfg.aggregation
        if kind == "auto":
            kind = next((_AUTO_AGGREGATION[c] for c in type(backbone).__mro__ if c in _AUTO_AGGREGATION), "hrnet")
        spec = HeadSpec(kind=kind, fpn_channels=cfg.fpn_channels)
        self.aggregation_kind = kind
        self.aggregation = nn.ModuleDict({t: HEAD_BUILDERS[kind](agg_info, k, spec) for t, k in self.heads.items()})

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        levels = self.backbone(x)
        out: dict[str, Tensor] = {}
        distilled: list[dict[str, Tensor]] = []
        propagated = None
        for s, level in zip(self.scales, self._levels):
            key = f"s{s}"
            feats, preds = self.initial[key](levels[level], propagated)
            out.update({f"initial/{key}/{t}": p for t, p in preds.items()})
            propagated = self.fpm[key](feats) if key in self.fpm else None
            distilled.append(self.distillation[key](feats))
        for t, head in self.aggregation.items():
            out[t] = upsample_to(head([d[t] for d in reversed(distilled)]), size)
        return out


@register_model("mtinet", MTINetConfig)
def build_mtinet(cfg: MTINetConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> MTINet:
    """Build MTI-Net from its config (backbone from ``cfg.backbone``)."""
    return MTINet(backbone_from_config(cfg.backbone), cfg=cfg, heads=heads, aux_heads=aux_heads)
