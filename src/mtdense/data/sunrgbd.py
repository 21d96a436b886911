"""SUN RGB-D (``sunrgbd``): 37-class semseg, depth, normals derived from depth, edges.

SUN RGB-D (Song, Lichtenberg & Xiao, CVPR 2015): 10,335 RGB-D images, 5285 train / 5050 test, the 37
classes of NYU40 ids 1..37 (TRL Sec. 4, PSD Sec. 4). ROOT holds the two official downloads unpacked side
by side, ``SUNRGBD/`` (one folder per image: ``kv1/NYUdata/NYU0001``, ``realsense/…``, …) and
``SUNRGBDtoolbox/``::

    ROOT/SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat   MATLAB v5: ``alltrain`` / ``alltest``, cell arrays of the
                                                        image folders (``/n/fs/sun3d/data/SUNRGBD/kv1/…``)
    ROOT/SUNRGBD/<folder>/image/<name>.jpg              RGB (the folder's only .jpg)
    ROOT/SUNRGBD/<folder>/depth_bfx/<name>.png          uint16 depth, bit-rotated (``depth/`` if no ``depth_bfx/``)
    ROOT/SUNRGBD/<folder>/intrinsics.txt                the 3×3 camera matrix K, row-major
    ROOT/SUNRGBD/<folder>/label/label.npy               (H, W) 37-class map: 0 = void, 1..37 the NYU40 classes

``ROOT/train.txt`` / ``ROOT/test.txt`` (one folder per line, relative to ROOT) replace ``allsplit.mat`` when
present. The release keeps the 37-class maps only in ``SUNRGBDtoolbox/Metadata/SUNRGBD2Dseg.mat`` (HDF5,
``seglabel``, one map per entry of ``SUNRGBDMeta.mat``), which needs tens of GB of memory to load at once;
``label/label.npy`` is the per-folder export of that map written by the widely used RedNet / ESANet
preparation scripts (a ``label37.png`` with the same values is accepted too).

* ``semseg``: the map with 0 → 255 (ignore) and k → k − 1; values above 37 are an error.
* ``depth``: the SUN RGB-D toolbox's decoding (``SUNRGBDtoolbox/readData/read3dPoints.m``, the official reader,
  and SUN3D's ``depthRead.m``, whose encoding SUN RGB-D keeps): the stored 16-bit value is rotated right by 3
  bits, ``bitor(bitshift(d, -3), bitshift(d, 16 - 3))`` i.e. ``(d >> 3) | (d << 13)`` on 16 bits, and divided by
  1000 (millimetres → metres); 0 = invalid; values beyond :data:`MAX_DEPTH` are set to it. *Established from*
  ``read3dPoints.m``, which sets depths above 8 m to 8 (``depthInpaint(depthInpaint > 8) = 8``); derived copies
  of that file in other repositories raise the cap to 10 m, which is not the toolbox's.
* ``normals``: derived from the depth and ``intrinsics.txt``
  (:func:`~mtdense.data._geometry.normals_from_depth`: x right, y down, z forward, facing the camera).
* ``edge``: ``thin(|Laplacian(L)| > 0)`` of the semseg map (:func:`~mtdense.data._readers.label_edges`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._geometry import normals_from_depth
from ._io import read_image, read_label_png, read_npy
from ._png16 import read_png
from ._readers import IGNORE, FolderDataset, check_hw, label_edges, read_split_list
from .registry import register_dataset

NUM_CLASSES = 37
MAX_DEPTH = 8.0
"""Depth cap in metres, the official toolbox's (module docstring)."""
TASKS = ("semseg", "depth", "normals", "edge")
SPLITS = ("train", "test")
ALLSPLIT = Path("SUNRGBDtoolbox") / "traintestSUNRGBD" / "allsplit.mat"
"""The official split file, relative to ROOT."""


