"""Virtual KITTI 2 (``vkitti2``): colour-coded semseg, depth in centimetres, normals from depth, edges.

The Virtual KITTI 2 download (Cabon, Murray & Humenberger, 2020), DenseMTL's (Lopes et al., WACV 2023,
Sec. 4) second synthetic source, as its ``vkitti_2.0.3_rgb``, ``_depth`` and ``_classSegmentation``
archives unpack::

    ROOT/SceneXX/<variation>/frames/rgb/Camera_k/rgb_%05d.jpg
    ROOT/SceneXX/<variation>/frames/depth/Camera_k/depth_%05d.png                 uint16, 1 unit = 1 cm
    ROOT/SceneXX/<variation>/frames/classSegmentation/Camera_k/classgt_%05d.png    RGB colour-coded classes

A sample id is ``SceneXX/<variation>/Camera_k/%05d``; every rendered frame found is a sample.

* ``semseg``: the 14 classes of :data:`CLASS_COLOURS` (class id = position); ``Undefined`` (0, 0, 0) is 255;
  a colour outside the table is an error naming the file and the colour.
* ``depth``: value / 100 metres; 65535 marks "far" (the sky, beyond the renderer's range) and, having no
  depth, is 0 = invalid here.
* ``normals``: derived from that depth with the release's fixed intrinsics :data:`INTRINSICS` (its README:
  fx = fy = 725.0087, cx = 620.5, cy = 187.0 for every frame) by
  :func:`~mtdense.data._geometry.normals_from_depth` (x right, y down, z forward, facing the camera).
* ``edge``: ``thin(|Laplacian(L)| > 0)`` of the semseg map (:func:`~mtdense.data._readers.label_edges`).
* Split: VKITTI2 has none. :func:`mtdense.data._splits.seeded_split` draws it once from :data:`SPLIT_SEED`
  and stores it in the dataset folder. Its units are ``SceneXX/%05d`` frames, not images: the variations
  (weather, time of day, camera shifts) and both cameras of one frame show the same scene, so they are kept
  in the same split (otherwise val would hold near copies of training images).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._geometry import normals_from_depth
from ._io import read_image
from ._png16 import read_png
from ._readers import IGNORE, FolderDataset, check_hw, label_edges
from ._splits import seeded_split
from .registry import register_dataset

CLASS_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("terrain", (210, 0, 200)), ("sky", (90, 200, 255)), ("tree", (0, 199, 0)), ("vegetation", (90, 240, 0)),
    ("building", (140, 140, 140)), ("road", (100, 60, 100)), ("guardrail", (250, 100, 255)),
    ("trafficsign", (255, 255, 0)), ("trafficlight", (200, 200, 0)), ("pole", (255, 130, 0)), ("misc", (80, 80, 80)),
    ("truck", (160, 60, 60)), ("car", (255, 127, 80)), ("van", (0, 139, 139)),
)  # fmt: skip
"""The classes of the release's ``colors.txt``, in its order (class id = position), and their colours."""
UNDEFINED_COLOUR = (0, 0, 0)
FAR = 65535
"""Stored depth meaning "beyond range" (invalid)."""
INTRINSICS = {"fx": 725.0087, "fy": 725.0087, "cx": 620.5, "cy": 187.0}
SPLIT_SEED = 0
VAL_FRACTION = 0.2
"""DenseMTL (Lopes et al., WACV 2023) Sec. 4.1: "In VKITTI2 and Synthia, we perform a random 80/20 split"."""
TASKS = ("semseg", "depth", "normals", "edge")
SPLITS = ("train", "val")


