"""The training loop: deep supervision, loss balancing, schedules, evaluation, checkpoints, exact resume.

Exact resume: the checkpoint holds the model, optimiser, schedule, balancer, step and the torch RNG
state; the data order and augmentation depend only on (seed, step) (:mod:`mtdense.engine.data`).
A run stopped at step k and resumed therefore ends bitwise equal to an uninterrupted run on the same
machine and thread count. A non-finite loss stops the run at once with the step and the loss term
named; nothing is written after it, so the last good checkpoint stays intact.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mtdense.config.load import config_to_dict, save_config
from mtdense.config.schema import Config
from mtdense.engine import data as D
from mtdense.engine.checkpoint import CHECKPOINT_DIR, LAST, load_checkpoint, load_model_state, save_checkpoint
from mtdense.engine.distributed import DistInfo, barrier, init_distributed, select_device
from mtdense.engine.evaluator import autocast_context, evaluate
from mtdense.engine.logging import RunLogger
from mtdense.engine.setup import (
    build_balancer,
    build_model_for,
    build_optimizer,
    build_scheduler,
    build_tasks,
)
from mtdense.errors import MtdenseError, TrainingError
from mtdense.tasks import Task


def task_of(key: str) -> str:
    """The task of an output key: ``"initial/s8/depth"`` → ``"depth"`` (output-key contract)."""
    return key.rsplit("/", 1)[-1]


def compute_losses(outputs: dict[str, Tensor], batch: dict[str, Any], tasks: dict[str, Task]) -> dict[str, Tensor]:
    """One loss per output key, each by its task's loss against the full-resolution target."""
    losses = {}
    for key, pred in outputs.items():
        task = tasks.get(task_of(key))
        if task is None:
            raise MtdenseError(f"model output {key!r} belongs to no configured task ({', '.join(tasks)})")
        losses[key] = task.loss(pred, batch[task.target_key])
    return losses


@dataclass
class TrainResult:
    step: int
    results: dict[str, dict[str, float]] | None
    out: Path


