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
Also, the authors upsample the FPM output with ``scale_factor=2``; we resize to the exact size of the
finer backbone level, so odd input sizes work.

Speed (same equations, fewer and larger operations): the per-task BasicBlocks of a scale run as
grouped convolutions over the task-stacked features (:class:`TaskBatchedBasicBlock`; the stacked
tensor is also the FPM's concatenated input); Eq. (1) runs one convolution per source task instead
of two per (target, source) pair (:mod:`mtdense.models.layers.distillation`); the HRNet aggregation
projects each scale before upsampling (:class:`MultiScaleHRNetHead`, about 8x fewer multiply-adds
in its first layer). Parameter names therefore differ from the authors' checkpoints. Everything
keeps the channels-last layout when the model and input are channels-last (reshapes only split or
merge the channel dimension).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from mtdense.backbones import FPN, Backbone, FeatureInfo
from mtdense.config.schema import ModelConfig
from mtdense.errors import ConfigError, check_shape
from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import register_model
from mtdense.models.layers.blocks import BasicBlock, SqueezeExcitation, residual_block
from mtdense.models.layers.distillation import PairwiseGatedDistillation
from mtdense.models.layers.heads import HEAD_BUILDERS, HeadSpec, HRNetHead
from mtdense.models.stl_mtl import backbone_from_config, check_task_heads

__all__ = [
    "FeaturePropagation",
    "InitialTaskPrediction",
    "TaskBatchedBasicBlock",
    "MTINet",
    "MTINetConfig",
    "MultiScaleHRNetHead",
    "build_mtinet",
]

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


def _stack_shape(x: Tensor, tasks: int) -> tuple[int, int, int, int, int]:
    b, c, h, w = x.shape
    return b, tasks, c // tasks, h, w


def _uniform_init(conv: nn.Conv2d, fan_in: int) -> None:
    # PyTorch's default conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), with the fan-in of the
    # per-task conv this part belongs to, so a batched block starts like T separate blocks
    bound = fan_in**-0.5
    nn.init.uniform_(conv.weight, -bound, bound)


class TaskBatchedBasicBlock(nn.Module):
    """``T`` independent torchvision BasicBlocks, one per task, evaluated together.

    Task ``t``'s block is ``BasicBlock(C_x + C_u -> C)`` on the concatenation ``[x, u_t]`` of a map
    ``x`` shared by all tasks (the backbone feature) and the task's own map ``u_t``: conv3x3 + BN +
    ReLU, conv3x3 + BN, plus the shortcut (identity when ``C_x + C_u == C``, otherwise 1x1 conv + BN,
    torchvision's ``downsample``), ReLU. All tasks run at once, which is the same computation:

    * a conv of a concatenation is the sum of convs of its parts, ``W_t [x, u_t] = W_t^x x + W_t^u u_t``;
      ``W^x`` of all tasks is one conv ``C_x -> T*C`` (``x`` is read once) and ``W^u`` a grouped conv
      (``groups=T``) on the task-stacked ``u``;
    * the other convs are grouped convs, and ``BatchNorm2d(T*C)`` normalises each channel separately,
      i.e. is ``T`` independent ``BatchNorm2d(C)``.

    Task features travel *stacked*: ``(B, T*C, H, W)``, task-major (channels ``t*C .. (t+1)*C - 1`` are
    task ``t``'s), which is also the FPM's concatenated input. Fewer, larger kernels are markedly
    faster on CPU than ``4*T`` small ones. Initialisation matches ``T`` separate blocks (PyTorch's
    default uniform bound from the per-task fan-in).

    ``forward(x, u)``: ``x`` ``(B, C_x, H, W)`` or ``None`` when ``C_x == 0``; ``u`` ``(B, T*C_u, H, W)``
    or ``None`` when ``C_u == 0``; returns ``(B, T*C, H, W)``.
    """

    def __init__(self, tasks: int, *, shared_channels: int, task_channels: int, out_channels: int) -> None:
        super().__init__()
        if shared_channels + task_channels == 0:
            raise ConfigError("TaskBatchedBasicBlock: needs a shared or a per-task input")
        self.num_tasks = tasks
        self.shared_channels, self.task_channels, self.out_channels = (
            shared_channels,
            task_channels,
            out_channels,
        )
        c_in, c_out = shared_channels + task_channels, tasks * out_channels
        self.conv1_shared = nn.Conv2d(shared_channels, c_out, 3, padding=1, bias=False) if shared_channels else None
        self.conv1_task = (
            nn.Conv2d(tasks * task_channels, c_out, 3, padding=1, groups=tasks, bias=False) if task_channels else None
        )
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, groups=tasks, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.project = c_in != out_channels
        self.down_shared = self.down_task = self.down_bn = None
        if self.project:
            if shared_channels:
                self.down_shared = nn.Conv2d(shared_channels, c_out, 1, bias=False)
            if task_channels:
                self.down_task = nn.Conv2d(tasks * task_channels, c_out, 1, groups=tasks, bias=False)
            self.down_bn = nn.BatchNorm2d(c_out)
        for conv, k in (
            (self.conv1_shared, 3),
            (self.conv1_task, 3),
            (self.down_shared, 1),
            (self.down_task, 1),
        ):
            if conv is not None:
                _uniform_init(conv, c_in * k * k)

    def _split_conv(
        self, x: Tensor | None, u: Tensor | None, *, shared: nn.Conv2d | None, task: nn.Conv2d | None
    ) -> Tensor:
        y = shared(x) if shared is not None else None
        if task is not None:
            y = task(u) if y is None else y + task(u)
        assert y is not None
        return y

    def _identity(self, x: Tensor | None, u: Tensor | None) -> Tensor:
        if x is None:
            return u
        b, _, h, w = x.shape
        shared = x.unsqueeze(1).expand(b, self.num_tasks, self.shared_channels, h, w)
        if u is None:
            return shared.reshape(b, self.num_tasks * self.shared_channels, h, w)
        stacked = torch.cat([shared, u.reshape(b, self.num_tasks, self.task_channels, h, w)], dim=2)
        return stacked.reshape(b, self.num_tasks * self.out_channels, h, w)

    def forward(self, x: Tensor | None, u: Tensor | None = None) -> Tensor:
        out = torch.relu_(self.bn1(self._split_conv(x, u, shared=self.conv1_shared, task=self.conv1_task)))
        out = self.bn2(self.conv2(out))
        if self.project:
            assert self.down_bn is not None
            identity = self.down_bn(self._split_conv(x, u, shared=self.down_shared, task=self.down_task))
        else:
            identity = self._identity(x, u)
        return torch.relu_(out + identity)


class InitialTaskPrediction(nn.Module):
    """Task features and initial predictions at one scale (Sec. 2.3 and 3.1).

    Per task ``t``: ``F_t = BasicBlock(BasicBlock([x, p_t]))`` (``[x]`` without propagation), the first
    block ``C_s + C_p -> C_s`` (with a 1x1 projection shortcut when that changes the width), the second
    ``C_s -> C_s``; initial prediction ``conv1x1(F_t)``. The blocks of all tasks run as one
    :class:`TaskBatchedBasicBlock` each.

    Args:
        heads: every task (main and auxiliary) -> output channels ``K_t``, in stacking order.
        channels: ``C_s``, the backbone level's width (and the task features').
        propagated_channels: ``C_p``, the width of the previous scale's FPM output (0: none).
    """

    def __init__(self, heads: Mapping[str, int], *, channels: int, propagated_channels: int = 0) -> None:
        super().__init__()
        self.tasks = tuple(heads)
        self.channels, self.propagated_channels = channels, propagated_channels
        self.in_channels = channels + propagated_channels
        n = len(self.tasks)
        self.block1 = TaskBatchedBasicBlock(
            n, shared_channels=channels, task_channels=propagated_channels, out_channels=channels
        )
        self.block2 = TaskBatchedBasicBlock(n, shared_channels=0, task_channels=channels, out_channels=channels)
        self.predict = nn.ModuleDict({t: nn.Conv2d(channels, k, 1) for t, k in heads.items()})

    def forward(self, x: Tensor, propagated: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``(stacked task features (B, T*C_s, h, w), {task: initial prediction (B, K_t, h, w)})``.

        Args:
            x: backbone feature ``(B, C_s, h, w)``.
            propagated: stacked FPM output of the previous scale ``(B, T*C_p, h', w')``, resized here to
                ``(h, w)``; ``None`` at the coarsest scale or without FPM.
        """
        if (propagated is None) != (self.propagated_channels == 0):
            raise ConfigError(
                f"InitialTaskPrediction: built for {self.propagated_channels} propagated channels, got "
                f"{'none' if propagated is None else tuple(propagated.shape)}"
            )
        u = None if propagated is None else upsample_to(propagated, x.shape[-2:])
        feats = self.block2(None, self.block1(x, u))
        per_task = feats.split(self.channels, dim=1)
        return feats, {t: self.predict[t](f) for t, f in zip(self.tasks, per_task, strict=True)}


class FeaturePropagation(nn.Module):
    """Feature propagation module (FPM), MTI-Net Sec. 2.4 and Fig. 3.

    Input: the ``N`` task features ``F_t`` ``(B, C, H, W)`` stacked task-major, ``X`` ``(B, N*C, H, W)``
    (their concatenation). Feature harmonisation: ``X`` goes through the non-linear function ``f`` =
    BasicBlock(``N*C -> N*C/4``) -> BasicBlock(``N*C/4``) -> 1x1 conv (``-> N*C``) (supplementary A.2:
    "two basic residual blocks that aggressively reduce the number of channels followed by a 1x1
    convolutional layer"); ``f(X)`` is split into ``N`` chunks of ``C`` channels and a softmax along
    the task dimension gives the task attention ``A`` (``A[:, :, c, y, x]`` sums to 1 over tasks);
    the attended features ``A * X`` (concatenated again) go through BasicBlock(``N*C -> C``): the shared
    representation ``S``. Refinement: ``out_t = SE_t(S) + F_t`` with a squeeze-and-excitation block per
    task (reduction 16). Output stacked like the input.

    Args:
        tasks: the ``N`` tasks (main and auxiliary), in stacking order.
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

    def _check(self, x: Tensor) -> None:
        n_c = len(self.tasks) * self.channels
        check_shape("FeaturePropagation input", x.shape, f"(B, {n_c}, H, W)", x.ndim == 4 and x.shape[1] == n_c)

    def attention(self, x: Tensor) -> Tensor:
        """The task attention ``A`` of stacked features ``x``: ``(B, N, C, H, W)``, sums to 1 over dim 1."""
        self._check(x)
        return torch.softmax(self.harmonize(x).reshape(_stack_shape(x, len(self.tasks))), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Refined task features, stacked ``(B, N*C, H, W)``, to propagate to the next finer scale."""
        self._check(x)
        stacked = x.reshape(_stack_shape(x, len(self.tasks)))
        attended = (self.attention(x) * stacked).reshape(x.shape)
        shared = self.reduce(attended)
        gates = torch.stack([self.se[t].gate(shared) for t in self.tasks], dim=1)  # (B, N, C, 1, 1)
        return torch.addcmul(stacked, gates, shared.unsqueeze(1)).reshape(x.shape)


class MultiScaleHRNetHead(nn.Module):
    """The HRNet head on the concatenation of upsampled maps, computed without materialising it.

    Defined as ``classifier(relu(bn(W * cat_i(up(f_i)))))`` with ``W`` a 1x1 conv (``sum C_i -> sum C_i``,
    no bias), ``up`` bilinear to the finest map's size and ``cat`` along channels, which is exactly the
    HRNet head of :mod:`mtdense.models.layers.heads` applied to fused levels (MTI-Net's feature
    aggregation for HRNet, Sec. 2.5 and supplementary A.2). A 1x1 conv acts on channels and bilinear
    resizing on space, both linearly, so they commute: ``W * cat_i(up(f_i)) = sum_i up(W_i * f_i)`` with
    ``W_i`` the block of ``W``'s input channels that belongs to map ``i``. Projecting each map at its own
    resolution first costs ``sum_i C_i / 4^i`` instead of ``sum_i C_i`` multiply-adds per output channel
    and fine pixel (about 8x fewer for HRNet-W18's 18/36/72/144 channels), for the same result up to
    floating-point rounding. Parameters are those of :class:`~mtdense.models.layers.heads.HRNetHead`
    (under ``head.``), so checkpoints are interchangeable with the plain computation.

    ``[(B, C_i, h_i, w_i)]_i`` (finest first) ``-> (B, out_channels, h_0, w_0)``.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.head = HRNetHead(sum(self.in_channels), out_channels)
        conv = self.head.conv[0]
        if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None):
            raise TypeError("MultiScaleHRNetHead expects HRNetHead.conv to start with a bias-free 1x1 conv")

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        size = features[0].shape[-2:]
        weights = self.head.conv[0].weight.split(self.in_channels, dim=1)
        # accumulate in place into the finest map's projection: fewer large temporaries (the conv's
        # backward does not need its output, so autograd allows it)
        fused = F.conv2d(features[0], weights[0])
        for f, w in zip(features[1:], weights[1:], strict=True):
            fused = fused.add_(upsample_to(F.conv2d(f, w), size))
        for layer in list(self.head.conv)[1:]:  # BN, ReLU
            fused = layer(fused)
        return self.head.classifier(fused)


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
                    f"model.scales: reduction {s} must be exactly one level of backbone "
                    f"{cfg.backbone.name!r}, whose levels have reductions {reductions}"
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
            self.initial[key] = InitialTaskPrediction(tasks, channels=width[s], propagated_channels=propagated)
            if cfg.fpm and i < len(self.scales) - 1:
                self.fpm[key] = FeaturePropagation(list(tasks), width[s], se_reduction=cfg.se_reduction)
            self.distillation[key] = PairwiseGatedDistillation({t: width[s] for t in tasks}, list(self.heads))

        finest_first = self.scales[::-1]
        agg_info = [FeatureInfo(width[s], s, f"distillation.s{s}") for s in finest_first]
        kind = cfg.aggregation
        if kind == "auto":
            kind = next((_AUTO_AGGREGATION[c] for c in type(backbone).__mro__ if c in _AUTO_AGGREGATION), "hrnet")
        builder = _AGGREGATIONS[kind]
        self.aggregation_kind = kind
        self.aggregation = nn.ModuleDict({t: builder(agg_info, k, cfg) for t, k in self.heads.items()})

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        levels = self.backbone(x)
        out: dict[str, Tensor] = {}
        distilled: list[dict[str, Tensor]] = []
        propagated = None
        for s, level in zip(self.scales, self._levels, strict=True):
            key = f"s{s}"
            feats, preds = self.initial[key](levels[level], propagated)
            out.update({f"initial/{key}/{t}": p for t, p in preds.items()})
            propagated = self.fpm[key](feats) if key in self.fpm else None
            per_task = feats.split(self.initial[key].channels, dim=1)
            distilled.append(self.distillation[key](dict(zip(self.initial[key].tasks, per_task, strict=True))))
        for t, head in self.aggregation.items():
            out[t] = upsample_to(head([d[t] for d in reversed(distilled)]), size)
        return out


def _hrnet_aggregation(info: list[FeatureInfo], out_channels: int, cfg: MTINetConfig) -> nn.Module:
    return MultiScaleHRNetHead([f.channels for f in info], out_channels)


def _fpn_aggregation(info: list[FeatureInfo], out_channels: int, cfg: MTINetConfig) -> nn.Module:
    return HEAD_BUILDERS["fpn"](info, out_channels, HeadSpec(kind="fpn", fpn_channels=cfg.fpn_channels))


#: aggregation kind -> builder ``(feature_info of the distilled maps, finest first, out_channels, cfg)``.
_AGGREGATIONS = {"hrnet": _hrnet_aggregation, "fpn": _fpn_aggregation}


@register_model("mtinet", MTINetConfig)
def build_mtinet(cfg: MTINetConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> MTINet:
    """Build MTI-Net from its config (backbone from ``cfg.backbone``)."""
    return MTINet(backbone_from_config(cfg.backbone), cfg=cfg, heads=heads, aux_heads=aux_heads)
