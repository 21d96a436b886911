"""Typed configs: :class:`Config` and its sections, YAML loading (files or packaged names) with overrides and
validation."""

from mtdense.config.derive import single_task_config
from mtdense.config.load import (
    apply_overrides,
    config_to_dict,
    list_configs,
    load_config,
    resolve_config,
    save_config,
    validate_config,
)
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
    "list_configs",
    "load_config",
    "resolve_config",
    "save_config",
    "single_task_config",
    "validate_config",
]