class Trainer:
    """Trains ``cfg`` into the run directory ``out``.

    ``resume=True`` continues from ``out/checkpoints/last.pt`` up to ``cfg.train.max_steps``;
    otherwise ``out`` must not hold a run already (nothing saved earlier is ever overwritten).
    """

    def __init__(self, cfg: Config, out: str | Path, *, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.out, self.resume, self.progress = cfg, Path(out), resume, progress
        self.dist: DistInfo = init_distributed()
        self.device = select_device(self.dist)
        ckpt = self.out / CHECKPOINT_DIR / LAST
        if resume and not ckpt.is_file():
            raise MtdenseError(f"--resume: no checkpoint to resume from at {ckpt}")
        if not resume and (ckpt.exists() or (self.out / "metrics.jsonl").exists()):
            raise MtdenseError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)

        torch.manual_seed(cfg.seed)
        # rank 0 renders the synthetic benchmark if needed while the others wait
        if self.dist.is_main:
            root = D.prepare_dataset_root(cfg, progress=progress)
        barrier(self.dist)
        if not self.dist.is_main:
            root = D.prepare_dataset_root(cfg, progress=False)
        self.meta = D.dataset_meta(root)
        self.tasks = build_tasks(cfg, self.meta)
        self.eval_tasks = {t: self.tasks[t] for t in cfg.data.tasks}
        self.train_set = D.Augmented(
            D.build_base_dataset(cfg, cfg.data.train_split, root=root),
            D.build_train_transform(cfg),
            seed=cfg.seed,
        )
        self.val_set = D.Augmented(
            D.build_base_dataset(cfg, cfg.data.val_split, root=root),
            D.build_eval_transform(cfg),
            seed=cfg.seed,
        )

        self.model = build_model_for(cfg, self.tasks).to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.train.phase1_steps and not hasattr(self.model, "phase_outputs"):
            raise MtdenseError(
                f"train.phase1_steps: model {cfg.model.name!r} has no two-phase schedule (PAD-Net has one)"
            )
        self.balancer = build_balancer(cfg, self.tasks).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model, self.balancer)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.step = 0
        if resume:
            self._load(ckpt)
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.train.phase1_steps > 0,  # phase 1 leaves parameters unused
            )
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            save_config(cfg, self.out / "config.yaml")
        self.logger = RunLogger(self.out, enabled=self.dist.is_main)

    # -- checkpoints --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "step": self.step,
            "rng": {"torch": torch.get_rng_state()},
            "config": config_to_dict(self.cfg),
            "meta": self.meta,
        }

    def save(self) -> Path | None:
        if not self.dist.is_main:
            return None
        return save_checkpoint(self.state(), self.out / CHECKPOINT_DIR / LAST)

    def _load(self, path: Path) -> None:
        state = load_checkpoint(path)
        load_model_state(self.model, state["model"], source=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])

    # -- loop -------------------------------------------------------------------------------------
    def run_eval(self) -> dict[str, dict[str, float]]:
        if self.dist.enabled:
            # DDP broadcasts buffers at the start of a forward, so after the last step each rank holds
            # BN statistics of its own batch: evaluate every shard with rank 0's (the checkpointed) ones
            import torch.distributed as dist

            for buf in self.model.buffers():
                dist.broadcast(buf, src=0)
        loader = D.make_eval_loader(self.cfg, self.val_set, rank=self.dist.rank, world_size=self.dist.world_size)
        results = evaluate(
            self.model,
            loader,
            self.eval_tasks,
            device=self.device,
            bf16=self.cfg.train.bf16,
            channels_last=self.cfg.train.channels_last,
        )
        if self.cfg.eval.baseline:
            results = attach_delta(results, self.cfg.eval.baseline)
        return results

    def train(self, *, stop_after: int | None = None) -> TrainResult:
        """Train up to ``train.max_steps``; with ``stop_after`` stop early at that step (and checkpoint),
        as an interrupted job would, so that ``--resume`` can continue it."""
        cfg = self.cfg.train
        loader = D.make_train_loader(
            self.cfg,
            self.train_set,
            start_step=self.step,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        steps_per_epoch = loader.batch_sampler.steps_per_epoch  # type: ignore[union-attr]
        results = None
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        self.model.train()
        it = iter(loader)
        t0, seen = time.perf_counter(), 0
        try:
            while self.step < cfg.max_steps:
                batch = next(it)
                log = self.train_step(batch)
                self.step += 1
                seen += batch["image"].shape[0] * self.dist.world_size
                ips = seen / max(time.perf_counter() - t0, 1e-9)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{log['loss']:.4f}", img_s=f"{ips:.1f}")
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
                    self.logger.log({"step": self.step, "split": "train", **log, "lr": lrs, "images_per_s": ips})
                end_of_epoch = self.step % steps_per_epoch == 0
                final = self.step == cfg.max_steps
                if final or (cfg.eval_every and self.step % cfg.eval_every == 0):
                    results = self.run_eval()
                    self.logger.log({"step": self.step, "split": "val", "results": results})
                stopping = stop_after is not None and self.step >= stop_after
                if (
                    final
                    or end_of_epoch
                    or stopping
                    or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
                ):
                    self.save()
                if stopping:
                    break
        finally:
            if bar is not None:
                bar.close()
            self.logger.close()
        if results is not None and self.dist.is_main:
            (self.out / "results.json").write_text(json.dumps(results, indent=2))
        return TrainResult(step=self.step, results=results, out=self.out)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        batch = {k: (v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in batch.items()}
        image = batch["image"]
        if self.cfg.train.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.cfg.train.bf16):
            outputs = self.ddp_model(image)
        if self.step < self.cfg.train.phase1_steps:
            keep = self.model.phase_outputs(1)
            outputs = {k: v for k, v in outputs.items() if k in keep}
        losses = compute_losses(outputs, batch, self.tasks)
        total, log = self.balancer(losses)
        if not torch.isfinite(total):
            bad = [k for k, v in losses.items() if not torch.isfinite(v)]
            last = self.out / CHECKPOINT_DIR / LAST
            kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written"
            raise TrainingError(
                f"non-finite loss at step {self.step + 1} (terms: {', '.join(bad) or 'total'}); stopping: {kept}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.train.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        record = {"loss": float(total.detach())}
        record.update({f"loss/{k}": float(v.detach()) for k, v in losses.items()})
        record.update({k: float(v) for k, v in log.items() if isinstance(v, (int, float))})
        return record


def attach_delta(results: dict[str, dict[str, float]], baseline_path: str | Path) -> dict[str, Any]:
    """Add ``{"multitask": {"delta_m": Δm}}`` (MTI-Net eq. 2) against a single-task results JSON."""
    from mtdense.metrics import multitask_delta

    path = Path(baseline_path)
    if not path.is_file():
        raise MtdenseError(f"eval.baseline: single-task results file not found: {path}")
    baseline = json.loads(path.read_text())
    common = {t: results[t] for t in results if t in baseline and t != "multitask"}
    delta = multitask_delta(common, {t: baseline[t] for t in common})
    return {**results, "multitask": {"delta_m": float(delta) if math.isfinite(delta) else delta}}
