"""Cross-stitch networks (Misra, Shrivastava, Gupta, Hebert, CVPR 2016).

::

    @inproceedings{misra2016cross,
      title={Cross-stitch Networks for Multi-task Learning},
      author={Misra, Ishan and Shrivastava, Abhinav and Gupta, Abhinav and Hebert, Martial},
      booktitle={CVPR}, year={2016}}

One backbone copy per task ("network A", "network B", ...); after every backbone stage a
cross-stitch unit replaces each task's activation map by a learned linear combination of all tasks'
maps (the paper's Eq. 1, written there for two tasks at one location ``(i, j)``)::

    x~_t = sum_s alpha[t, s] * x_s

and the next stage of network t continues from ``x~_t``. Each network then ends in its task's head,
exactly as in :class:`mtdense.models.stl_mtl.SharedEncoderNet`. MTI-Net (ECCV 2020, suppl. A.1)
contrasts it with its own decoder-side distillation: cross-stitch shares features in the encoder,
layer by layer, and its size grows linearly with the number of tasks.

Choices (where the paper is silent or written for two tasks):

* **Where**: after every stage: ResNet ``layer1`` (after the stem), ``layer2``, ``layer3``,
  ``layer4``; HRNet ``layer1`` (stage 1) and ``stage2``/``stage3``/``stage4``, with one unit per
  resolution branch. The stitched maps of the four stages are the features the heads read. The
  paper stitches AlexNet after pooling and fully connected layers, i.e. between "stages" too.
  FPN backbones are not supported (the pyramid would need a per-task top-down pass after the
  stitched trunk); they raise :class:`ConfigError`.
* **Initialisation**: ``alpha[t, t] = alpha_S`` and ``alpha[t, s] = (1 - alpha_S) / (T - 1)`` for
  ``s != t``; for two tasks this is the paper's convex (alpha_S, alpha_D) initialisation, and our
  default (0.9, 0.1) is the setting its initialisation ablation favours and the common default. For
  T > 2 we keep each row a convex combination (rows sum to 1) rather than giving every other task 0.1.
* **Granularity**: by default one alpha matrix per channel (``alpha_per: channel``), so that each
  channel of each stage chooses its own mix, as the cross-stitch implementation of the multi-task
  dense-prediction survey (Vandenhende et al., TPAMI 2021) does; ``alpha_per: layer`` shares one
  T x T matrix across the channels of a unit.
* **Network initialisation**: all copies start from the same weights (one built backbone, deep-copied;
  the engine loads ``pretrained`` into every copy). The paper also reports initialising each network
  from a separately trained single-task model, as the MTI-Net authors' code always does; load those
  weights into ``model.backbone[task]`` for that.
* **Learning rate**: the paper's design-decision ablation trains the alphas with a learning rate
  scaled up from the networks' one. :meth:`CrossStitchNet.param_groups` puts them in their own
  group ``"alpha"`` and ``model.lr_mults["alpha"] = alpha_lr_mult`` sets its rate to
  ``train.lr x alpha_lr_mult``. The MTI-Net authors' code uses 100 with SGD (momentum 0.9) and
  refuses Adam for cross-stitch networks ("Adam seems to fail"); the shipped cross-stitch configs do
  the same. The default multiplier is 1 (the alphas train like every other new layer): under Adam,
  whose step is about the learning rate whatever the gradient's scale, a 100x rate would move each
  alpha by up to 100 x lr per step.

Auxiliary tasks get a network copy and a head too, keyed ``"aux/<task>"`` at the head's resolution.

Since the backbones' ``forward`` runs all stages at once, this file runs them stage by stage with
small per-family adapters (:class:`ResNetStages`, :class:`HRNetStages`) that mirror
``ResNet.forward_levels`` and ``HRNet.forward_levels``; the test that a cross-stitch network with
``alpha = I`` equals independent single-task networks checks that the mirror is exact.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from mtdense.backbones import Backbone, HRNet, ResNet
from mtdense.errors import ConfigError, ShapeError, check_shape
from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import register_model
from mtdense.models.layers.heads import HeadSpec
from mtdense.models.stl_mtl import MTLConfig, backbone_from_config, check_task_heads, head_spec_from_config

__all__ = [
    "STAGE_ADAPTERS",
    "CrossStitchConfig",
    "CrossStitchNet",
    "CrossStitchUnit",
    "HRNetStages",
    "ResNetStages",
    "build_cross_stitch",
]


class CrossStitchUnit(nn.Module):
    """Linear mixing of T task maps of one stage (the paper's Eq. 1, generalised to T tasks).

    ``[x_s (B, C, H, W)]_{s<T} -> [x~_t = sum_s alpha[t, s] * x_s]_{t<T}`` with ``alpha`` of shape
    ``(T, T, C)`` (one matrix per channel) or ``(T, T, 1)`` (one per unit), broadcast over
    ``B, H, W``.

    Args:
        num_tasks: ``T >= 2``.
        channels: ``C``.
        alpha_self: ``alpha_S``, the initial weight of a task's own map; the others share
            ``1 - alpha_S`` equally.
        per_channel: one alpha matrix per channel (else one per unit).
    """

    def __init__(self, num_tasks: int, channels: int, *, alpha_self: float = 0.9, per_channel: bool = True) -> None:
        super().__init__()
        if num_tasks < 2:
            raise ConfigError(f"CrossStitchUnit: needs at least 2 tasks, got {num_tasks}")
        if not 0.0 <= alpha_self <= 1.0:
            raise ConfigError(f"CrossStitchUnit: alpha_self must be in [0, 1], got {alpha_self}")
        self.num_tasks = num_tasks
        self.channels = channels
        alpha = torch.full((num_tasks, num_tasks, channels if per_channel else 1), (1.0 - alpha_self) / (num_tasks - 1))
        alpha[torch.arange(num_tasks), torch.arange(num_tasks)] = alpha_self
        self.alpha = nn.Parameter(alpha)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        if len(xs) != self.num_tasks:
            raise ShapeError(f"CrossStitchUnit: expected {self.num_tasks} task maps, got {len(xs)}")
        for s, x in enumerate(xs):
            check_shape(
                f"CrossStitchUnit input {s}",
                x.shape,
                f"{tuple(xs[0].shape)} with {self.channels} channels",
                x.shape == xs[0].shape and x.ndim == 4 and x.shape[1] == self.channels,
            )
        # a short sum over tasks rather than stack + einsum: no (T, B, C, H, W) copy, and the
        # memory format of the inputs (channels-last) is kept
        weights = self.alpha[..., None, None]  # (T, T, C or 1, 1, 1)
        out = []
        for t in range(self.num_tasks):
            y = weights[t, 0] * xs[0]
            for s in range(1, self.num_tasks):
                y = y + weights[t, s] * xs[s]
            out.append(y)
        return out


# ----------------------------------------------------------------------------------------------
# Stage-wise execution of the backbones
# ----------------------------------------------------------------------------------------------
class ResNetStages:
    """ResNet as four stages: stem + ``layer1``, ``layer2``, ``layer3``, ``layer4``.

    The state between stages is a one-element list; the features after stage k are level k of
    ``feature_info`` (C2..C5).
    """

    num_stages: ClassVar[int] = 4

    @staticmethod
    def branch_channels(backbone: Backbone) -> list[list[int]]:
        """Channels of each branch after each stage."""
        return [[f.channels] for f in backbone.feature_info]

    @staticmethod
    def run(backbone: Backbone, stage: int, xs: list[Tensor]) -> list[Tensor]:
        """Stage ``stage`` of ``backbone`` on the (stitched) state ``xs``."""
        assert isinstance(backbone, ResNet)
        x = xs[0]
        if stage == 0:
            x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        layer: nn.Module = getattr(backbone, f"layer{stage + 1}")
        return [layer(x)]

    @staticmethod
    def features(states: list[list[Tensor]]) -> list[Tensor]:
        """Backbone output (``feature_info`` order) from the stitched state after every stage."""
        return [s[0] for s in states]


class HRNetStages:
    """HRNet as four stages: stem + ``layer1`` (one branch), then ``transition{k}`` + ``stage{k+1}``.

    The state is the list of resolution branches (1, 2, 3, 4 of them); the features are the
    branches after the last stage.
    """

    num_stages: ClassVar[int] = 4

    @staticmethod
    def branch_channels(backbone: Backbone) -> list[list[int]]:
        assert isinstance(backbone, HRNet)
        stage1 = backbone.layer1[-1].conv3.out_channels
        return [[stage1], *(list(s.channels) for s in backbone.spec.stages)]

    @staticmethod
    def run(backbone: Backbone, stage: int, xs: list[Tensor]) -> list[Tensor]:
        assert isinstance(backbone, HRNet)
        if stage == 0:
            x = backbone.relu(backbone.bn1(backbone.conv1(xs[0])))
            x = backbone.relu(backbone.bn2(backbone.conv2(x)))
            return [backbone.layer1(x)]
        transition: nn.ModuleList = getattr(backbone, f"transition{stage}")
        body: nn.Sequential = getattr(backbone, f"stage{stage + 1}")
        # existing branches pass their own transition; a new, coarser branch starts from the coarsest
        xs = [t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition)]
        return body(xs)

    @staticmethod
    def features(states: list[list[Tensor]]) -> list[Tensor]:
        return states[-1]


StageAdapter = type[ResNetStages] | type[HRNetStages]

#: backbone family -> how to run it stage by stage (looked up along the backbone class's MRO).
STAGE_ADAPTERS: dict[type[Backbone], StageAdapter] = {ResNet: ResNetStages, HRNet: HRNetStages}


def _stage_adapter(backbone: Backbone) -> StageAdapter:
    for cls in type(backbone).__mro__:
        if cls in STAGE_ADAPTERS:
            return STAGE_ADAPTERS[cls]
    raise ConfigError(
        f"model cross_stitch: backbone {type(backbone).__name__} cannot be cross-stitched; supported "
        "families: resnet18/34/50/101 and the HRNets (set model.backbone.name accordingly)"
    )


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------
class CrossStitchConfig(MTLConfig):
    """Options of cross-stitch networks (plus the head options of :class:`MTLConfig`).

    Attributes:
        alpha_self: initial ``alpha_S`` (0.9, the paper's best initialisation).
        alpha_per: ``"channel"``: one alpha matrix per channel; ``"layer"``: one per unit.
        alpha_lr_mult: learning rate of the alphas relative to ``train.lr`` (parameter group
            ``"alpha"``); 100 in the MTI-Net authors' SGD recipe, 1 by default (see the module docstring).
    """

    alpha_self: float = Field(0.9, ge=0.0, le=1.0)
    alpha_per: Literal["channel", "layer"] = "channel"
    alpha_lr_mult: float = Field(1.0, gt=0.0)


class CrossStitchNet(MultiTaskModel):
    """One backbone copy and one head per task, stitched after every backbone stage.

    ``forward(image (B, 3, H, W) in [0, 1])`` returns ``{task: (B, K_task, H, W)}`` for the main tasks
    and ``{"aux/<task>": (B, K_task, h, w)}`` for the auxiliary ones.

    Attributes:
        backbone: ``ModuleDict`` task -> its backbone copy (all copies count as the pre-trainable
            ``"backbone"`` parameter group).
        cross_stitch: ``ModuleList`` over stages of ``ModuleList`` over resolution branches of
            :class:`CrossStitchUnit` (tasks ordered as main tasks, then auxiliary tasks).
        lr_mults: ``{"alpha": alpha_lr_mult}``, the learning-rate multiplier of the ``"alpha"``
            parameter group (read by the engine's optimiser builder).

    Args:
        backbone: the backbone to copy once per task (ResNet or HRNet family).
        heads: main task -> output channels.
        aux_heads: auxiliary task -> output channels.
        alpha_self: initial ``alpha_S``.
        per_channel: one alpha matrix per channel (else one per unit).
        head: which head to build (default: by backbone family).
        alpha_lr_mult: learning rate of the alphas relative to ``train.lr``.

    Raises:
        ConfigError: fewer than two tasks in all, or a backbone family without a stage adapter.
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: Mapping[str, int],
        aux_heads: Mapping[str, int] | None = None,
        *,
        alpha_self: float = 0.9,
        per_channel: bool = True,
        head: HeadSpec | None = None,
        alpha_lr_mult: float = 1.0,
    ) -> None:
        super().__init__(heads, aux_heads)
        if not alpha_lr_mult > 0:
            raise ConfigError(f"model cross_stitch: alpha_lr_mult must be > 0, got {alpha_lr_mult}")
        self.lr_mults = {"alpha": float(alpha_lr_mult)}
        check_task_heads(self.heads, self.aux_heads)
        self.tasks = [*self.heads, *self.aux_heads]
        if len(self.tasks) < 2:
            raise ConfigError(
                "model cross_stitch: needs at least two tasks (data.tasks + data.aux_tasks), "
                f"got {self.tasks}; use model.name: stl for a single task"
            )
        self._stages = _stage_adapter(backbone)
        head = head or HeadSpec()
        self.in_channels = backbone.in_channels
        self.backbone = nn.ModuleDict({t: copy.deepcopy(backbone) for t in self.tasks})
        self.cross_stitch = nn.ModuleList(
            nn.ModuleList(
                CrossStitchUnit(len(self.tasks), c, alpha_self=alpha_self, per_channel=per_channel) for c in channels
            )
            for channels in self._stages.branch_channels(backbone)
        )
        self.task_heads = nn.ModuleDict({t: head.build(backbone, c) for t, c in self.heads.items()})
        self.aux_task_heads = nn.ModuleDict({t: head.build(backbone, c) for t, c in self.aux_heads.items()})

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``"backbone"`` (every task's backbone copy), ``"alpha"`` (the cross-stitch units, at
        ``train.lr x lr_mults["alpha"]``) and ``"new"`` (the heads)."""
        alphas = [u.alpha for units in self.cross_stitch for u in units]
        ids = {id(p) for p in alphas}
        groups = super().param_groups()
        return {
            "backbone": groups["backbone"],
            "alpha": alphas,
            "new": [p for p in groups["new"] if id(p) not in ids],
        }

    def task_features(self, x: Tensor) -> dict[str, list[Tensor]]:
        """Each task network's stitched features (``feature_info`` order) for a normalised image."""
        check_shape("image", x.shape, f"(B, {self.in_channels}, H, W)", x.ndim == 4 and x.shape[1] == self.in_channels)
        states: list[list[Tensor]] = [[x] for _ in self.tasks]
        history: list[list[list[Tensor]]] = [[] for _ in self.tasks]  # task -> stage -> branches
        for stage, units in enumerate(self.cross_stitch):
            states = [self._stages.run(self.backbone[t], stage, s) for t, s in zip(self.tasks, states, strict=True)]
            mixed = [unit([s[b] for s in states]) for b, unit in enumerate(units)]  # branch -> task
            states = [[mixed[b][i] for b in range(len(units))] for i in range(len(self.tasks))]
            for i, s in enumerate(states):
                history[i].append(s)
        return {t: self._stages.features(h) for t, h in zip(self.tasks, history, strict=True)}

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:
        features = self.task_features(x)
        out = {t: upsample_to(h(features[t]), x.shape[-2:]) for t, h in self.task_heads.items()}
        out.update({f"aux/{t}": h(features[t]) for t, h in self.aux_task_heads.items()})
        return out


@register_model("cross_stitch", CrossStitchConfig)
def build_cross_stitch(cfg: CrossStitchConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> CrossStitchNet:
    """Cross-stitch network over ``heads`` and ``aux_heads`` (one backbone copy per task)."""
    return CrossStitchNet(
        backbone_from_config(cfg.backbone),
        heads,
        aux_heads,
        alpha_self=cfg.alpha_self,
        per_channel=cfg.alpha_per == "channel",
        head=head_spec_from_config(cfg),
        alpha_lr_mult=cfg.alpha_lr_mult,
    )
