"""Checkpoints: atomic writes, safe loads, and run-directory resolution.

A checkpoint is a ``torch.save`` dict with at least ``"model"`` (the state_dict), ``"optimizer"``,
``"step"``, plus ``"scheduler"``, ``"balancer"``, ``"rng"`` (for exact resume) and ``"config"``
(the resolved config as plain data). Loading always uses ``torch.load(..., weights_only=True)``: a
checkpoint from the internet cannot run code. Writes go to a temporary file in the same folder and
are renamed into place, so an interrupted write never destroys the previous checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mtdense.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


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
