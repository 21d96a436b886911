"""Datasets, the in-memory cache, joint transforms and the embedded synthetic benchmark.

* :mod:`~mtdense.data.registry`: :func:`open_dataset`, one way to open any registered dataset by name.
* :mod:`~mtdense.data.nyud_convert`: the official NYU Depth V2 files → NYUD-MT (``mtdense data convert nyud``).
* :mod:`~mtdense.data.nyud_raw`, :mod:`~mtdense.data.mtan`: NYUD raw frames (BTS layout), MTAN's 13-class npy.
* :mod:`~mtdense.data.pascal`, :mod:`~mtdense.data.cityscapes`, :mod:`~mtdense.data.sunrgbd`,
  :mod:`~mtdense.data.synthia`, :mod:`~mtdense.data.vkitti2`: the other downloaded datasets, as their releases
  lay them out (PASCAL-Context multi-task, Cityscapes in 19/16/7 classes, SUN RGB-D, SYNTHIA, Virtual KITTI 2).
* :mod:`~mtdense.data.mixed`: training on the union of datasets with a ratio of each in every batch.
* :mod:`~mtdense.data.check`: ``mtdense data check``.
* :mod:`~mtdense.data.cached`: decode every sample once and keep it in memory.
* :mod:`~mtdense.data.transforms`: joint transforms acting on every target consistently.
* :mod:`~mtdense.data.synthetic`: the procedural ray-casting renderer and its writer.

Imports are lazy (module-level ``__getattr__``, PEP 562): ``import mtdense.data`` costs nothing, and
``mtdense data synth`` (NumPy and Pillow only) never imports torch, which the dataset readers need and
which alone takes seconds to import. The public names below are imported on first access; the
readers (:data:`BUILTIN_DATASET_MODULES`) register themselves with :func:`open_dataset` when the
registry's functions (or its names taken from this package) are first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

BUILTIN_DATASET_MODULES = ("cityscapes", "mtan", "nyud", "nyud_raw", "pascal", "sunrgbd", "synthia", "vkitti2")
"""Modules of :mod:`mtdense.data` whose import registers datasets (``@register_dataset``)."""

# public name -> submodule that defines it
_LAZY = {
    "CachedDataset": "cached",
    "NYU40_CLASS_NAMES": "nyud",
    "NYUDMT": "nyud",
    "raw_to_sample": "nyud",
    "DATASETS": "registry",
    "list_datasets": "registry",
    "open_dataset": "registry",
    "register_dataset": "registry",
    "FAMILIES": "synthetic",
    "render_sample": "synthetic",
    "write_synthetic_dataset": "synthetic",
}

__all__ = [
    "BUILTIN_DATASET_MODULES",
    "FAMILIES",
    "NYU40_CLASS_NAMES",
    "NYUDMT",
    "CachedDataset",
    "DATASETS",
    "list_datasets",
    "open_dataset",
    "register_dataset",
    "raw_to_sample",
    "render_sample",
    "write_synthetic_dataset",
]


def import_builtin_datasets() -> None:
    """Import every module of :data:`BUILTIN_DATASET_MODULES`, registering their datasets (idempotent)."""
    for name in BUILTIN_DATASET_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _LAZY[name]
    if module == "registry":  # the registry's names come with every built-in dataset registered
        import_builtin_datasets()
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # static analysers and IDEs see the eager names
    from mtdense.data.cached import CachedDataset
    from mtdense.data.nyud import NYU40_CLASS_NAMES, NYUDMT, raw_to_sample
    from mtdense.data.registry import DATASETS, list_datasets, open_dataset, register_dataset
    from mtdense.data.synthetic import FAMILIES, render_sample, write_synthetic_dataset
