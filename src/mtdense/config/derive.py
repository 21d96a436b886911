"""Configs derived from other configs: the single-task counterpart of a multi-task config."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from mtdense.config.load import config_to_dict, validate_config
from mtdense.config.schema import Config, TrainConfig
from mtdense.errors import ConfigError


def single_task_config(config: Config | Mapping[str, Any], task: str, *, source: str = "<config>") -> Config:
    """The single-task baseline of ``task`` for a multi-task ``config`` (a :class:`Config` or its raw dict).

    MTI-Net (Sec. 4.1, Eq. 2) measures a multi-task model against single-task networks on the same
    backbone, trained the same way; ``mtdense demo`` trains them and ``mtdense complexity`` sums
    their parameters and FLOPs (Table 7). Both derive them here, so they compare the same networks:

    * ``model``: ``name: stl``; of the other options only those the ``stl`` config also has (the
      backbone, e.g. ``head``) are kept — the others belong to the multi-task architecture;
    * ``data.tasks = [task]``, ``data.aux_tasks = []``; the rest of ``data`` (dataset, augmentation)
      unchanged;
    * ``loss.weights``: only ``task``'s; ``loss.tag_weights``: none (a single-task network has no
      intermediate outputs); ``train.phase*`` at their defaults, i.e. one phase (PAD-Net's two phases
      need its front-end);
    * ``eval.baseline = None`` (a baseline has no baseline); everything else (seed, recipe) unchanged.

    ``task`` must be one of the config's main tasks. Raises :class:`ConfigError` naming ``source``.
    """
    cfg = config if isinstance(config, Config) else validate_config(copy.deepcopy(dict(config)), source=source)
    if task not in cfg.data.tasks:
        raise ConfigError(
            f"{source}: no single-task config for {task!r}: it is not one of data.tasks {list(cfg.data.tasks)}"
        )
    from mtdense.models import model_config_class

    raw = config_to_dict(cfg)
    stl_options = set(model_config_class("stl").model_fields)
    raw["model"] = {k: v for k, v in raw["model"].items() if k in stl_options} | {"name": "stl"}
    raw["data"]["tasks"], raw["data"]["aux_tasks"] = [task], []
    raw["loss"]["weights"] = {t: w for t, w in raw["loss"]["weights"].items() if t == task}
    raw["loss"]["tag_weights"] = {}
    for key, field in TrainConfig.model_fields.items():
        if key.startswith("phase"):  # the two-phase schedule's settings, back to "one phase"
            raw["train"][key] = field.default
    raw["eval"]["baseline"] = None
    return validate_config(raw, source=f"{source} (single-task {task})")
