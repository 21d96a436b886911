"""Typed configs: :class:`Config` and its sections, YAML loading with overrides and validation."""

from mtdense.config.load import apply_overrides, config_to_dict, load_config, save_config, validate_config
from mtdense.config.schema import (
    BackboneConfig,
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    Section,
    SynthSpec,
    TrainConfig,
)

__all__ = [
    "BackboneConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "Section",
    "SynthSpec",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
    "save_config",
    "validate_config",
]
