"""The backbone contract and the backbone registry.

A backbone maps a normalised image ``(B, C_in, H, W)`` to a list of feature maps, one per level, in
the order of its ``feature_info``. Decoders read channels and reductions from ``feature_info`` and
never from a config (the timm convention). A level with reduction ``r`` has spatial size
``(ceil(H / r), ceil(W / r))``: every stride-2 layer in our backbones pads so that it halves a size
rounding up, and upsampling inside a backbone targets the exact size of the finer level.
"""

from __future__ import annotations

import abc
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from mtdense.backbones._pretrained import load_pretrained
from mtdense.errors import ConfigError, check_shape

__all__ = [
    "BACKBONES",
    "Backbone",
    "FeatureInfo",
    "build_backbone",
    "list_backbones",
    "register_backbone",
]


@dataclass(frozen=True)
class FeatureInfo:
    """One output level of a backbone.

    Attributes:
        channels: number of channels of the level's feature map.
        reduction: total stride w.r.t. the input (4 means ``ceil(H/4) x ceil(W/4)``).
        module: name of the submodule producing it (``name[i]`` is the i-th map of a module that
            returns a list, e.g. ``stage4[0]`` for HRNet's highest-resolution branch).
    """

    channels: int
    reduction: int
    module: str


class Backbone(nn.Module, abc.ABC):
    """Base of every backbone: ``forward(x) -> list[Tensor]`` in ``feature_info`` order.

    Subclasses set ``self.feature_info`` and ``self.in_channels`` in ``__init__`` and implement
    :meth:`forward_levels`; ``forward`` checks the input shape first.
    """

    feature_info: list[FeatureInfo]
    in_channels: int

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps of a normalised image ``x`` of shape ``(B, in_channels, H, W)``.

        Returns:
            one tensor per level, ``(B, feature_info[i].channels, ceil(H/r_i), ceil(W/r_i))``.
        """
        check_shape(
            "backbone input",
            x.shape,
            f"(B, {self.in_channels}, H, W)",
            x.ndim == 4 and x.shape[1] == self.in_channels,
        )
        return self.forward_levels(x)

    @abc.abstractmethod
    def forward_levels(self, x: Tensor) -> list[Tensor]:
        """The computation of :meth:`forward`, without the input check."""

    def channels(self) -> list[int]:
        """Channels of each level, in ``feature_info`` order."""
        return [f.channels for f in self.feature_info]

    def reductions(self) -> list[int]:
        """Reduction (total stride) of each level, in ``feature_info`` order."""
        return [f.reduction for f in self.feature_info]

    def pretrained_target(self) -> nn.Module:
        """The submodule an ImageNet checkpoint loads into (``self`` unless a wrapper overrides it)."""
        return self


BackboneBuilder = Callable[..., Backbone]

#: name -> builder; filled by :func:`register_backbone` when :mod:`mtdense.backbones` is imported.
BACKBONES: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator registering a builder (keyword-only options, returns a :class:`Backbone`)."""

    def deco(builder: BackboneBuilder) -> BackboneBuilder:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = builder
        return builder

    return deco


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(BACKBONES)


def build_backbone(name: str, *, pretrained: str | os.PathLike[str] | None = None, **kwargs: Any) -> Backbone:
    """Build the registered backbone ``name`` and optionally load a local ImageNet checkpoint.

    Args:
        name: one of :func:`list_backbones`.
        pretrained: path of a ``.pth``/``.pt``/``.safetensors`` checkpoint, loaded (non-strictly, with a
            logged report) into ``backbone.pretrained_target()``.
        **kwargs: options of the builder (e.g. ``output_stride``, ``in_channels``).

    Raises:
        ConfigError: unknown name (the message lists the valid names) or an option the builder does
            not take (the message lists the ones it does).
        CheckpointError: see :func:`load_pretrained`.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; valid backbones: {', '.join(list_backbones())}")
    builder = BACKBONES[name]
    signature = inspect.signature(builder)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"backbone {name!r}: {exc}; accepted options: {', '.join(signature.parameters)}"
        ) from None
    model = builder(**kwargs)
    if pretrained is not None:
        load_pretrained(model.pretrained_target(), pretrained)
    return model
