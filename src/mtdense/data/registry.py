"""The dataset registry: one way to open any dataset, :func:`open_dataset`.

Each dataset family lives in one file of :mod:`mtdense.data` and registers a builder::

    @register_dataset("cityscapes")
    def open_cityscapes(root: str | Path, *, split: str, tasks: Sequence[str]) -> Dataset: ...

The builder returns a ``torch.utils.data.Dataset`` whose samples follow the data contract of
:func:`mtdense.data.nyud.raw_to_sample` (``image`` float32 ``(3, H, W)`` in [0, 1]; ``semseg`` int64
``(H, W)`` with 255 = ignore; ``depth`` float32 ``(1, H, W)`` in metres, 0 = invalid; ``normals`` float32
``(3, H, W)`` unit vectors in the camera frame (x right, y down, z forward), zero = invalid; ``edge``
float32 ``(1, H, W)`` in {0, 1}; ``parts`` int64 ``(H, W)``, 255 = ignore; ``saliency`` float32
``(1, H, W)``) and which exposes ``meta`` (a dict: ``num_classes``, ``class_names``, ``palette`` and,
where known, ``intrinsics``). Adding a dataset is one file plus its ``@register_dataset`` line (and
its module's name in :data:`mtdense.data.BUILTIN_DATASET_MODULES`, which :func:`open_dataset`, :func:`list_datasets`
and :func:`detect_dataset` import). ``detect=`` optionally registers a test "does this folder look like this
dataset?" used by ``mtdense data check ROOT`` when no ``--dataset`` is given.

Partially labelled samples: a dataset asked for a task it has no target for (raw NYUD frames have
depth but no labels) returns that target filled with the task's ignore value, :func:`missing_target`
(the contract of :class:`mtdense.tasks.base.Task`), so losses and meters skip the sample and a batch
mixing datasets collates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from mtdense.data import import_builtin_datasets
from mtdense.errors import ConfigError

DatasetBuilder = Callable[..., Dataset]

#: dataset name -> builder ``(root, *, split, tasks) -> Dataset``
DATASETS: dict[str, DatasetBuilder] = {}
#: dataset name -> ``detect(root) -> bool``: does the folder hold this dataset (for ``mtdense data check``)
DETECTORS: dict[str, Callable[[Path], bool]] = {}

#: task -> (fill value, dtype, channels or None for an (H, W) label map) of a target the sample lacks;
#: the fill is the task's ``ignore_value`` (tests/data/test_registry.py checks them against the tasks)
MISSING_TARGETS: dict[str, tuple[float, torch.dtype, int | None]] = {
    "semseg": (255, torch.int64, None),
    "parts": (255, torch.int64, None),
    "depth": (0.0, torch.float32, 1),
    "normals": (0.0, torch.float32, 3),
    "edge": (255.0, torch.float32, 1),
    "saliency": (255.0, torch.float32, 1),
}


def missing_target(task: str, height: int, width: int) -> torch.Tensor:
    """The target of ``task`` for a sample that has none: ``(H, W)`` or ``(C, H, W)`` filled with the task's
    ignore value, so that the task's loss and meter skip the sample."""
    if task not in MISSING_TARGETS:
        raise ConfigError(f"no ignore fill known for task {task!r}; known: {', '.join(sorted(MISSING_TARGETS))}")
    fill, dtype, channels = MISSING_TARGETS[task]
    shape = (height, width) if channels is None else (channels, height, width)
    return torch.full(shape, fill, dtype=dtype)


def register_dataset(
    name: str, *, detect: Callable[[Path], bool] | None = None
) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator registering a dataset builder under ``name`` (and optionally its folder detector)."""

    def deco(builder: DatasetBuilder) -> DatasetBuilder:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        DATASETS[name] = builder
        if detect is not None:
            DETECTORS[name] = detect
        return builder

    return deco


def open_dataset(name: str, root: str | Path, *, split: str, tasks: Sequence[str]) -> Dataset:
    """Open split ``split`` of dataset ``name`` stored at ``root`` with the targets of ``tasks``."""
    import_builtin_datasets()
    if name not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root, split=split, tasks=tuple(tasks))


def list_datasets() -> list[str]:
    """Names of every registered dataset."""
    import_builtin_datasets()
    return sorted(DATASETS)


def detect_dataset(root: str | Path) -> str:
    """The registered dataset whose detector recognises ``root``; a :class:`DataError` when none or several do."""
    from mtdense.errors import DataError

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    import_builtin_datasets()
    hits = [name for name, detect in sorted(DETECTORS.items()) if detect(root)]
    if len(hits) != 1:
        what = "no known dataset layout" if not hits else f"several layouts ({', '.join(hits)})"
        raise DataError(f"{root}: {what} recognised; pass --dataset NAME (one of {', '.join(list_datasets())})")
    return hits[0]
