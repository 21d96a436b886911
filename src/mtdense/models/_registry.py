"""The architecture registry: a plain dict from name to (config class, builder).

Each architecture file registers itself with :func:`register_model`; its config class (a subclass
of :class:`mtdense.config.ModelConfig`) owns the architecture's options, and its builder takes the
validated config plus the output channels of the main and auxiliary tasks::

    @register_model("mtinet", MTINetConfig)
    def build_mtinet(cfg: MTINetConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> nn.Module: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mtdense.config.schema import ModelConfig

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    config_cls: type[ModelConfig]
    builder: Builder


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type[ModelConfig]) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name`` with its config class."""

    def deco(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = ModelEntry(config_cls, builder)
        return builder

    return deco


def model_config_class(name: str) -> type[ModelConfig]:
    """The config class of architecture ``name``; ``KeyError`` listing the valid names."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name].config_cls


def build_model(
    cfg: ModelConfig, *, heads: dict[str, int], aux_heads: dict[str, int] | None = None
) -> nn.Module:
    """Build the architecture ``cfg.name`` for the given main and auxiliary task output channels."""
    model_config_class(cfg.name)
    return MODELS[cfg.name].builder(cfg, heads=dict(heads), aux_heads=dict(aux_heads or {}))


def list_models() -> list[str]:
    return sorted(MODELS)
