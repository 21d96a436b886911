"""Turn a validated :class:`~mtdense.config.Config` into objects: tasks, model, balancer, optimiser,
schedule, trainer extensions (:data:`EXTENSIONS`, e.g. ``uda:`` → MTL-UDA). This is the only place where
config values become constructor arguments (detectron2 style): the library classes take plain typed arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mtdense.config.schema import Config, DomainData
from mtdense.engine.extensions import TrainerExtension
from mtdense.errors import ConfigError
from mtdense.tasks import Task, task_class


def build_tasks(cfg: Config, meta: Mapping[str, Any]) -> dict[str, Task]:
    """Every task of ``data.tasks`` and ``data.aux_tasks``, configured from the config and the dataset meta.

    Each task takes what it needs itself (:meth:`Task.from_config`); ``meta`` is the dataset's ``meta.json``.
    """
    return {name: task_class(name).from_config(cfg, meta) for name in [*cfg.data.tasks, *cfg.data.aux_tasks]}


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


def build_balancer(cfg: Config, tasks: Mapping[str, Task]) -> nn.Module:
    """The loss balancer of ``loss.balancer`` (registry :data:`mtdense.losses.BALANCERS`), from the config.

    ``fixed``: ``loss.weights`` (every task needs one); ``uncertainty``: learned weights, TRL eq. (7),
    δ initialised at 0.5 (TRL Sec. 4.1); every other balancer gets the task list and ``loss.weights``
    (a fixed scale per task, 1 for a task without one). All apply ``loss.tag_weights`` to intermediate
    outputs, and receive ``loss.balancer_args`` (validated by the balancer's ``Args``) as keywords
    (:meth:`mtdense.losses.LossBalancer.from_settings`).
    """
    from mtdense.losses import BALANCERS
    from mtdense.losses.registry import lookup

    cls = lookup(BALANCERS, cfg.loss.balancer, "loss balancer")
    return cls.from_settings(
        tasks=list(tasks),
        weights=dict(cfg.loss.weights),
        aux_weight=dict(cfg.loss.tag_weights),
        args=dict(cfg.loss.balancer_args),
    )


def _model_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``model.param_groups()`` (or everything as ``"new"``), checked: each trainable parameter in one group."""
    groups = model.param_groups() if hasattr(model, "param_groups") else {"new": list(model.parameters())}
    seen: dict[int, str] = {}
    for name, params in groups.items():
        for p in params:
            if id(p) in seen:
                raise ConfigError(
                    f"{type(model).__name__}.param_groups(): a parameter is in both group {seen[id(p)]!r} and {name!r}"
                )
            seen[id(p)] = name
    stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if stray:
        raise ConfigError(f"{type(model).__name__}.param_groups(): parameters in no group: {stray[:5]}")
    return groups


def _lr_mult(cfg: Config, model: nn.Module, group: str) -> float:
    """``backbone`` → ``train.backbone_lr_mult``; ``new`` → 1; any other group → ``model.lr_mults[group]``."""
    if group == "backbone":
        return cfg.train.backbone_lr_mult
    if group == "new":
        return 1.0
    mults: Mapping[str, float] = getattr(model, "lr_mults", {})
    if group not in mults:
        raise ConfigError(
            f"{type(model).__name__}.param_groups() returns group {group!r} but the model's lr_mults "
            f"has no multiplier for it (lr_mults: {dict(mults)})"
        )
    return float(mults[group])


def build_optimizer(cfg: Config, model: nn.Module, balancer: nn.Module) -> torch.optim.Optimizer:
    """Adam or SGD over the model's parameter groups and the balancer's parameters.

    Groups come from ``model.param_groups()`` (:meth:`mtdense.models.MultiTaskModel.param_groups`):
    ``"backbone"`` at ``lr × train.backbone_lr_mult``, ``"new"`` at ``lr``, and any other named group
    ``g`` at ``lr × model.lr_mults[g]`` (e.g. cross-stitch's α). The balancer's parameters (learned
    uncertainty δ) form group ``"balancer"`` at ``lr`` without weight decay, which would pull δ to 0.

    With the two-phase schedule (``train.phase1_steps > 0``) each model group is split into the part
    in ``model.phase_parameters(1)`` (keeps the group's name) and the rest (``"<group>@phase2"``).
    Every param group records ``phase``: the first phase in which it trains (the balancer: 1);
    :func:`lr_factor` gives a phase-2 group learning rate 0 during phase 1. Empty groups are dropped.
    """
    t = cfg.train
    groups = _model_groups(model)
    phase1: set[int] | None = None
    if t.phase1_steps:
        if not hasattr(model, "phase_parameters"):
            raise ConfigError(
                f"train.phase1_steps: model {type(model).__name__} has no two-phase schedule (PAD-Net has one)"
            )
        phase1 = {id(p) for p in model.phase_parameters(1)}
    params: list[dict[str, Any]] = []
    for name, members in groups.items():
        lr = t.lr * _lr_mult(cfg, model, name)
        trainable = [p for p in members if p.requires_grad]
        if phase1 is None:
            params.append({"params": trainable, "lr": lr, "name": name, "phase": 1})
            continue
        params.append({"params": [p for p in trainable if id(p) in phase1], "lr": lr, "name": name, "phase": 1})
        params.append(
            {"params": [p for p in trainable if id(p) not in phase1], "lr": lr, "name": f"{name}@phase2", "phase": 2}
        )
    params.append(
        {"params": list(balancer.parameters()), "lr": t.lr, "weight_decay": 0.0, "name": "balancer", "phase": 1}
    )
    params = [g for g in params if g["params"]]
    if t.optimizer == "adam":
        return _adam(params, lr=t.lr, betas=(t.betas[0], t.betas[1]), weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def _adam(params: list[dict[str, Any]], **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam`` with its fused kernel where the installed torch has one for the parameters' device
    (CPU since torch 2.4, CUDA): the same update up to float rounding, one kernel instead of a loop of small
    ones (measured on 2 CPU cores: 18 ms instead of 73 ms for MTI-Net's 711 parameter tensors). Falls back to
    the default implementation where fused is not supported (e.g. MPS)."""
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except RuntimeError:
        return torch.optim.Adam(params, **kwargs)


def schedule_factor(cfg: Config, step: int, length: int) -> float:
    """Warm-up and decay at ``step`` of a span of ``length`` steps (a phase, or the whole run).

    Linear warm-up ``min(1, (step + 1) / warmup_steps)``, times poly ``(1 − step/length)^p`` (Liu et
    al.'s ParseNet decay, used by MTI-Net), ``step_gamma ** #(milestones ≤ step)`` or 1 (``constant``).
    """
    t = cfg.train
    warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else 1.0
    if t.schedule == "poly":
        return warm * max(0.0, 1.0 - step / length) ** t.poly_power
    if t.schedule == "step":
        return warm * t.step_gamma ** sum(step >= m for m in t.step_milestones)
    return warm


def lr_factor(cfg: Config, step: int, *, phase: int = 1) -> float:
    """Multiplier of a param group's base learning rate (``lr ×`` its group multiplier) at ``step``.

    Without phases: :func:`schedule_factor` over ``max_steps``. With the two-phase schedule of PAD-Net
    (Sec. 4.1: "In the first phase, we only optimize the front-end network with the scene parsing
    task and use a learning rate 0.001. After that, the whole network is jointly trained ... [with] a
    lower learning rate of 10e-5"): before ``phase1_steps``, groups of phase 1 run at
    ``phase1_lr / lr`` times their base rate (so the base learning rate is ``phase1_lr``) and groups of
    phase 2 at 0; from ``phase1_steps`` on every group runs at its base rate (``lr``). The schedule
    restarts at the boundary: warm-up, poly and step milestones count from each phase's first step
    over that phase's length.
    """
    t = cfg.train
    p1 = t.phase1_steps
    if step < p1:
        if phase != 1:
            return 0.0
        return (t.phase1_lr if t.phase1_lr is not None else t.lr) / t.lr * schedule_factor(cfg, step, p1)
    return schedule_factor(cfg, step - p1, t.max_steps - p1)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Per param group :func:`lr_factor` by the group's ``phase`` (see :func:`build_optimizer`)."""
    lambdas = [
        (lambda step, phase=int(g.get("phase", 1)): lr_factor(cfg, step, phase=phase)) for g in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


# -- other datasets than data.dataset (a target domain) and trainer extensions ---------------------------------


def domain_config(cfg: Config, domain: DomainData) -> Config:
    """``cfg`` reading ``domain`` (its ``dataset``, ``root``, ``synth``) instead of ``data.dataset`` (without
    ``data.extra`` or ``data.val_data``): opens another domain with the same tasks, transforms and caching."""
    data = cfg.data.model_copy(
        update={"dataset": domain.dataset, "root": domain.root, "synth": domain.synth, "extra": [], "val_data": None}
    )
    return cfg.model_copy(update={"data": data})


def eval_config(cfg: Config) -> Config:
    """The config whose ``data`` the evaluation reads: ``cfg`` itself, or with ``data.val_data`` as the dataset
    (and its ``eval_size`` when given)."""
    domain = cfg.data.val_data
    if domain is None:
        return cfg
    out = domain_config(cfg, domain)
    if domain.eval_size is not None:
        out = out.model_copy(update={"data": out.data.model_copy(update={"eval_size": list(domain.eval_size)})})
    return out


def check_label_space(source: Mapping[str, Any], other: Mapping[str, Any], *, what: str) -> None:
    """A :class:`ConfigError` naming ``what`` when ``other``'s classes (dataset meta: ``num_classes`` and, where
    both give them, ``class_names``) differ from ``source``'s: a model cannot be scored on another label space."""
    a = (source.get("num_classes"), source.get("class_names"))
    b = (other.get("num_classes"), other.get("class_names"))
    if a[0] != b[0] or (a[1] is not None and b[1] is not None and list(a[1]) != list(b[1])):
        raise ConfigError(
            f"{what}: its dataset has classes {b[0]} {b[1] or ''} but the training dataset has {a[0]} {a[1] or ''}; "
            "a target domain must share the source's label space"
        )


def build_uda(cfg: Config, *, progress: bool = True) -> TrainerExtension:
    """The MTL-UDA extension of ``cfg.uda`` (:class:`mtdense.engine.uda.UdaExtension`): the target split
    ``uda.target.split`` opened like the training set (rendered first if synthetic and missing; the training
    augmentation with ``uda.target.scales`` if given, seeded with ``seed + 1``), the discriminator settings,
    ``train.max_steps`` for their poly decay."""
    import torch.distributed as dist

    from mtdense.engine import data as D
    from mtdense.engine.uda import UdaExtension

    u = cfg.uda
    assert u is not None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise ConfigError("uda: domain adaptation trains in a single process (its discriminators are not DDP)")
    target_cfg = domain_config(cfg, u.target)
    if u.target.scales is not None:
        target_cfg.data = target_cfg.data.model_copy(update={"scales": list(u.target.scales), "scale_range": None})
    root = D.prepare_dataset_root(target_cfg, progress=progress)
    base = D.build_base_dataset(target_cfg, u.target.split, root=root)
    return UdaExtension(
        D.Augmented(base, D.build_train_transform(target_cfg), seed=cfg.seed + 1),
        batch_size=u.batch_size or cfg.train.batch_size,
        seed=cfg.seed + 1,
        adv_weight=u.adv_weight,
        lr=u.lr,
        betas=(u.betas[0], u.betas[1]),
        poly_power=u.poly_power,
        max_steps=cfg.train.max_steps,
        disc_channels=u.disc_channels,
        side_outputs=u.side_outputs,
        num_workers=cfg.data.num_workers,
        init_seed=cfg.seed,
    )


def build_probe(cfg: Config, *, progress: bool = True) -> TrainerExtension:
    """The gradient probe of ``cfg.probe`` (:class:`mtdense.engine.probe.GradProbe`)."""
    from mtdense.engine.probe import GradProbe

    assert cfg.probe is not None
    return GradProbe(every=cfg.probe.every)


#: optional top-level config section → builder of its trainer extension (:mod:`mtdense.engine.extensions`);
#: the trainer gets one extension per section present in the config, in this order
EXTENSIONS: dict[str, Callable[..., TrainerExtension]] = {"uda": build_uda, "probe": build_probe}


def build_extensions(cfg: Config, *, progress: bool = True) -> list[TrainerExtension]:
    """One trainer extension per section of :data:`EXTENSIONS` that ``cfg`` sets (not ``None``)."""
    return [build(cfg, progress=progress) for section, build in EXTENSIONS.items() if getattr(cfg, section) is not None]
