"""Checkpoints: atomic writes, safe loads, and run-directory resolution.

A checkpoint is a ``torch.save`` dict with at least ``"model"`` (the state_dict), ``"optimizer"``,
``"step"``, plus ``"scheduler"``, ``"balancer"``, ``"rng"`` (for exact resume), ``"extensions"`` (each
trainer extension's state under its name, :mod:`mtdense.engine.extensions`) and ``"config"`` (the resolved
config as plain data). Loading always uses ``torch.load(..., weights_only=True)``: a
checkpoint from the internet cannot run code. Writes go to a temporary file in the same folder, are
flushed to disk and renamed into place (``os.replace``), so a write killed at any point (even by
``kill -9``) leaves the previous checkpoint intact.

``"rng"`` holds the random state of every process: ``{"world_size": N, "ranks": [{"torch": ...,
"cuda": ... or None}, ...]}``, one entry per DDP rank (rank 0 gathers them into its one file, so a
run directory stays one file per checkpoint), each with torch's CPU generator and, when the rank
trains on CUDA, its device's generator. Data order and augmentation need no state of their own:
they are functions of (seed, step) (:mod:`mtdense.engine.data`).

``--resume`` continues the saved experiment, so the config may differ from the saved one only in
:data:`RESUME_MAY_CHANGE` (:func:`check_resume_config`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mtdense.errors import CheckpointError, ConfigError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: temporary file, ``fsync``, ``os.replace``.

    A failed write (full disk, a kill) never touches the checkpoint already at ``path``; the error
    names the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path} ({e}); the previous one is unchanged") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return {"model": load_file(str(path))}
        except Exception as e:  # noqa: BLE001 - any decoding failure is the file's fault
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an mtdense checkpoint (no 'model' entry)")
    return state


def resolve_checkpoint(run_or_ckpt: str | Path) -> Path:
    """A run directory → its ``checkpoints/last.pt``; a file → itself. Errors name the path."""
    p = Path(run_or_ckpt)
    if p.is_dir():
        ckpt = p / CHECKPOINT_DIR / LAST
        if not ckpt.is_file():
            raise CheckpointError(f"run directory {p} has no checkpoint at {ckpt}")
        return ckpt
    if not p.exists():
        raise CheckpointError(f"run directory or checkpoint does not exist: {p}")
    return p


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """Load weights strictly; a checkpoint of a different model is an error naming the keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
        raise CheckpointError(f"{source} does not match the model: " + ", ".join(parts))
    model.load_state_dict(state_dict)


# -- exact resume: what may change, and the random state ------------------------------------------

#: Dotted config keys that ``--resume`` may change. They decide how long to train and how often to
#: log, evaluate and checkpoint, or how batches are loaded and from where, never which batches or
#: which updates the run makes, so the steps already taken stay those of the resumed experiment:
#: the loader is exact for any ``data.num_workers``, and ``data.root`` may move (a requeued job often
#: stages its data to another scratch folder) as long as the dataset there has the same ``meta.json``
#: as the one trained on (the trainer checks it against the checkpoint's ``"meta"``).
#: ``train.max_steps`` also sets the end of the poly schedule: a longer run follows the new schedule
#: from the resumed step on. Anything else (model, data, losses, optimiser, seed, threads, which set
#: the floating-point reduction order) would continue a different experiment from this one's
#: weights: a new run, not a resume.
RESUME_MAY_CHANGE = frozenset(
    {
        "train.max_steps",
        "train.log_every",
        "train.eval_every",
        "train.checkpoint_every",
        "data.num_workers",
        "data.root",
    }
)

_ABSENT = "<absent>"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, current value)}`` of every leaf that differs between two resolved
    configs (plain data as :func:`mtdense.config.load.config_to_dict` gives); a key only one side has
    shows ``"<absent>"`` on the other."""
    a, b = _flatten(saved), _flatten(current)
    return {
        k: (a.get(k, _ABSENT), b.get(k, _ABSENT))
        for k in sorted(a.keys() | b.keys())
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    }


def _absent_as_none(old: Any, new: Any) -> bool:
    return (isinstance(old, str) and old == _ABSENT and new is None) or (
        isinstance(new, str) and new == _ABSENT and old is None
    )


def material_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """:func:`config_changes` without a key one side lacks and the other holds as ``None``: an optional section
    (``uda``, ``probe``, ``data.val_data``) added to the schema after ``saved`` was written, left off."""
    return {k: v for k, v in config_changes(saved, current).items() if not _absent_as_none(*v)}


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], *, source: str) -> None:
    """Raise :class:`ConfigError` listing ``key: old → new`` for every change outside
    :data:`RESUME_MAY_CHANGE` between the config saved in ``source`` and the one given now.

    A key the saved config lacks and the current one holds as ``None`` (an optional section such as ``uda`` or
    ``data.val_data``, added to the schema after the checkpoint was written, left off) is no change."""
    changed = {k: v for k, v in material_changes(saved, current).items() if k not in RESUME_MAY_CHANGE}
    if changed:
        lines = "\n".join(f"  {k}: {old!r} → {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(
            f"--resume: the config differs from the one saved in {source} in {len(changed)} key(s):\n{lines}\n"
            f"only {', '.join(sorted(RESUME_MAY_CHANGE))} may change on resume; "
            "to train with the new settings, start a new run with another --out"
        )


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's random state: torch's CPU generator and, on CUDA, ``device``'s generator."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" and torch.cuda.is_available() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of :func:`capture_rng`. A CUDA state is restored only when training on CUDA (a run
    moved between CPU and GPU is not bitwise reproducible anyway)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"], device)


def rank_rng(rng: dict[str, Any], *, rank: int, world_size: int, source: str) -> dict[str, Any]:
    """The entry of ``rank`` in a checkpoint's ``"rng"``; a checkpoint from another number of processes
    is an error (each process's share of a step's batch depends on that number)."""
    if not isinstance(rng, dict) or not ({"ranks", "torch"} & rng.keys()):
        raise CheckpointError(f"{source} holds no RNG state: not a training checkpoint, cannot resume from it")
    if "ranks" not in rng:  # checkpoints written before per-rank states: one process, CPU state only
        rng = {"world_size": 1, "ranks": [{"torch": rng["torch"], "cuda": None}]}
    saved = int(rng["world_size"])
    if saved != world_size:
        raise CheckpointError(
            f"{source} was written by {saved} training process(es), resuming with {world_size}: each process "
            "draws its own slice of every batch, so exact resume needs the same number; relaunch with "
            f"--nproc_per_node={saved} (or start a new run)"
        )
    return rng["ranks"][rank]
