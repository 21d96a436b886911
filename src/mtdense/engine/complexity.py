"""Resource analysis of a configured model: parameters, forward FLOPs, train-step and inference time.

This is what ``mtdense complexity CONFIG --size HxW`` prints. It needs no dataset on disk: the tasks
are built from the config with a synthetic dataset meta, the model from the config (without loading
``model.backbone.pretrained``: weights do not change sizes or speed), and timings use random inputs
and targets of the shapes and dtypes of the data contract.

FLOPs convention
    :func:`count_flops` uses :class:`torch.utils.flop_counter.FlopCounterMode`, which counts a
    multiply-add as **2 FLOPs** and counts only the matrix products (convolutions, transposed
    convolutions, linear layers, matmuls, attention); batch norm, activations, pooling, bilinear
    upsampling and element-wise arithmetic are not counted. Papers often report MACs (multiply-adds)
    under the name "FLOPs"; the report therefore gives both ``gflops`` and ``gmacs = gflops / 2``.
    A convolution's bias is not counted either (it is ``Cout·H·W`` additions, < 1 % of the layer).

Single-task comparison (MTI-Net, seed 002, Table 7)
    A multi-task model is compared with the *sum* of the single-task models that it replaces: for
    every main task, the config with ``model.name=stl`` on the same backbone, ``data.tasks=[task]``
    and ``data.aux_tasks=[]``. Of the ``model`` section only the backbone and the options that the
    ``stl`` config also has (e.g. ``head``) are carried over; the multi-task architecture's own
    options are not keys of the ``stl`` config. Check against the paper: on NYUD at 480×640 with
    HRNet-W18-small-v2 (``configs/nyud/*_hrnet18s.yaml``) the two single-task models come to
    7.88 M parameters and 22.5 GMACs, Table 7a's "8.0 M, 22.0 G FLOPS" (so the paper's FLOPS are
    MACs), and the shared-encoder ``mtl`` and ``padnet`` to −49 % / −43 % and −12 % / +206 %
    (paper: −50 % / −45 % and −15 % / +204 %).
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time as _time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from mtdense.config.load import config_to_dict, load_config, validate_config
from mtdense.config.schema import Config
from mtdense.engine.evaluator import autocast_context
from mtdense.engine.setup import build_balancer, build_model_for, build_optimizer, build_tasks
from mtdense.engine.trainer import compute_losses
from mtdense.errors import DataError, MtdenseError
from mtdense.tasks import Task

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "complexity_report",
    "count_flops",
    "flop_breakdown",
    "format_complexity",
    "random_batch",
    "time_model",
]

#: Classes of NYUD-MT (Gupta et al.'s 40-class mapping); also the fallback when no ``meta.json`` gives one.
DEFAULT_NUM_CLASSES = 40


# -- FLOPs ---------------------------------------------------------------------------------------------
def flop_breakdown(module: nn.Module, inputs: Tensor | Sequence[Tensor]) -> dict[str, int]:
    """FLOPs of one forward pass of ``module`` on ``inputs``, in total and per top-level child.

    Returns ``{"total": n, "<child name>": n_child, ...}`` (one entry per ``module.named_children()``;
    children that do no counted work get 0; work done in ``module``'s own ``forward`` outside any child
    is in the total only). Runs under ``no_grad`` in the module's current mode. A multiply-add counts
    as 2 FLOPs; see the module docstring for what is counted. The first call in a process takes about
    2 s longer: :class:`FlopCounterMode` imports ``torch._dynamo``.
    """
    args = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        module(*args)
    counts = {name: sum(per_op.values()) for name, per_op in counter.get_flop_counts().items()}
    # FlopCounterMode keys are the dotted paths "<RootClass>.<child>.<grandchild>..." of the modules that
    # were *called*, each holding the FLOPs of its call including its descendants'. A container that is
    # never called itself (an nn.ModuleDict of heads) has no key, so a child's FLOPs are the sum over its
    # outermost called descendants: the keys below it none of whose ancestors below it has a key.
    root = type(module).__name__
    out = {"total": int(counter.get_total_flops())}
    for name, _ in module.named_children():
        prefix = f"{root}.{name}"
        total = 0
        for key, n in counts.items():
            if key != prefix and not key.startswith(prefix + "."):
                continue
            parts = key.split(".")
            ancestors = (".".join(parts[:i]) for i in range(prefix.count(".") + 1, len(parts)))
            if not any(a in counts for a in ancestors):
                total += n
        out[name] = int(total)
    return out


def count_flops(module: nn.Module, inputs: Tensor | Sequence[Tensor]) -> int:
    """Total FLOPs of one forward pass of ``module`` on ``inputs`` (multiply-add = 2 FLOPs).

    For a convolution with ``Cin`` input and ``Cout`` output channels, kernel ``k×k``, output
    ``(B, Cout, H', W')`` and ``groups=1`` this is ``2·B·Cout·Cin·k²·H'·W'`` (bias not counted).
    The count is for the whole ``inputs`` batch; divide by ``B`` for FLOPs per image.
    """
    return flop_breakdown(module, inputs)["total"]


# -- random data of the data contract -------------------------------------------------------------------
def _semseg_target(task: Task, batch: int, size: tuple[int, int], gen: torch.Generator) -> Tensor:
    return torch.randint(0, task.out_channels, (batch, *size), generator=gen, dtype=torch.int64)


def _depth_target(task: Task, batch: int, size: tuple[int, int], gen: torch.Generator) -> Tensor:
    # Metres in [0.5, 10), the NYUD range; all valid (> 0) so the masked loss sees every pixel.
    return 0.5 + 9.5 * torch.rand((batch, 1, *size), generator=gen)


def _normals_target(task: Task, batch: int, size: tuple[int, int], gen: torch.Generator) -> Tensor:
    return F.normalize(torch.randn((batch, 3, *size), generator=gen), dim=1)


def _edge_target(task: Task, batch: int, size: tuple[int, int], gen: torch.Generator) -> Tensor:
    # About 10 % edge pixels, a typical density of NYUD edge maps; both classes present for the balanced BCE.
    return (torch.rand((batch, 1, *size), generator=gen) < 0.1).float()


#: Random target makers by ``Task.target_key``: ``(task, batch, (H, W), generator) -> target``.
RANDOM_TARGETS: dict[str, Callable[[Task, int, tuple[int, int], torch.Generator], Tensor]] = {
    "semseg": _semseg_target,
    "depth": _depth_target,
    "normals": _normals_target,
    "edge": _edge_target,
}


def random_batch(tasks: dict[str, Task], *, batch: int, size: tuple[int, int], seed: int = 0) -> dict[str, Tensor]:
    """A random batch of the data contract: ``image`` ``(B, 3, H, W)`` in [0, 1] and every task's target.

    Targets: ``semseg`` int64 ``(B, H, W)`` in ``0..K−1``; ``depth`` float32 ``(B, 1, H, W)`` metres in
    [0.5, 10); ``normals`` float32 unit vectors ``(B, 3, H, W)``; ``edge`` float32 ``(B, 1, H, W)`` in {0, 1}.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {"image": torch.rand((batch, 3, *size), generator=gen)}
    for name, task in tasks.items():
        maker = RANDOM_TARGETS.get(task.target_key)
        if maker is None:
            raise MtdenseError(
                f"complexity: no random target for task {name!r} (target key {task.target_key!r}); "
                f"known: {', '.join(RANDOM_TARGETS)}"
            )
        out[task.target_key] = maker(task, batch, size, gen)
    return out