def _key(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_KEYS = _key(np.array([c for _, c in CLASS_COLOURS] + [UNDEFINED_COLOUR]))
_VALUES = np.array([*range(len(CLASS_COLOURS)), IGNORE], np.uint8)


def decode_classes(rgb: np.ndarray, path: Path) -> np.ndarray:
    """A ``classgt`` image ``(H, W, 3)`` uint8 → class ids uint8 ``(H, W)`` (Undefined → 255)."""
    keys = _key(rgb)
    order = np.argsort(_KEYS)
    pos = np.clip(np.searchsorted(_KEYS[order], keys), 0, len(order) - 1)
    hit = _KEYS[order][pos] == keys
    if not hit.all():
        y, x = np.argwhere(~hit)[0]
        raise DataError(
            f"{path}: colour {tuple(int(c) for c in rgb[y, x])} at (row {y}, col {x}) is not a VKITTI2 class"
        )
    return _VALUES[order][pos]


class VKITTI2(FolderDataset):
    """A split (``train`` / ``val``) of Virtual KITTI 2 (module docstring)."""

    name = "vkitti2"
    supported_tasks = TASKS

    def __init__(self, root: str | os.PathLike, *, split: str, tasks: Sequence[str]) -> None:
        super().__init__(root, split=split, tasks=tasks)
        self.meta: dict[str, Any] = {
            "dataset": self.name,
            "num_classes": len(CLASS_COLOURS),
            "class_names": [n for n, _ in CLASS_COLOURS],
            "palette": [list(c) for _, c in CLASS_COLOURS],
            "intrinsics": dict(INTRINSICS),
        }

    def list_ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise DataError(f"vkitti2: unknown split {split!r}; expected one of {list(SPLITS)}")
        ids = sorted(
            f"{p.parts[-6]}/{p.parts[-5]}/{p.parts[-2]}/{p.stem[len('rgb_') :]}"
            for p in self.root.glob("Scene*/*/frames/rgb/Camera_*/rgb_*.jpg")
        )
        if not ids:
            raise DataError(f"vkitti2: no frames found under {self.root}/Scene*/<variation>/frames/rgb/Camera_*/")
        units = sorted({self._unit(sid) for sid in ids})
        chosen = set(
            seeded_split(self.root, units, dataset=self.name, val_fraction=VAL_FRACTION, seed=SPLIT_SEED)[split]
        )
        return [sid for sid in ids if self._unit(sid) in chosen]

    @staticmethod
    def _unit(sid: str) -> str:
        scene, _variation, _camera, frame = sid.split("/")
        return f"{scene}/{frame}"

    def _path(self, kind: str, prefix: str, ext: str, sid: str) -> Path:
        scene, variation, camera, frame = sid.split("/")
        return self.root / scene / variation / "frames" / kind / camera / f"{prefix}_{frame}.{ext}"

    def load_sample(self, sid: str) -> dict[str, np.ndarray]:
        image = read_image(self._path("rgb", "rgb", "jpg", sid))
        hw = image.shape[:2]
        raw: dict[str, np.ndarray] = {"image": image}
        if {"semseg", "edge"} & set(self.tasks):
            path = self._path("classSegmentation", "classgt", "png", sid)
            rgb = read_png(path, what="class map", dtype=np.uint8)
            check_hw(path, rgb.shape, (*hw, 3))
            labels = decode_classes(rgb, path)
            if "semseg" in self.tasks:
                raw["semseg"] = labels
            if "edge" in self.tasks:
                raw["edge"] = label_edges(labels)
        if {"depth", "normals"} & set(self.tasks):
            path = self._path("depth", "depth", "png", sid)
            d = read_png(path, what="depth map", dtype=np.uint16)
            check_hw(path, d.shape, hw)
            depth = np.where(d == FAR, np.float32(0.0), d.astype(np.float32) / np.float32(100.0))
            if "depth" in self.tasks:
                raw["depth"] = depth
            if "normals" in self.tasks:
                raw["normals"] = normals_from_depth(depth, **INTRINSICS)
        return raw


@register_dataset("vkitti2", detect=lambda root: any(root.glob("Scene*/*/frames/rgb")))
def open_vkitti2(root: str | Path, *, split: str, tasks: Sequence[str]) -> VKITTI2:
    """Virtual KITTI 2 at ``root`` (module docstring)."""
    return VKITTI2(root, split=split, tasks=tasks)
