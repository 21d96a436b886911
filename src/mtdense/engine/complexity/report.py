"""The complexity report of a config: parameters and FLOPs per module, the sum of the single-task models
it replaces (MTI-Net Table 7) and, on request, timed train steps and inference passes."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtdense.config.derive import single_task_config
from mtdense.config.load import load_config
from mtdense.config.schema import Config
from mtdense.engine.compile import compile_for_training
from mtdense.engine.complexity.flops import flop_breakdown
from mtdense.engine.complexity.timing import time_model
from mtdense.engine.setup import build_balancer, build_model_for, build_optimizer, build_tasks
from mtdense.errors import DataError, MtdenseError
from mtdense.tasks import Task


def _class_meta(cfg: Config) -> tuple[dict[str, Any], str]:
    """The dataset meta that sets the semseg head (``num_classes``, class names) and where it comes from.

    In order: the ``meta.json`` of ``data.root`` when the dataset is on disk; for a synthetic dataset
    that is not rendered yet, the classes of its ``data.synth`` family (what the writer will put in
    ``meta.json``); for ``nyud_mt``, the 40 classes of the NYUD-MT benchmark (Gupta et al.'s mapping,
    the protocol of PAD-Net and MTI-Net). Otherwise ``{}``: a config with semseg then fails in
    :meth:`~mtdense.tasks.SemsegTask.from_config`, naming ``data.root``.
    """
    meta_path = Path(cfg.data.root).expanduser() / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{meta_path}: cannot read the dataset meta: {e}") from None
        if not isinstance(meta, dict):
            raise DataError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
        return meta, str(meta_path)
    if cfg.data.dataset == "synthetic" and cfg.data.synth is not None:
        from mtdense.data.synthetic.families import get_family

        family = get_family(cfg.data.synth.family)
        meta = {"num_classes": family.num_classes, "class_names": list(family.class_names)}
        return meta, f"synthetic family {family.name!r} (not rendered yet at {cfg.data.root})"
    if cfg.data.dataset == "nyud_mt":
        from mtdense.data.nyud import NYU40_CLASS_NAMES

        meta = {"num_classes": len(NYU40_CLASS_NAMES), "class_names": list(NYU40_CLASS_NAMES)}
        return meta, f"the NYUD-MT 40-class protocol (no meta.json at {meta_path})"
    return {}, f"no meta.json at {meta_path}"


def _without_pretrained(cfg: Config) -> Config:
    """A copy of ``cfg`` whose backbone loads no checkpoint (sizes and speed do not depend on weights)."""
    backbone = cfg.model.backbone.model_copy(update={"pretrained": None})
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"backbone": backbone})})


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (the config's ``train.threads``), then restore."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _analyse(cfg: Config, meta: dict[str, Any], size: tuple[int, int]) -> tuple[nn.Module, dict[str, Task], dict]:
    """Build the model of ``cfg`` and count its parameters and FLOPs per image at ``size``."""
    tasks = build_tasks(cfg, meta)
    model = build_model_for(cfg, tasks)
    model.eval()
    flops = flop_breakdown(model, torch.zeros(1, 3, *size))
    per_module = {
        name: {"params": _params(child), "gflops": flops[name] / 1e9} for name, child in model.named_children()
    }
    # Work and parameters of the model's own forward, outside any child (e.g. a functional conv).
    root_params = sum(p.numel() for p in model.parameters(recurse=False))
    root_flops = flops["total"] - sum(flops[name] for name in per_module)
    if root_params or root_flops:
        per_module["(root)"] = {"params": root_params, "gflops": root_flops / 1e9}
    stats = {"params": _params(model), "gflops": flops["total"] / 1e9, "per_module": per_module}
    stats["gmacs"] = stats["gflops"] / 2
    return model, tasks, stats


def complexity_report(
    config_path: str | Path | None,
    *,
    overrides: Sequence[str] = (),
    size: tuple[int, int],
    batch: int = 1,
    time: bool = False,
    bf16: bool = False,
    compare_stl: bool = True,
    repeats: int = 5,
    warmup: int = 2,
) -> dict[str, Any]:
    """Parameters, forward FLOPs and (with ``time``) speed of the model of a config.

    Args:
        config_path: YAML config (``None``: the defaults); ``overrides`` are dotted ``key=value`` strings.
        size: input ``(H, W)`` in pixels; FLOPs are per image of this size.
        batch: batch size of the timed train steps and inference passes.
        time: also time train steps and inference (median of ``repeats`` after ``warmup``).
        bf16: time under bf16 autocast (FLOPs are counted in fp32; they do not depend on the dtype).
        compare_stl: add the sum of the single-task models (skipped when the model is ``stl``).

    Returns a JSON-serialisable dict: ``params`` (count), ``params_m`` (millions), ``gflops`` and
    ``gmacs`` (per image, 1 multiply-add = 2 FLOPs), ``train_step_s`` / ``infer_s`` (median seconds,
    ``None`` without ``time``; ``train_step_min_s`` / ``infer_min_s``: the fastest run),
    ``per_module`` (``{child: {params, gflops}}`` over ``model.named_children()``, plus ``"(root)"``
    for parameters or work of the model's own ``forward`` outside its children, if any), ``stl``
    (``None`` or ``{params, params_m, gflops, gmacs, per_task, params_ratio, gflops_ratio}`` where
    the ratios are multi-task / sum of single-task), the settings (model, backbone, tasks, size,
    batch, dtype, channels_last, threads, ``num_classes``: the dataset's class count, ``None`` when
    unknown) and ``notes``. Raises the config's :class:`~mtdense.errors.ConfigError` for unknown keys
    and :class:`~mtdense.errors.DataError` when semseg is a task and no class count is known
    (see :func:`_class_meta`).
    """
    if batch < 1 or repeats < 1 or warmup < 0 or len(size) != 2 or min(size) < 1:
        raise MtdenseError(
            "complexity: expected size (H, W) > 0, batch ≥ 1, repeats ≥ 1, warmup ≥ 0; "
            f"got size {tuple(size)}, batch {batch}, repeats {repeats}, warmup {warmup}"
        )
    cfg = _without_pretrained(load_config(config_path, list(overrides)))
    source = str(config_path) if config_path is not None else "<defaults>"
    size = (int(size[0]), int(size[1]))
    meta, meta_from = _class_meta(cfg)
    num_classes = meta.get("num_classes")
    notes = [
        "FLOPs: torch.utils.flop_counter (convolutions and matmuls only; 1 multiply-add = 2 FLOPs; GMACs = GFLOPs / 2)"
    ]
    if num_classes is not None:
        notes.append(f"classes: {num_classes} ({meta_from})")
    if cfg.model.backbone.pretrained:
        notes.append("model.backbone.pretrained not loaded (weights change neither size nor speed)")

    with _threads(cfg.train.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model, tasks, stats = _analyse(cfg, meta, size)
        report: dict[str, Any] = {
            "config": source,
            "model": cfg.model.name,
            "backbone": cfg.model.backbone.name,
            "tasks": list(cfg.data.tasks),
            "aux_tasks": list(cfg.data.aux_tasks),
            "size": list(size),
            "batch": batch,
            "dtype": "bf16-autocast" if bf16 else "fp32",
            "channels_last": cfg.train.channels_last,
            "compile": cfg.train.compile,
            "threads": torch.get_num_threads(),
            "num_classes": num_classes,
            "params": stats["params"],
            "params_m": stats["params"] / 1e6,
            "gflops": stats["gflops"],
            "gmacs": stats["gmacs"],
            "train_step_s": None,
            "infer_s": None,
            "train_step_min_s": None,
            "infer_min_s": None,
            "repeats": repeats if time else None,
            "per_module": stats["per_module"],
            "stl": None,
            "notes": notes,
        }
        if time:
            if cfg.train.channels_last:
                model = model.to(memory_format=torch.channels_last)
            balancer = build_balancer(cfg, tasks)
            balancer.attach(model)  # as the trainer does (e.g. MGDA-UB hooks the shared encoder)
            optimizer = build_optimizer(cfg, model, balancer)
            # train.compile: time the compiled forward (compiling happens in the warm-up steps)
            timed = compile_for_training(model, device=torch.device("cpu")) if cfg.train.compile else model
            report.update(
                time_model(
                    timed,
                    tasks=tasks,
                    balancer=balancer,
                    optimizer=optimizer,
                    size=size,
                    batch=batch,
                    bf16=bf16,
                    channels_last=cfg.train.channels_last,
                    repeats=repeats,
                    warmup=warmup,
                )
            )
        del model
        if not compare_stl:
            notes.append("single-task comparison skipped (--no-stl)")
        elif cfg.model.name == "stl":
            notes.append("single-task comparison skipped: the model is already single-task")
        else:
            report["stl"] = _stl_sum(cfg, meta, size, source=source, mt=stats)
    return report


def _stl_sum(cfg: Config, meta: dict[str, Any], size: tuple[int, int], *, source: str, mt: dict) -> dict[str, Any]:
    """Sum of params and FLOPs of one ``stl`` model per main task (MTI-Net Table 7)."""
    per_task = {}
    for task in cfg.data.tasks:
        _, _, s = _analyse(single_task_config(cfg, task, source=source), meta, size)
        per_task[task] = {"params": s["params"], "gflops": s["gflops"]}
    params = sum(t["params"] for t in per_task.values())
    gflops = sum(t["gflops"] for t in per_task.values())
    return {
        "params": params,
        "params_m": params / 1e6,
        "gflops": gflops,
        "gmacs": gflops / 2,
        "per_task": per_task,
        "params_ratio": mt["params"] / params if params else math.nan,
        "gflops_ratio": mt["gflops"] / gflops if gflops else math.nan,
    }
