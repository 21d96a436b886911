"""SYNTHIA-RAND-CITYSCAPES (``synthia``): 16-class semseg, depth, normals and edges, with a write-once random split.

The SYNTHIA-RAND-CITYSCAPES download (Ros et al., CVPR 2016), 9400 random 1280×760 street views, the
synthetic source domain of DenseMTL's (Lopes et al., WACV 2023, Sec. 4) Synthia → Cityscapes setting::

    ROOT/RGB/<id>.png              RGB 8-bit
    ROOT/GT/LABELS/<id>.png        16-bit RGB PNG: class id in the first (red) channel, instance id in the second
    ROOT/Depth/Depth/<id>.png      16-bit PNG (grey, or RGB with the value in its first channel)

* ``semseg``: the 16 classes shared with Cityscapes (:data:`RAW_TO_TRAIN`, in the order of
  :func:`mtdense.data.cityscapes.protocol` ``(16)``, so the two datasets share class ids); every other
  SYNTHIA class is 255. The label PNG must be decoded at 16 bits (Pillow reduces 16-bit RGB to 8 bits;
  :mod:`mtdense.data._png16` keeps them); OpenCV's BGR order is turned back to RGB, so the class is channel 0
  (red), the channel the widely used SYNTHIA loaders read (``imageio`` FreeImage plugin, index 0 of RGB).
* ``depth``: value / 100 metres (:data:`DEPTH_UNITS_PER_METRE`: centimetres); 0 = invalid. *Established from*
  the loader of DenseMTL itself (the paper whose Synthia numbers the configs reproduce: its ``dataset/synthia.py``
  multiplies the 16-bit value by 0.01 "to meters") and CorDA's (Wang et al., ICCV 2021, value / 100); DADA's
  (Vu et al., ICCV 2019) inverse depth ``65536 / (value + 1)`` is the same centimetre value. The dataset's
  README gives no unit; a street scene then spans about 1–600 m, which ``mtdense data check`` reports.
* ``normals``: derived from that depth (:func:`~mtdense.data._geometry.normals_from_depth`: camera frame x right,
  y down, z forward, facing the camera), as DenseMTL Sec. 4.1.1 does ("surface normals labels are estimated from
  depth maps"), with the pinhole intrinsics of the SYNTHIA renders, :data:`INTRINSICS` (fx = fy = 532.740352,
  cx = 640, cy = 380 for the 1280×760 frames: the camera of the SYNTHIA video sequences, whose per-frame
  ``CameraParams`` carry this focal length, and the values DenseMTL's loader uses for RAND-CITYSCAPES).
* ``edge``: ``thin(|Laplacian(L)| > 0)`` of the 16-class map (:func:`~mtdense.data._readers.label_edges`).
* Split: SYNTHIA has none; ``train`` / ``val`` come from :func:`mtdense.data._splits.seeded_split` (seed
  :data:`SPLIT_SEED`, :data:`VAL_FRACTION` of the images in val), drawn once and stored in the dataset folder.
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

RAW_TO_TRAIN: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13, 12: 14, 11: 15,
}  # fmt: skip
"""SYNTHIA class id → 16-class train id (road, sidewalk, building, wall, fence, pole, light, sign, vegetation,
sky, person, rider, car, bus, motorcycle, bicycle)."""
DEPTH_UNITS_PER_METRE = 100.0
"""Stored depth units per metre: centimetres (module docstring says how this was established)."""
INTRINSICS = {"fx": 532.740352, "fy": 532.740352, "cx": 640.0, "cy": 380.0}
"""Pinhole intrinsics of the 1280×760 SYNTHIA frames, pixels (module docstring)."""
SIZE = (760, 1280)
"""(H, W) of the frames the intrinsics belong to; normals of another size scale them (a resized copy)."""
SPLIT_SEED = 0
VAL_FRACTION = 0.2
"""DenseMTL (Lopes et al., WACV 2023) Sec. 4.1: "In VKITTI2 and Synthia, we perform a random 80/20 split"."""
TASKS = ("semseg", "depth", "normals", "edge")
SPLITS = ("train", "val")


class Synthia(FolderDataset):
    """A split (``train`` / ``val``) of SYNTHIA-RAND-CITYSCAPES (module docstring)."""

    name = "synthia"
    supported_tasks = TASKS

    def __init__(self, root: str | os.PathLike, *, split: str, tasks: Sequence[str]) -> None:
        super().__init__(root, split=split, tasks=tasks)
        from .cityscapes import protocol

        _, names, palette = protocol(16)
        self.meta: dict[str, Any] = {
            "dataset": self.name,
            "num_classes": len(names),
            "class_names": names,
            "palette": palette.tolist(),
            "intrinsics": dict(INTRINSICS),
        }
        self._lut = np.full(65536, IGNORE, np.uint8)
        for raw_id, train_id in RAW_TO_TRAIN.items():
            self._lut[raw_id] = train_id

    def list_ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise DataError(f"synthia: unknown split {split!r}; expected one of {list(SPLITS)}")
        folder = self.root / "RGB"
        if not folder.is_dir():
            raise DataError(f"synthia: image folder not found: {folder}")
        ids = sorted(p.stem for p in folder.glob("*.png"))
        return seeded_split(self.root, ids, dataset=self.name, val_fraction=VAL_FRACTION, seed=SPLIT_SEED)[split]

    def load_sample(self, sid: str) -> dict[str, np.ndarray]:
        image = read_image(self.root / "RGB" / f"{sid}.png")
        hw = image.shape[:2]
        raw: dict[str, np.ndarray] = {"image": image}
        if {"semseg", "edge"} & set(self.tasks):
            path = self.root / "GT" / "LABELS" / f"{sid}.png"
            lab = read_png(path, what="label map", dtype=np.uint16)
            check_hw(path, lab.shape[:2], hw)
            if lab.ndim != 3 or lab.shape[2] < 3:
                raise DataError(
                    f"{path}: expected a 16-bit RGB label PNG (class in the first channel), got {lab.shape}"
                )
            labels = self._lut[lab[..., 0]]
            if "semseg" in self.tasks:
                raw["semseg"] = labels
            if "edge" in self.tasks:
                raw["edge"] = label_edges(labels)
        if {"depth", "normals"} & set(self.tasks):
            path = self.root / "Depth" / "Depth" / f"{sid}.png"
            d = read_png(path, what="depth map", dtype=np.uint16)
            check_hw(path, d.shape[:2], hw)
            d = d[..., 0] if d.ndim == 3 else d
            depth = d.astype(np.float32) / np.float32(DEPTH_UNITS_PER_METRE)
            if "depth" in self.tasks:
                raw["depth"] = depth
            if "normals" in self.tasks:
                raw["normals"] = normals_from_depth(depth, **scaled_intrinsics(hw))
        return raw


def scaled_intrinsics(hw: tuple[int, int]) -> dict[str, float]:
    """:data:`INTRINSICS` for frames of size ``hw``: scaled with the image when it was resized from 1280×760.

    A pinhole camera's ``fx, cx`` scale with the width and ``fy, cy`` with the height (pixel-centre offsets are
    below a tenth of a degree of normal direction at this focal length)."""
    sy, sx = hw[0] / SIZE[0], hw[1] / SIZE[1]
    return {"fx": INTRINSICS["fx"] * sx, "fy": INTRINSICS["fy"] * sy, "cx": INTRINSICS["cx"] * sx,
            "cy": INTRINSICS["cy"] * sy}  # fmt: skip


@register_dataset("synthia", detect=lambda root: (root / "RGB").is_dir() and (root / "GT" / "LABELS").is_dir())
def open_synthia(root: str | Path, *, split: str, tasks: Sequence[str]) -> Synthia:
    """SYNTHIA-RAND-CITYSCAPES at ``root`` (module docstring)."""
    return Synthia(root, split=split, tasks=tasks)
