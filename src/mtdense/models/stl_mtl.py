"""Single-task networks and the shared-encoder multi-task baseline.

These are the two reference points of every multi-task dense-prediction paper:

* ``stl``: one network per task (backbone + one head). The multi-task performance Δm of MTI-Net
  (ECCV 2020, Sec. 3.1, Eq. 2) is measured against "a fully-converged model that uses the same
  backbone network only for that task".
* ``mtl``: "a shared encoder with task-specific heads" (MTI-Net, Sec. 3.2, Table 2), hard parameter
  sharing in the sense of Caruana (1997). PAD-Net (CVPR 2018, Sec. 4.2, Tables 1-2) calls its versions
  "Front-end + DE" (single task) and "Front-end + SP + DE" (two tasks predicted directly from the
  last front-end feature map).

Both use the head of the backbone family's reference implementation (:mod:`mtdense.models.layers.heads`):
HRNet -> fused stride-4 levels + 1x1/BN/ReLU/1x1 (MTI-Net's baselines); ResNet -> DeepLabv3 ASPP on the
last level; FPN -> the Panoptic-FPN semantic branch. Every main-task prediction is resized bilinearly
(``align_corners=False``) to the input size. Auxiliary tasks get a head of their own whose output,
keyed ``"aux/<task>"``, stays at the head's resolution (the task's loss resizes it, see
:meth:`mtdense.tasks.base.Task.loss`).

Config (``model:`` section)::

    model:
      name: mtl            # or stl (exactly one task, no auxiliary tasks)
      backbone: {name: hrnet_w18_small_v2, pretrained: null, output_stride: null}
      head: auto           # auto | hrnet | aspp | fpn
      aspp_dropout: 0.5
      fpn_channels: 128
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from mtdense.backbones import Backbone, build_backbone
from mtdense.config.schema import BackboneConfig, ModelConfig
from mtdense.errors import ConfigError, check_shape
from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import register_model
from mtdense.models.layers.heads import HeadSpec

__all__ = [
    "MTLConfig",
    "STLConfig",
    "SharedEncoderNet",
    "backbone_from_config",
    "build_mtl",
    "build_stl",
    "check_task_heads",
    "head_spec_from_config",
]

HeadKind = Literal["auto", "hrnet", "aspp", "fpn"]


class MTLConfig(ModelConfig):
    """Options of the shared-encoder baseline (and of the architectures built on its heads).

    Attributes:
        head: task head, ``"auto"`` choosing by backbone family (see :class:`HeadSpec`).
        aspp_dropout: dropout of the DeepLab head (0.5 in DeepLabv3 implementations).
        fpn_channels: width of the Panoptic-FPN head (128 in Kirillov et al. 2019).
    """

    head: HeadKind = "auto"
    aspp_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    fpn_channels: int = Field(128, ge=1)


class STLConfig(MTLConfig):
    """Options of a single-task network: those of :class:`MTLConfig`."""


def backbone_from_config(cfg: BackboneConfig) -> Backbone:
    """Build ``cfg.name`` with, when set, its ``output_stride``; randomly initialised.

    ``cfg.pretrained`` is not loaded here: the engine loads it once into every backbone copy of the
    finished model (:func:`mtdense.engine.setup.build_model_for`).

    Raises:
        ConfigError: unknown backbone or an option it does not take; the message names
            ``model.backbone``.
    """
    kwargs = {} if cfg.output_stride is None else {"output_stride": cfg.output_stride}
    try:
        return build_backbone(cfg.name, **kwargs)
    except ConfigError as e:
        raise ConfigError(f"model.backbone: {e}") from None


def head_spec_from_config(cfg: MTLConfig) -> HeadSpec:
    """The :class:`HeadSpec` described by a config's ``head``/``aspp_dropout``/``fpn_channels``."""
    return HeadSpec(kind=cfg.head, aspp_dropout=cfg.aspp_dropout, fpn_channels=cfg.fpn_channels)


def check_task_heads(heads: Mapping[str, int], aux_heads: Mapping[str, int]) -> None:
    """Validate the task -> output channels maps every architecture receives.

    Raises:
        ConfigError: no main task, a task listed both as main and auxiliary, a non-positive channel
            count, or a task name containing ``/`` or ``.`` (reserved by the output-key contract and
            by module names).
    """
    if not heads:
        raise ConfigError("model: expected at least one main task (data.tasks), got none")
    both = sorted(set(heads) & set(aux_heads))
    if both:
        raise ConfigError(f"model: tasks {both} are both main (data.tasks) and auxiliary (data.aux_tasks)")
    for task, channels in {**heads, **aux_heads}.items():
        if "/" in task or "." in task or not task:
            raise ConfigError(f"model: task name {task!r} must be non-empty and contain no '/' or '.'")
        if int(channels) < 1:
            raise ConfigError(f"model: task {task!r}: expected >= 1 output channels, got {channels}")


class SharedEncoderNet(MultiTaskModel):
    """One backbone shared by all tasks, one head per task (hard parameter sharing).

    ``forward(image (B, 3, H, W) in [0, 1])`` returns ``{task: (B, K_task, H, W)}`` for every main task
    and ``{"aux/<task>": (B, K_task, h, w)}`` for every auxiliary task (``h, w`` the head's resolution).

    Args:
        backbone: the shared encoder; heads read its ``feature_info``.
        heads: main task -> output channels.
        aux_heads: auxiliary task -> output channels.
        head: which head to build (default: by backbone family).
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: Mapping[str, int],
        aux_heads: Mapping[str, int] | None = None,
        *,
        head: HeadSpec | None = None,
    ) -> None:
        super().__init__(heads, aux_heads)
        check_task_heads(self.heads, self.aux_heads)
        head = head or HeadSpec()
        self.backbone = backbone
        self.task_heads = nn.ModuleDict({t: head.build(backbone, c) for t, c in self.heads.items()})
        self.aux_task_heads = nn.ModuleDict({t: head.build(backbone, c) for t, c in self.aux_heads.items()})

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:
        check_shape("image", x.shape, f"(B, {self.backbone.in_channels}, H, W)", x.ndim == 4)
        features = self.backbone(x)
        out = {t: upsample_to(h(features), x.shape[-2:]) for t, h in self.task_heads.items()}
        out.update({f"aux/{t}": h(features) for t, h in self.aux_task_heads.items()})
        return out


@register_model("mtl", MTLConfig)
def build_mtl(cfg: MTLConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> SharedEncoderNet:
    """The shared-encoder multi-task baseline for ``heads`` (+ ``aux_heads``)."""
    return SharedEncoderNet(
        backbone_from_config(cfg.backbone), heads, aux_heads, head=head_spec_from_config(cfg)
    )


@register_model("stl", STLConfig)
def build_stl(cfg: STLConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> SharedEncoderNet:
    """A single-task network: backbone + one head.

    Raises:
        ConfigError: not exactly one main task, or any auxiliary task (a network supervised by
            several tasks is not a single-task baseline; use ``mtl``).
    """
    if len(heads) != 1:
        raise ConfigError(
            f"model stl: a single-task network needs exactly one task in data.tasks, got {sorted(heads)}; "
            "train one stl model per task, or use model.name: mtl"
        )
    if aux_heads:
        raise ConfigError(
            "model stl: a single-task network has no auxiliary tasks, "
            f"got data.aux_tasks = {sorted(aux_heads)}"
        )
    return SharedEncoderNet(backbone_from_config(cfg.backbone), heads, {}, head=head_spec_from_config(cfg))