def read_allsplit(path: Path, split: str) -> list[str]:
    """The image folders of ``split`` in the toolbox's ``allsplit.mat``, relative to ROOT (``SUNRGBD/…``)."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise DataError(f"sunrgbd: split file not found: {path} (nor {path.parents[2] / split}.txt)")
    key = {"train": "alltrain", "test": "alltest"}[split]
    try:
        cells = scipy.io.loadmat(str(path))[key]
        folders = [str(np.asarray(c).reshape(-1)[0]) for c in np.asarray(cells, dtype=object).reshape(-1)]
    except (OSError, ValueError, TypeError, IndexError, NotImplementedError, MatReadError) as e:
        raise DataError(f"cannot decode {path}: {e}") from None
    except KeyError:
        raise DataError(f"{path}: no key {key!r} (expected alltrain / alltest)") from None
    out = []
    for f in folders:
        at = f.find("SUNRGBD/")
        if at < 0:
            raise DataError(f"{path}: {key} entry {f!r} is not a path under SUNRGBD/")
        out.append(f[at:].strip("/"))
    return out


def decode_depth(d: np.ndarray) -> np.ndarray:
    """SUN RGB-D depth PNG values (uint16) → metres (float32), 0 = invalid, capped at :data:`MAX_DEPTH`."""
    d = np.asarray(d).astype(np.uint16)
    rotated = (d >> np.uint16(3)) | (d << np.uint16(13))
    return np.minimum(rotated.astype(np.float32) / 1000.0, np.float32(MAX_DEPTH))


def read_intrinsics(path: Path) -> dict[str, float]:
    """``fx, fy, cx, cy`` of a SUN RGB-D ``intrinsics.txt`` (9 numbers, K row-major)."""
    if not path.is_file():
        raise DataError(f"intrinsics file not found: {path}")
    try:
        k = np.array(path.read_text(encoding="utf-8").split(), dtype=np.float64)
    except ValueError as e:
        raise DataError(f"cannot decode intrinsics file {path}: {e}") from None
    if k.size != 9 or k[0] <= 0 or k[4] <= 0:
        raise DataError(f"{path}: expected the 9 numbers of a 3x3 camera matrix with fx, fy > 0, got {k.tolist()}")
    return {"fx": float(k[0]), "fy": float(k[4]), "cx": float(k[2]), "cy": float(k[5])}


def _only(folder: Path, pattern: str, what: str) -> Path:
    hits = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if len(hits) != 1:
        got = "none" if not hits else f"{len(hits)} ({', '.join(p.name for p in hits[:3])})"
        raise DataError(f"{what}: expected one {pattern} file in {folder}, got {got}")
    return hits[0]


class SUNRGBD(FolderDataset):
    """A split (``train`` / ``test``) of SUN RGB-D (module docstring)."""

    name = "sunrgbd"
    supported_tasks = TASKS

    def __init__(self, root: str | os.PathLike, *, split: str, tasks: Sequence[str]) -> None:
        super().__init__(root, split=split, tasks=tasks)
        from ..tasks.semseg import default_palette
        from .nyud import NYU40_CLASS_NAMES

        self.meta: dict[str, Any] = {
            "dataset": self.name,
            "num_classes": NUM_CLASSES,
            "class_names": list(NYU40_CLASS_NAMES[:NUM_CLASSES]),
            "palette": default_palette(NUM_CLASSES).tolist(),
        }
        self._lut = np.full(256, IGNORE, np.uint8)
        self._lut[1 : NUM_CLASSES + 1] = np.arange(NUM_CLASSES, dtype=np.uint8)

    def list_ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise DataError(f"sunrgbd: unknown split {split!r}; expected one of {list(SPLITS)}")
        listed = self.root / f"{split}.txt"
        if listed.is_file():
            return [line.strip("/") for line in read_split_list(listed)]
        return read_allsplit(self.root / ALLSPLIT, split)

    def load_sample(self, sid: str) -> dict[str, np.ndarray]:
        folder = self.root / sid
        if not folder.is_dir():
            raise DataError(f"sunrgbd: image folder not found: {folder} (listed in the {self.split} split)")
        image = read_image(_only(folder / "image", "*.jpg", "sunrgbd image"))
        hw = image.shape[:2]
        raw: dict[str, np.ndarray] = {"image": image}
        if {"semseg", "edge"} & set(self.tasks):
            path = folder / "label" / "label.npy"
            if path.is_file():
                lab = read_npy(path)
                if lab.dtype.kind not in "ui" or lab.ndim != 2:
                    raise DataError(f"{path}: expected a (H, W) integer label map, got {lab.dtype} {lab.shape}")
            else:
                path = folder / "label37.png"
                if not path.is_file():
                    raise DataError(
                        f"sunrgbd: no 37-class label map in {folder} (expected label/label.npy or label37.png)"
                    )
                lab = read_label_png(path)
            check_hw(path, lab.shape, hw)
            if int(lab.min()) < 0:
                raise DataError(f"{path}: negative label value {int(lab.min())}")
            if int(lab.max()) > NUM_CLASSES:
                raise DataError(f"{path}: label value {int(lab.max())} outside 0 (void) .. {NUM_CLASSES}")
            labels = self._lut[lab.astype(np.int64)]
            if "semseg" in self.tasks:
                raw["semseg"] = labels
            if "edge" in self.tasks:
                raw["edge"] = label_edges(labels)
        if {"depth", "normals"} & set(self.tasks):
            depth_dir = folder / "depth_bfx" if (folder / "depth_bfx").is_dir() else folder / "depth"
            path = _only(depth_dir, "*.png", "sunrgbd depth")
            d = read_png(path, what="depth map", dtype=np.uint16)
            check_hw(path, d.shape, hw)
            depth = decode_depth(d)
            if "depth" in self.tasks:
                raw["depth"] = depth
            if "normals" in self.tasks:
                raw["normals"] = normals_from_depth(depth, **read_intrinsics(folder / "intrinsics.txt"))
        return raw


def _detect(root: Path) -> bool:
    return (root / ALLSPLIT).is_file() or ((root / "SUNRGBD").is_dir() and (root / "train.txt").is_file())


@register_dataset("sunrgbd", detect=_detect)
def open_sunrgbd(root: str | Path, *, split: str, tasks: Sequence[str]) -> SUNRGBD:
    """SUN RGB-D at ``root`` (module docstring)."""
    return SUNRGBD(root, split=split, tasks=tasks)
