"""Loading local ImageNet checkpoints into a backbone.

No network access: ``load_pretrained`` reads a file the user downloaded (a torchvision ResNet
``.pth``, an official HRNet-Image-Classification ``.pth``, a timm ``.safetensors``, or a checkpoint of
one of our own backbones). Because our backbones keep the parameter names of those projects, the
checkpoint loads without renaming; the ImageNet classifier head that our dense backbones do not
have is skipped and reported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mtdense.errors import CheckpointError

__all__ = ["CLASSIFIER_PREFIXES", "LoadReport", "load_pretrained", "read_state_dict"]

_log = logging.getLogger(__name__)

#: Top-level module names of ImageNet classification heads that dense backbones leave out:
#: torchvision ResNet ``fc``; timm ``classifier``; the HRNet classification head
#: (``incre_modules``, ``downsamp_modules``, ``final_layer``, then ``classifier``).
CLASSIFIER_PREFIXES: tuple[str, ...] = (
    "fc",
    "classifier",
    "incre_modules",
    "downsamp_modules",
    "final_layer",
)

# Checkpoints written by training scripts often wrap the weights; these are the wrappers we unpack.
_NESTED_KEYS = ("state_dict", "model")


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did with each key.

    Attributes:
        path: the checkpoint file.
        loaded: module keys that received a tensor from the checkpoint.
        missing: module keys the checkpoint did not provide (they keep their initialisation).
            BatchNorm ``num_batches_tracked`` counters are not listed: old torchvision checkpoints
            predate them and they do not affect the forward pass.
        unexpected: checkpoint keys the module has no place for (not classifier keys).
        ignored: classifier-head keys skipped on purpose (see :data:`CLASSIFIER_PREFIXES`).
    """

    path: Path
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    ignored: tuple[str, ...]

    def __str__(self) -> str:
        def listing(keys: tuple[str, ...]) -> str:
            shown = ", ".join(keys[:10]) + (f", ... (+{len(keys) - 10})" if len(keys) > 10 else "")
            return f"{len(keys)}" + (f" [{shown}]" if keys else "")

        total = len(self.loaded) + len(self.missing)
        return (
            f"loaded {len(self.loaded)}/{total} tensors from {self.path}; "
            f"missing {listing(self.missing)}; unexpected {listing(self.unexpected)}; "
            f"ignored classifier keys {listing(self.ignored)}"
        )


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``{name: tensor}`` dict from a ``.pth``/``.pt`` or ``.safetensors`` file, on the CPU.

    ``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)`` (no arbitrary code is
    unpickled). A dict nested under ``"state_dict"`` or ``"model"`` is unpacked, and a ``module.``
    prefix on every key (left by ``nn.DataParallel``) is removed.

    Raises:
        CheckpointError: the file is missing, cannot be decoded, or holds no state dict; the message
            names the path.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoder failure is the user's file, reported with its path
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc

    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"checkpoint {path} holds no state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint {path}: expected a state dict of tensors, but keys {bad[:5]} are not tensors "
            f"(top-level keys: {list(obj)[:10]})"
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _has_prefix(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def load_pretrained(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    ignore_prefixes: tuple[str, ...] = CLASSIFIER_PREFIXES,
    prefix: str = "",
) -> LoadReport:
    """Copy the tensors of a local checkpoint into ``module`` and report what matched.

    Keys under ``ignore_prefixes`` that ``module`` does not have (ImageNet classifier heads) are
    skipped and listed as ``ignored``; keys ``module`` has are always loaded. The report is logged
    at INFO level (WARNING if keys are missing or unexpected) and returned.

    Args:
        module: the target, e.g. ``backbone.pretrained_target()``.
        path: a ``.pth``/``.pt`` or ``.safetensors`` file.
        strict: raise if any key is missing or unexpected (after ignoring classifier keys).
        ignore_prefixes: top-level module names to skip when ``module`` lacks them.
        prefix: take only the checkpoint keys under this prefix, with the prefix removed (e.g.
            ``"backbone."`` to load the encoder of a whole exported mtdense model).

    Raises:
        CheckpointError: missing/unreadable file; a tensor whose shape differs from the module's
            (the message names the key and both shapes); with ``strict``, missing or unexpected keys.
    """
    state = read_state_dict(path)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()

    ignored = {k for k in state if k not in own and _has_prefix(k, ignore_prefixes)}
    to_load = {k: v for k, v in state.items() if k not in ignored}
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in to_load.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model; shape mismatch at " + "; ".join(mismatched)
        )

    result = module.load_state_dict(to_load, strict=False)
    missing = tuple(sorted(k for k in result.missing_keys if not k.endswith("num_batches_tracked")))
    unexpected = tuple(sorted(result.unexpected_keys))
    report = LoadReport(
        path=Path(path),
        loaded=tuple(sorted(k for k in to_load if k in own)),
        missing=missing,
        unexpected=unexpected,
        ignored=tuple(sorted(ignored)),
    )
    if strict and (missing or unexpected):
        raise CheckpointError(f"strict loading failed: {report}")
    _log.log(logging.WARNING if (missing or unexpected) else logging.INFO, "%s", report)
    return report
