"""Datasets, the in-memory cache, joint transforms and the embedded synthetic benchmark.

* :mod:`~mtdense.data.registry`: :func:`open_dataset`, one way to open any registered dataset by name.
* :mod:`~mtdense.data.nyud`: the NYUD-MT layout reader (real NYUD-v2 and the synthetic benchmark).
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
"""

# importing a dataset module registers it with open_dataset
from mtdense.data import cityscapes, mtan, nyud_raw, pascal, sunrgbd, synthia, vkitti2  # noqa: F401
from mtdense.data.cached import CachedDataset
from mtdense.data.nyud import NYU40_CLASS_NAMES, NYUDMT, raw_to_sample
from mtdense.data.registry import DATASETS, list_datasets, open_dataset, register_dataset
from mtdense.data.synthetic import FAMILIES, render_sample, write_synthetic_dataset

__all__ = [
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