# -- timing ---------------------------------------------------------------------------------------------
def _seconds(fn: Callable[[], Any], *, repeats: int, warmup: int) -> tuple[float, float]:
    """``(median, min)`` wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = _time.perf_counter()
        fn()
        times.append(_time.perf_counter() - t0)
    return statistics.median(times), min(times)


def time_model(
    model: nn.Module,
    *,
    tasks: dict[str, Task],
    balancer: nn.Module,
    optimizer: torch.optim.Optimizer,
    size: tuple[int, int],
    batch: int,
    bf16: bool = False,
    channels_last: bool = False,
    repeats: int = 5,
    warmup: int = 2,
) -> dict[str, float]:
    """Median seconds of a train step and of an inference pass on random data (CPU).

    Train step, exactly as :meth:`mtdense.engine.trainer.Trainer.train_step` does it: forward (under
    bf16 autocast when ``bf16``) → :func:`compute_losses` (outside autocast, as the trainer) →
    ``balancer`` → ``zero_grad`` → backward → ``optimizer.step()``. Inference: eval mode, ``no_grad``,
    same autocast. Each is run ``warmup`` times untimed (allocator and oneDNN primitive caches), then
    ``repeats`` times; returns the medians ``{"train_step_s", "infer_s"}`` and the minima
    ``{"train_step_min_s", "infer_min_s"}`` (on a machine shared with other work the minimum is the
    least disturbed run). The optimiser really steps, so ``model``'s weights change.
    """
    device = torch.device("cpu")
    data = random_batch(tasks, batch=batch, size=size)
    image = data["image"]
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)

    def train_step() -> None:
        with autocast_context(device, bf16):
            outputs = model(image)
        losses = compute_losses(outputs, data, tasks)
        total, _ = balancer(losses)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    def infer() -> None:
        with torch.no_grad(), autocast_context(device, bf16):
            model(image)

    was_training = model.training
    try:
        model.train()
        train_s, train_min = _seconds(train_step, repeats=repeats, warmup=warmup)
        model.eval()
        infer_s, infer_min = _seconds(infer, repeats=repeats, warmup=warmup)
    finally:
        model.train(was_training)
    return {
        "train_step_s": train_s,
        "infer_s": infer_s,
        "train_step_min_s": train_min,
        "infer_min_s": infer_min,
    }


# -- the report -----------------------------------------------------------------------------------------
def _num_classes(cfg: Config) -> tuple[int, str]:
    """Classes of the semseg head and where the number comes from (for the report)."""
    if cfg.data.dataset == "nyud_mt":
        return DEFAULT_NUM_CLASSES, "NYUD-MT 40-class protocol"
    meta_path = Path(cfg.data.root).expanduser() / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{meta_path}: invalid JSON: {e}") from None
        if "num_classes" in meta:
            return int(meta["num_classes"]), f"{meta_path}"
        if "class_names" in meta:
            return len(meta["class_names"]), f"{meta_path} (class_names)"
    return DEFAULT_NUM_CLASSES, f"assumed: no meta.json with num_classes at {meta_path}"


def _without_pretrained(cfg: Config) -> Config:
    """A copy of ``cfg`` whose backbone loads no checkpoint (sizes and speed do not depend on weights)."""
    backbone = cfg.model.backbone.model_copy(update={"pretrained": None})
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"backbone": backbone})})


def _stl_config(cfg: Config, task: str, *, source: str) -> Config:
    """The single-task config of ``task``: ``model.name=stl`` on the same backbone, no auxiliary tasks.

    Model options that the ``stl`` config also has (e.g. ``head`` when comparing ``mtl``) are carried
    over so that the single-task models use the same heads; the others belong to the multi-task
    architecture and are dropped.
    """
    from mtdense.models import model_config_class

    raw = config_to_dict(cfg)
    try:
        shared = set(model_config_class("stl").model_fields)
    except KeyError as e:
        raise MtdenseError(f"complexity: cannot compare with single-task models: {e.args[0]}") from None
    raw["model"] = {k: v for k, v in raw["model"].items() if k in shared} | {"name": "stl"}
    raw["data"]["tasks"] = [task]
    raw["data"]["aux_tasks"] = []
    return validate_config(raw, source=f"{source} (single-task {task})")


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
    batch, dtype, channels_last, threads, num_classes) and
    ``notes``. Raises the config's :class:`~mtdense.errors.ConfigError` for unknown keys.
    """
    if batch < 1 or repeats < 1 or warmup < 0 or len(size) != 2 or min(size) < 1:
        raise MtdenseError(
            "complexity: expected size (H, W) > 0, batch ≥ 1, repeats ≥ 1, warmup ≥ 0; "
            f"got size {tuple(size)}, batch {batch}, repeats {repeats}, warmup {warmup}"
        )
    cfg = _without_pretrained(load_config(config_path, list(overrides)))
    source = str(config_path) if config_path is not None else "<defaults>"
    size = (int(size[0]), int(size[1]))
    num_classes, classes_from = _num_classes(cfg)
    meta = {"num_classes": num_classes}
    notes = [
        "FLOPs: torch.utils.flop_counter (convolutions and matmuls only; 1 multiply-add = 2 FLOPs; GMACs = GFLOPs / 2)"
    ]
    if "semseg" in [*cfg.data.tasks, *cfg.data.aux_tasks]:
        notes.append(f"semseg classes: {num_classes} ({classes_from})")
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
            optimizer = build_optimizer(cfg, model, balancer)
            report.update(
                time_model(
                    model,
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
        _, _, s = _analyse(_stl_config(cfg, task, source=source), meta, size)
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


def format_complexity(report: dict[str, Any]) -> str:
    """A human-readable table of :func:`complexity_report`'s result."""
    h, w = report["size"]
    tasks = ", ".join(report["tasks"])
    if report["aux_tasks"]:
        tasks += f" (aux: {', '.join(report['aux_tasks'])})"
    lines = [
        f"{report['model']} on {report['backbone']}: {tasks}",
        f"input 3×{h}×{w}; {report['config']}",
        "",
        f"{'module':<24}{'params (M)':>12}{'GFLOPs':>10}",
    ]
    for name, m in report["per_module"].items():
        lines.append(f"  {name:<22}{m['params'] / 1e6:>12.3f}{m['gflops']:>10.2f}")
    lines.append(f"{'total':<24}{report['params_m']:>12.3f}{report['gflops']:>10.2f}")
    lines.append(f"GMACs per image: {report['gmacs']:.2f} (1 multiply-add = 2 FLOPs)")
    stl = report.get("stl")
    if stl:
        lines += ["", f"single-task models ({', '.join(stl['per_task'])}), same backbone:"]
        for task, s in stl["per_task"].items():
            lines.append(f"  stl {task:<18}{s['params'] / 1e6:>12.3f}{s['gflops']:>10.2f}")
        lines.append(f"{'sum':<24}{stl['params_m']:>12.3f}{stl['gflops']:>10.2f}")
        lines.append(
            f"multi-task / sum of single-task: {stl['params_ratio']:.2f}× params, {stl['gflops_ratio']:.2f}× FLOPs"
        )
    if report.get("train_step_s") is not None:
        layout = "channels_last" if report["channels_last"] else "contiguous"
        lines += [
            "",
            f"timing: batch {report['batch']}, {report['dtype']}, {layout}, {report['threads']} threads, "
            f"median of {report['repeats']}",
            f"  train step  {report['train_step_s']:.3f} s (fastest {report['train_step_min_s']:.3f} s)",
            f"  inference   {report['infer_s']:.3f} s (fastest {report['infer_min_s']:.3f} s)",
        ]
    if report.get("notes"):
        lines += ["", *(f"note: {n}" for n in report["notes"])]
    return "\n".join(lines)
