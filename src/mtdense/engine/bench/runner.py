"""Running the planned runs: reuse what is finished, resume what is not, train the rest.

For each run folder, against the config asked for now (:func:`decide`):

* ``reuse``: ``results.json`` exists and the saved ``config.yaml`` equals the asked config, except in
  :data:`RESUMABLE` keys: logging and checkpoint intervals and speed settings (``train.threads``,
  ``data.num_workers``), which change how a run is logged or how fast it trains, not what it trains
  (the Trainer's exact-resume contract);
* ``resume``: no ``results.json`` but a checkpoint, and the same condition on the configs. The Trainer's
  ``resume`` continues it bitwise;
* ``train``: anything else. A folder holding another experiment is moved aside to
  ``seed<S>.replaced-<k>`` (never deleted: it may be the only copy of a result); a folder without a
  checkpoint (a run killed before its first one) holds nothing to keep and is removed.

``jobs == 1`` trains in this process; ``jobs > 1`` starts up to ``jobs`` ``mtdense train`` subprocesses
at a time with ``OMP_NUM_THREADS=1`` (each run's ``train.threads=1``), each logging to
``OUT/logs/<run>_seed<S>.log``. A run killed after its last checkpoint but before it wrote ``results.json``
has nothing left to train on resume; its final checkpoint is then evaluated as ``mtdense eval`` does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mtdense.config.load import read_yaml, save_config, validate_config
from mtdense.engine.bench.plan import RunSpec
from mtdense.engine.checkpoint import CHECKPOINT_DIR, LAST, RESUME_MAY_CHANGE, material_changes
from mtdense.errors import TrainingError

RESUMABLE = (RESUME_MAY_CHANGE - {"train.max_steps", "data.root"}) | {"train.threads"}
"""Config keys in which a run may differ from the asked config and still be reused or resumed. Not
``train.max_steps``: the learning-rate schedule (poly, step) is laid out over it, so a run resumed with
another length would not be the run that the asked config describes. Not ``data.root`` either: a run on
another folder is retrained, whatever that folder holds."""


def decide(run: RunSpec) -> tuple[str, dict[str, Any]]:
    """``("reuse" | "resume" | "train", config to train with)`` for ``run`` (module docstring)."""
    saved_path = run.out / "config.yaml"
    checkpoint = run.out / CHECKPOINT_DIR / LAST
    if not saved_path.is_file():
        return "train", run.config
    saved = read_yaml(saved_path)
    changes = material_changes(saved, run.config)
    if (run.out / "results.json").is_file() and set(changes) <= RESUMABLE:
        return "reuse", run.config
    if checkpoint.is_file() and set(changes) <= RESUMABLE:
        resumed = {**run.config, "train": {**run.config["train"], "threads": saved["train"].get("threads")}}
        return "resume", resumed
    return "train", run.config


def _clear(run: RunSpec) -> None:
    """Make room for a new run in ``run.out`` (module docstring: moved aside, or removed if it holds nothing)."""
    if not run.out.exists():
        return
    if not (run.out / CHECKPOINT_DIR / LAST).is_file() and not (run.out / "results.json").is_file():
        shutil.rmtree(run.out)
        return
    k = 1
    while (aside := run.out.with_name(f"{run.out.name}.replaced-{k}")).exists():
        k += 1
    run.out.rename(aside)
    print(f"{run.label}: {run.out} held another experiment; moved it to {aside}")


def _train_here(run: RunSpec, config: dict[str, Any], resume: bool) -> None:
    from mtdense.engine.trainer import Trainer

    Trainer(validate_config(config, source=run.source), run.out, resume=resume, progress=False).train()


def run_all(runs: list[RunSpec], *, jobs: int, logs: Path) -> dict[str, str]:
    """Train/resume/reuse every run; returns ``{run label: action}``. Raises :class:`TrainingError`
    naming every failed run (and its log) once the others are done."""
    actions: dict[str, str] = {}
    todo: list[tuple[RunSpec, dict[str, Any], bool]] = []
    for run in runs:
        action, config = decide(run)
        actions[run.label] = action
        if action == "reuse":
            print(f"{run.label}: reusing the finished run {run.out}")
            continue
        if action == "train":
            _clear(run)
        todo.append((run, config, action == "resume"))
    failed: list[str] = []
    if jobs <= 1:
        for run, config, resume in todo:
            print(f"{run.label}: {'resuming' if resume else 'training'} → {run.out}", flush=True)
            try:
                _train_here(run, config, resume)
            except TrainingError as e:
                failed.append(f"{run.label}: {e}")
    else:
        failed = _run_parallel(todo, jobs=jobs, logs=logs)
    for run, _, _ in todo:
        if not (run.out / "results.json").is_file() and (run.out / CHECKPOINT_DIR / LAST).is_file():
            _evaluate_finished(run, failed)
    if failed:
        raise TrainingError(f"bench: {len(failed)} run(s) failed:\n" + "\n".join(failed))
    return actions


def _evaluate_finished(run: RunSpec, failed: list[str]) -> None:
    """A run killed after its last checkpoint but before writing ``results.json`` resumes with nothing left
    to train and so writes no results: evaluate its final checkpoint instead (as ``mtdense eval`` does)."""
    from mtdense.engine.checkpoint import load_checkpoint
    from mtdense.engine.evaluation import evaluate_run

    if int(load_checkpoint(run.out / CHECKPOINT_DIR / LAST).get("step", -1)) != run.config["train"]["max_steps"]:
        if not any(f.startswith(run.label) for f in failed):
            failed.append(f"{run.label}: ended without results.json before train.max_steps (see {run.out})")
        return
    evaluate_run(run.out, split=run.config["data"]["val_split"], out=run.out / "results.json")


def _run_parallel(todo: list[tuple[RunSpec, dict[str, Any], bool]], *, jobs: int, logs: Path) -> list[str]:
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, failed = list(todo), [], []
    while pending or running:
        while pending and len(running) < jobs:
            run, config, resume = pending.pop(0)
            cfg_file = logs / f"{run.name}_seed{run.seed}.yaml"
            log = logs / f"{run.name}_seed{run.seed}.log"
            save_config(validate_config(config, source=run.source), cfg_file)
            cmd = [sys.executable, "-m", "mtdense.cli.main", "train", str(cfg_file), "--out", str(run.out)]
            cmd += ["--resume"] if resume else []
            print(f"{run.label}: {'resuming' if resume else 'training'} → {run.out} (log {log})", flush=True)
            handle = log.open("w")
            running.append((run, subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env), handle, log))
        time.sleep(0.2)
        for item in list(running):
            run, proc, handle, log = item
            if proc.poll() is None:
                continue
            handle.close()
            running.remove(item)
            if proc.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
                failed.append(f"{run.label}: exit {proc.returncode}: {tail[0]} (log {log})")
    return failed
