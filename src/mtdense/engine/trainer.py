"""The training loop: deep supervision, loss balancing, schedules, evaluation, checkpoints, exact resume.

Exact resume: the checkpoint holds the model, optimiser, schedule, balancer, step and the torch RNG
state; the data order and augmentation depend only on (seed, step) (:mod:`mtdense.engine.data`).
A run stopped at step k and resumed therefore ends bitwise equal to an uninterrupted run on the same
machine and thread count. A non-finite loss stops the run at once with the step and the loss term
named; nothing is written after it, so the last good checkpoint stays intact.

Preemption: SIGTERM (what schedulers such as SLURM send before a kill) and SIGINT (Ctrl-C) during
:meth:`Trainer.train` only set a flag; the step in flight completes, a checkpoint of that step is
written, and :class:`TrainingInterrupted` names the step and the file (the command line exits with
128 + the signal number, 143 or 130, as shells report a process stopped by that signal, so a job
script can tell a preempted run, to requeue with ``--resume``, from a failed one). A second signal
does not cut the checkpoint short. A hard kill (``kill -9``) loses only the steps since the last
checkpoint, whose write is atomic (:mod:`mtdense.engine.checkpoint`); ``--resume`` drops their lines
from ``metrics.jsonl`` and redoes them identically.

Extension point: methods that train more than the model with its task losses (domain adaptation's target
loader, discriminators and their optimiser) are trainer extensions (:mod:`mtdense.engine.extensions`), one
per optional config section (``uda:``, :data:`mtdense.engine.setup.EXTENSIONS`). The trainer loops over them:
``setup`` after the optimiser exists, ``extra_loss`` each step after the task losses' backward (terms added to
the model's gradients, logged as ``loss/<name>``, checked for NaN), ``after_step`` after the optimiser step,
``state_dict`` in every checkpoint (under ``"extensions"``, so exact resume covers them), ``close`` when
:meth:`Trainer.train` ends. The trainer itself has no branch per method.

``eval.precise_bn: N`` re-estimates the BatchNorm statistics of the current weights over the run's first N
training batches before each evaluation (:mod:`mtdense.engine.precise_bn`); the checkpoint of that step holds
them. The global RNG is forked around it, so the training itself is the one without it.

``data.val_data`` evaluates on another dataset (a target domain) than the one trained on; its classes must be
the training set's.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mtdense._allocator import reuse_freed_memory
from mtdense.config.load import config_to_dict, save_config
from mtdense.config.schema import Config
from mtdense.engine import data as D
from mtdense.engine.checkpoint import (
    CHECKPOINT_DIR,
    LAST,
    capture_rng,
    check_resume_config,
    load_checkpoint,
    load_model_state,
    rank_rng,
    restore_rng,
    save_checkpoint,
)
from mtdense.engine.compile import compile_for_training
from mtdense.engine.distributed import DistInfo, any_rank, barrier, gather_to_all, init_distributed, select_device
from mtdense.engine.evaluation import attach_delta, load_baseline
from mtdense.engine.evaluator import evaluate, training_forward
from mtdense.engine.logging import RunLogger
from mtdense.engine.precise_bn import re_estimate_for_run
from mtdense.engine.setup import (
    build_balancer,
    build_extensions,
    build_model_for,
    build_optimizer,
    build_scheduler,
    build_tasks,
    check_label_space,
    eval_config,
)
from mtdense.errors import CheckpointError, ConfigError, MtdenseError, TrainingError
from mtdense.losses import check_tag_weights, task_of
from mtdense.tasks import Task


def compute_losses(outputs: dict[str, Tensor], batch: dict[str, Any], tasks: dict[str, Task]) -> dict[str, Tensor]:
    """One loss per output key, each by its task's loss against the full-resolution target.

    Partially labelled batches (the :class:`~mtdense.tasks.Task` contract): a sample whose target of
    task ``t`` holds only ``t``'s ignore value has no label for ``t``. Every loss of ``t`` is then
    computed over the labelled samples only, exactly as if the batch held just those; when no sample
    of the batch is labelled for ``t``, its keys are left out of the dict, so that no balancer term
    (e.g. the learned ``δ_t`` of TRL eq. 7) is driven by a loss that does not exist.
    """
    losses = {}
    labelled: dict[str, Tensor | None] = {}
    for key, pred in outputs.items():
        task = tasks.get(task_of(key))
        if task is None:
            raise MtdenseError(f"model output {key!r} belongs to no configured task ({', '.join(tasks)})")
        target = batch[task.target_key]
        if task.name not in labelled:
            labelled[task.name] = task.labelled_samples(target)
        keep = labelled[task.name]
        if keep is None:
            losses[key] = task.loss(pred, target)
        elif keep.any():
            losses[key] = task.loss(pred[keep], target[keep])
    return losses


def _outputs_zero(outputs: dict[str, Tensor]) -> Tensor:
    """``0 · Σ outputs``: a zero loss connected to every output (a step without any labelled target)."""
    return torch.stack([v.float().sum() for v in outputs.values()]).sum() * 0.0


@torch.no_grad()
def _output_keys(model: nn.Module, device: torch.device) -> list[str]:
    """The output keys of ``model``, from one eval-mode forward of a 64×64 zero image (no state changes)."""
    was_training = model.training
    model.eval()
    try:
        return list(model(torch.zeros(1, 3, 64, 64, device=device)))
    finally:
        model.train(was_training)


def _use_threads(threads: int | None) -> Callable[[], None]:
    """Set torch's intra-op threads to ``threads`` (``None``: leave them); returns the undo."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    return lambda: torch.set_num_threads(before)


