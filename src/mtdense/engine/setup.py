"""Turn a validated :class:`~mtdense.config.Config` into objects: tasks, model, balancer, optimiser,
schedule. This is the only place where config values become constructor arguments (detectron2
style): the library classes take plain typed arguments.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtdense.config.schema import Config
from mtdense.errors import ConfigError
from mtdense.tasks import DepthTask, EdgeTask, NormalsTask, SemsegTask, Task


def build_tasks(cfg: Config, meta: dict[str, Any]) -> dict[str, Task]:
    """Every task of ``data.tasks`` and ``data.aux_tasks``, configured from the config and the dataset meta."""
    tasks: dict[str, Task] = {}
    for name in [*cfg.data.tasks, *cfg.data.aux_tasks]:
        if name == "semseg":
            n = int(meta.get("num_classes", 40))
            tasks[name] = SemsegTask(n, class_names=meta.get("class_names"), palette=meta.get("palette"))
        elif name == "depth":
            tasks[name] = DepthTask(loss=cfg.loss.depth, reduction=cfg.eval.depth_reduction)
        elif name == "normals":
            tasks[name] = NormalsTask(loss=cfg.loss.normals)
        elif name == "edge":
            tasks[name] = EdgeTask(
                pos_weight=cfg.loss.edge_pos_weight,
                max_dist=cfg.eval.edge_max_dist,
                exact=cfg.eval.edge_exact,
            )
    return tasks


def build_model_for(cfg: Config, tasks: dict[str, Task]) -> nn.Module:
    """The architecture of ``cfg.model`` with heads for the main and auxiliary tasks."""
    from mtdense.models import build_model

    heads = {t: tasks[t].out_channels for t in cfg.data.tasks}
    aux = {t: tasks[t].out_channels for t in cfg.data.aux_tasks}
    model = build_model(cfg.model, heads=heads, aux_heads=aux)
    if cfg.model.backbone.pretrained:
        from mtdense.backbones import Backbone, load_pretrained

        # every backbone copy in the model (one for most architectures, one per task for cross-stitch)
        path = cfg.model.backbone.pretrained
        whole_model = is_mtdense_export(path)
        names = {id(m): n for n, m in model.named_modules()}
        outer: list[str] = []
        for name, module in model.named_modules():
            if isinstance(module, Backbone) and not any(name.startswith(o + ".") for o in outer):
                outer.append(name)
                target = module.pretrained_target()
                # an exported mtdense model holds every weight: take this encoder's, by its own path
                prefix = f"{names[id(target)]}." if whole_model else ""
                report = load_pretrained(target, path, prefix=prefix)
                print(f"pretrained weights for {name or 'backbone'}: {report}")
    return model


def is_mtdense_export(path: str) -> bool:
    """Whether ``path`` is a ``.safetensors`` file written by ``mtdense export`` (a whole model)."""
    if not str(path).endswith(".safetensors"):
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format", "").startswith("mtdense")
    except Exception:  # noqa: BLE001 - unreadable files are reported by the loader itself
        return False


def build_balancer(cfg: Config, tasks: dict[str, Task]) -> nn.Module:
    """Fixed task weights or learned uncertainty weights (TRL eq. 7)."""
    from mtdense.losses.balancing import FixedWeights, UncertaintyWeights

    if cfg.loss.balancer == "fixed":
        missing = [t for t in tasks if t not in cfg.loss.weights]
        if missing:
            raise ConfigError(f"loss.weights: no weight for task(s) {missing}")
        weights = {t: cfg.loss.weights[t] for t in tasks}
        return FixedWeights(weights, aux_weight=dict(cfg.loss.tag_weights))
    return UncertaintyWeights(list(tasks))  # TRL eq. 7: e^{-δ}·L + δ, δ initialised at 0.5


def build_optimizer(cfg: Config, model: nn.Module, balancer: nn.Module) -> torch.optim.Optimizer:
    """Adam or SGD with two parameter groups: the backbone at ``lr × backbone_lr_mult`` and new layers at ``lr``."""
    t = cfg.train
    groups = model.param_groups() if hasattr(model, "param_groups") else {"new": list(model.parameters())}
    params = [
        {
            "params": [p for p in groups.get("backbone", []) if p.requires_grad],
            "lr": t.lr * t.backbone_lr_mult,
            "name": "backbone",
        },
        {"params": [p for p in groups.get("new", []) if p.requires_grad], "lr": t.lr, "name": "new"},
        {"params": list(balancer.parameters()), "lr": t.lr, "weight_decay": 0.0, "name": "balancer"},
    ]
    params = [g for g in params if g["params"]]
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=(t.betas[0], t.betas[1]), weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def lr_factor(cfg: Config, step: int) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then poly ``(1 − k/K)^p``, step decay or constant."""
    t = cfg.train
    warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else 1.0
    if t.schedule == "poly":
        return warm * max(0.0, 1.0 - step / t.max_steps) ** t.poly_power
    if t.schedule == "step":
        return warm * t.step_gamma ** sum(step >= m for m in t.step_milestones)
    return warm


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step))
