"""Datasets, the in-memory cache, joint transforms and the embedded synthetic benchmark.

* :mod:`~mtdense.data.nyud`: the NYUD-MT layout reader (real NYUD-v2 and the synthetic benchmark).
* :mod:`~mtdense.data.cached`: decode every sample once and keep it in memory.
* :mod:`~mtdense.data.transforms`: joint transforms acting on every target consistently.
* :mod:`~mtdense.data.synthetic`: the procedural ray-casting renderer and its writer.
"""

from mtdense.data.cached import CachedDataset
from mtdense.data.nyud import NYU40_CLASS_NAMES, NYUDMT, raw_to_sample
from mtdense.data.synthetic import FAMILIES, render_sample, write_synthetic_dataset

__all__ = [
    "FAMILIES",
    "NYU40_CLASS_NAMES",
    "NYUDMT",
    "CachedDataset",
    "raw_to_sample",
    "render_sample",
    "write_synthetic_dataset",
]