class TrainingInterrupted(TrainingError):
    """Training stopped on a signal after writing a checkpoint of the last completed step.

    ``exit_code`` is 128 + the signal number (SIGINT 130, SIGTERM 143), the shell's convention.
    """

    def __init__(self, message: str, *, signum: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + int(signum)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _catch_stop_signals(received: list[int]) -> Callable[[], None]:
    """Record SIGTERM/SIGINT in ``received`` instead of acting on them; returns the function that puts
    the previous handlers back. Python handles signals only in the main thread: elsewhere, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def note(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, note) for s in STOP_SIGNALS}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    return restore


def _drop_records_after(path: Path, step: int) -> None:
    """Rewrite ``metrics.jsonl`` without the records of steps after ``step`` (atomically): after a hard
    kill they describe steps that the resumed run redoes, and would otherwise appear twice."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record_step = int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError):  # a line cut short by the kill
            continue
        if record_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


@dataclass
class TrainResult:
    step: int
    results: dict[str, dict[str, float]] | None
    out: Path


class Trainer:
    """Trains ``cfg`` into the run directory ``out``.

    ``resume=True`` continues from ``out/checkpoints/last.pt`` up to ``cfg.train.max_steps``; ``cfg``
    may differ from the saved config only in :data:`~mtdense.engine.checkpoint.RESUME_MAY_CHANGE`, and
    the number of processes must be the one that wrote the checkpoint (else an error, before anything
    is written). Otherwise ``out`` must not hold a run already (nothing saved earlier is ever overwritten).

    ``extensions`` (:mod:`mtdense.engine.extensions`) are built from the config's optional sections by
    :func:`mtdense.engine.setup.build_extensions` and called at the points the module docstring lists.
    """

    def __init__(self, cfg: Config, out: str | Path, *, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.out, self.resume, self.progress = cfg, Path(out), resume, progress
        reuse_freed_memory()  # fewer page faults per step (mtdense._allocator)
        self.dist: DistInfo = init_distributed()
        self.device = select_device(self.dist)
        ckpt = self.out / CHECKPOINT_DIR / LAST
        if resume and not ckpt.is_file():
            raise MtdenseError(f"--resume: no checkpoint to resume from at {ckpt}")
        if not resume and (ckpt.exists() or (self.out / "metrics.jsonl").exists()):
            raise MtdenseError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        # a resume that would continue another experiment fails here, before anything is written
        saved = self._check_resumable(ckpt) if resume else None
        if cfg.eval.baseline:  # a bad Δm baseline fails now, not after the last step (before its checkpoint)
            load_baseline(cfg.eval.baseline, list(cfg.data.tasks))

        torch.manual_seed(cfg.seed)
        # rank 0 renders the synthetic benchmark if needed while the others wait; data.val_data evaluates on
        # another dataset (a target domain) than the one trained on
        val_cfg = eval_config(cfg)
        if self.dist.is_main:
            root = D.prepare_dataset_root(cfg, progress=progress)
            val_root = D.prepare_dataset_root(val_cfg, progress=progress)
        barrier(self.dist)
        if not self.dist.is_main:
            root = D.prepare_dataset_root(cfg, progress=False)
            val_root = D.prepare_dataset_root(val_cfg, progress=False)
        train_base = D.build_base_dataset(cfg, cfg.data.train_split, root=root, mix=True)
        self.meta = D.dataset_meta(train_base)  # the dataset's own meta: datasets without meta.json work
        self.tasks = build_tasks(cfg, self.meta)
        self.eval_tasks = {t: self.tasks[t] for t in cfg.data.tasks}
        self.train_set = D.Augmented(train_base, D.build_train_transform(cfg), seed=cfg.seed)
        val_base = D.build_base_dataset(val_cfg, cfg.data.val_split, root=val_root)
        if val_cfg is not cfg:
            check_label_space(self.meta, D.dataset_meta(val_base), what=f"data.val_data ({val_cfg.data.root})")
        self.val_set = D.Augmented(val_base, D.build_eval_transform(val_cfg), seed=cfg.seed)

        self.model = build_model_for(cfg, self.tasks).to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.train.phase1_steps and not hasattr(self.model, "phase_outputs"):
            raise MtdenseError(
                f"train.phase1_steps: model {cfg.model.name!r} has no two-phase schedule (PAD-Net has one)"
            )
        self.balancer = build_balancer(cfg, self.tasks).to(self.device)
        if self.dist.enabled and not getattr(self.balancer, "supports_ddp", True):
            raise ConfigError(
                f"loss.balancer {cfg.loss.balancer!r} takes per-task gradients, which DistributedDataParallel "
                "does not reduce; train it in a single process"
            )
        self.balancer.attach(self.model)  # e.g. MGDA-UB hooks the shared encoder's output
        self.optimizer = build_optimizer(cfg, self.model, self.balancer)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        if cfg.loss.tag_weights:  # a key that matches no output is an error before anything is written
            check_tag_weights(cfg.loss.tag_weights, _output_keys(self.model, self.device))
        self.step = 0
        # one extension per optional config section (e.g. uda:), mtdense.engine.extensions
        self.extensions = build_extensions(cfg, progress=progress)
        for ext in self.extensions:
            ext.setup(self)
        if saved is not None:
            self._load(saved, ckpt)
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.train.phase1_steps > 0,  # phase 1 leaves parameters unused
            )
        if cfg.train.compile:  # forward only: self.model keeps the state dict, evaluation and export
            self.ddp_model = compile_for_training(self.ddp_model, device=self.device)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            save_config(cfg, self.out / "config.yaml")
        # on resume, TensorBoard drops the events of the steps after the checkpoint (redone now)
        purge = self.step + 1 if saved is not None else None
        self.logger = RunLogger(self.out, enabled=self.dist.is_main, purge_step=purge)

    # -- checkpoints --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything exact resume needs. Under DDP a collective (it gathers every rank's RNG state)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "extensions": {ext.name: ext.state_dict() for ext in self.extensions},
            "step": self.step,
            "rng": {"world_size": self.dist.world_size, "ranks": gather_to_all(self.dist, capture_rng(self.device))},
            "config": config_to_dict(self.cfg),
            "meta": self.meta,
        }

    def save(self) -> Path | None:
        """Write ``checkpoints/last.pt`` atomically (rank 0; every rank must call it under DDP)."""
        state = self.state()
        if not self.dist.is_main:
            return None
        return save_checkpoint(state, self.out / CHECKPOINT_DIR / LAST)

    def _check_resumable(self, path: Path) -> dict[str, Any]:
        """Load ``path`` and refuse a resume that would continue another experiment: a config that differs
        in more than :data:`~mtdense.engine.checkpoint.RESUME_MAY_CHANGE` (against the config saved in the
        checkpoint, or ``RUN/config.yaml`` for a checkpoint without one), or another number of processes."""
        state = load_checkpoint(path)
        missing = [k for k in ("optimizer", "scheduler", "balancer", "step", "rng") if k not in state]
        if missing:
            raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)}); cannot resume")
        saved_cfg = state.get("config")
        source = str(path)
        if saved_cfg is None and (self.out / "config.yaml").is_file():
            from mtdense.config.load import read_yaml

            saved_cfg, source = read_yaml(self.out / "config.yaml"), str(self.out / "config.yaml")
        if saved_cfg is not None:
            check_resume_config(saved_cfg, config_to_dict(self.cfg), source=source)
        rank_rng(state.get("rng", {}), rank=self.dist.rank, world_size=self.dist.world_size, source=str(path))
        return state

    def _load(self, state: dict[str, Any], path: Path) -> None:
        if state.get("meta") is not None and state["meta"] != self.meta:
            saved_meta = state["meta"]
            changed = sorted(k for k in saved_meta.keys() | self.meta.keys() if saved_meta.get(k) != self.meta.get(k))
            raise ConfigError(
                f"--resume: the dataset at data.root={self.cfg.data.root} is not the one {path} was trained on "
                f"(its meta.json differs in: {', '.join(changed)})"
            )
        load_model_state(self.model, state["model"], source=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        saved_ext = state.get("extensions", {})
        for ext in self.extensions:
            if ext.name not in saved_ext:
                raise CheckpointError(f"{path}: no state of trainer extension {ext.name!r}; cannot resume with it")
            ext.load_state_dict(saved_ext[ext.name])
        self.step = int(state["step"])
        restore_rng(
            rank_rng(state["rng"], rank=self.dist.rank, world_size=self.dist.world_size, source=str(path)),
            self.device,
        )
        if self.dist.is_main:
            _drop_records_after(self.out / "metrics.jsonl", self.step)
            for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write cut short by a hard kill
                stale.unlink(missing_ok=True)

    # -- loop -------------------------------------------------------------------------------------
    def run_eval(self) -> dict[str, dict[str, float]]:
        if self.cfg.eval.precise_bn:  # BN statistics of the current weights (mtdense.engine.precise_bn)
            re_estimate_for_run(self.model, self.cfg, self.train_set, device=self.device)
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
        received: list[int] = []
        restore_signals = _catch_stop_signals(received)
        # after the handlers: forked loader workers inherit them, so a Ctrl-C sent to the whole process
        # group does not kill them under the step in flight
        it = iter(loader)
        t0, seen = time.perf_counter(), 0
        restore_threads = _use_threads(cfg.threads)  # train.threads holds inside train() only
        try:
            while self.step < cfg.max_steps:
                try:
                    batch = next(it)
                except Exception:
                    if received and not self.dist.enabled:  # the signal also ended the loader's workers
                        raise self._interrupted(received, self.save()) from None
                    raise
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
                # a stop signal is honoured between steps (all ranks agree on it); a signal during the
                # last step lets the run finish instead
                interrupted = not final and any_rank(self.dist, bool(received), self.device)
                if not interrupted and (final or (cfg.eval_every and self.step % cfg.eval_every == 0)):
                    results = self.run_eval()
                    self.logger.log({"step": self.step, "split": "val", "results": results})
                stopping = interrupted or (stop_after is not None and self.step >= stop_after)
                if (
                    final
                    or end_of_epoch
                    or stopping
                    or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
                ):
                    written = self.save()
                    if interrupted:
                        raise self._interrupted(received, written)
                if stopping:
                    break
        finally:
            for ext in self.extensions:
                ext.close()
            restore_threads()
            restore_signals()
            if bar is not None:
                bar.close()
            self.logger.close()
        if results is not None and self.dist.is_main:
            (self.out / "results.json").write_text(json.dumps(results, indent=2))
        return TrainResult(step=self.step, results=results, out=self.out)

    def _interrupted(self, received: list[int], checkpoint: Path | None) -> TrainingInterrupted:
        signum = received[0] if received else int(signal.SIGTERM)  # a rank stopped by another rank's signal
        where = f"wrote checkpoint {checkpoint}" if checkpoint is not None else "rank 0 wrote the checkpoint"
        return TrainingInterrupted(
            f"training stopped by {signal.Signals(signum).name} after step {self.step}: {where}; "
            "continue it with --resume",
            signum=signum,
            step=self.step,
            checkpoint=checkpoint,
        )

    def forward(self, image: Tensor, *, model: torch.nn.Module | None = None) -> dict[str, Tensor]:
        """``model`` (default: the DDP-wrapped training model) on ``image`` (on the device) as a training step runs
        it: channels_last when ``train.channels_last``, under bf16 autocast when ``train.bf16``. Extensions that run
        their own forward passes (``uda``: the target images; ``probe``: the unwrapped model) call this."""
        return training_forward(
            self.ddp_model if model is None else model,
            image,
            device=self.device,
            channels_last=self.cfg.train.channels_last,
            bf16=self.cfg.train.bf16,
        )

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        batch = {k: (v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in batch.items()}
        outputs = self.forward(batch["image"])
        phase1 = self.step < self.cfg.train.phase1_steps
        if phase1:
            keep = self.model.phase_outputs(1)
            outputs = {k: v for k, v in outputs.items() if k in keep}
        losses = compute_losses(outputs, batch, self.tasks)
        total, log = self.balancer(losses) if losses else (_outputs_zero(outputs), {})
        unlabelled = {k: v for k, v in outputs.items() if k not in losses}
        if unlabelled and losses and self.dist.enabled:
            # outputs of a task no sample of this batch is labelled for: DDP expects a gradient for
            # every parameter, so they enter the graph with weight 0
            total = total + _outputs_zero(unlabelled)
        self._stop_if_non_finite(total, losses)
        self.optimizer.zero_grad(set_to_none=True)
        # one call for every balancer: loss-level ones back-propagate total, gradient-level ones combine
        # per-task gradients on the shared parameters (mtdense.losses.balancing)
        if losses:
            log = {**log, **self.balancer.backward(total, losses, model=self.model)}
        else:
            total.backward()
        # trainer extensions (e.g. uda: the adversarial term on the target images): their terms after the task
        # losses' backward (whose graph is freed by then: they get the outputs detached), added to the same
        # gradients before the update
        extra: dict[str, Tensor] = {}
        if self.extensions:
            detached = {k: v.detach() for k, v in outputs.items()}
            for ext in self.extensions:
                extra.update(ext.extra_loss(self, batch, detached, self.step))
        if extra:
            extra_total = torch.stack([v.float() for v in extra.values()]).sum()
            self._stop_if_non_finite(extra_total, extra)
            extra_total.backward()
        if phase1:  # PAD-Net Sec. 4.1: phase 1 optimises only the phase-1 parameters
            for group in self.optimizer.param_groups:
                if group.get("phase", 1) != 1:
                    for p in group["params"]:
                        p.grad = None
        if self.cfg.train.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        for ext in self.extensions:  # the extensions' own updates (e.g. the discriminators' step)
            log = {**log, **ext.after_step(self, self.step)}
        record = {"loss": float(total.detach()) + sum(float(v.detach()) for v in extra.values())}
        record.update({f"loss/{k}": float(v.detach()) for k, v in {**losses, **extra}.items()})
        record.update({k: float(v) for k, v in log.items() if isinstance(v, (int, float))})
        return record

    def _stop_if_non_finite(self, total: Tensor, terms: dict[str, Tensor]) -> None:
        """A :class:`TrainingError` naming the non-finite terms when ``total`` is not finite on any rank.

        Under DDP every rank learns whether any rank's loss is non-finite, so all of them stop at this step with
        the same error instead of the others waiting in the next all-reduce (one collective; a single process
        keeps its one host sync). Nothing is written: the last good checkpoint stays intact."""
        local_bad = not bool(torch.isfinite(total))
        if any_rank(self.dist, local_bad, self.device):
            bad = [k for k, v in terms.items() if not torch.isfinite(v)] if local_bad else ["on another rank"]
            last = self.out / CHECKPOINT_DIR / LAST
            kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written"
            raise TrainingError(
                f"non-finite loss at step {self.step + 1} (terms: {', '.join(bad) or 'total'}); stopping: {kept}"
            )
