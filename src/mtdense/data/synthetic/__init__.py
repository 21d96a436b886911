"""Embedded synthetic benchmark: procedurally generated 3-D scenes, ray cast with exact ground truth.

Two families (:data:`FAMILIES`): ``indoor`` (furnished rooms, 13 classes) and ``street`` (city streets,
12 classes, sky = depth 0), each in any of the :data:`STYLES` (camera, palette, textures, lighting,
sensor; :mod:`.styles`): ``street`` in style ``a`` and in style ``b`` form a domain-shift benchmark with
exact labels in both domains. Every image is a deterministic function of ``(family, seed, index,
style)`` and can be rendered at any resolution; ground truth (semantic labels, z-depth in metres,
camera-frame unit normals, thin semantic edges, intrinsics) is exact by construction.

- :func:`render_sample` renders one sample to numpy arrays.
- :func:`write_synthetic_dataset` writes a dataset in the NYUD-MT layout read by
  :class:`mtdense.data.nyud.NYUDMT`.
"""

from .families import FAMILIES, GENERATOR_VERSION, Family, get_family, make_scene, render_sample
from .renderer import Light, Scene, Sky, intrinsics, render_scene
from .styles import STYLES, Style, get_style
from .writer import VAL_INDEX_OFFSET, write_synthetic_dataset

__all__ = [
    "FAMILIES",
    "GENERATOR_VERSION",
    "VAL_INDEX_OFFSET",
    "Family",
    "Light",
    "Scene",
    "Sky",
    "STYLES",
    "Style",
    "get_family",
    "get_style",
    "intrinsics",
    "make_scene",
    "render_sample",
    "render_scene",
    "write_synthetic_dataset",
]
