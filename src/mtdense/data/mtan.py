"""NYUD-v2 as MTAN / LibMTL / Auto-Lambda preprocess it (``nyud_mtan13``): 13 classes at 288×384, npy files.

The layout (MTAN, Liu et al., CVPR 2019, and the libraries that reuse its preprocessing)::

    ROOT/{train,val}/image/<i>.npy    (288, 384, 3) float in [0, 1]
    ROOT/{train,val}/label/<i>.npy    (288, 384) the 13 classes 0..12, −1 = ignore
    ROOT/{train,val}/depth/<i>.npy    (288, 384, 1) metres, 0 = invalid
    ROOT/{train,val}/normal/<i>.npy   (288, 384, 3) unit vectors in [−1, 1], zero = invalid

``i = 0..N−1`` (train 795, val 654). Numbers on this protocol are not comparable with the 40-class
NYUD-MT protocol (other classes, resolution and normals).

Samples follow the data contract: ``semseg`` −1 → 255; ``edge`` derived from the labels as in
:mod:`mtdense.data.nyud_convert` (1-px contours on the nearer side); class names are the 13 of
Couprie et al. (alphabetical, the order of the 13-class map). The image stays float (no 8-bit round trip).

Normals: the preprocessing does not document its axis convention. It is established from the data as
for the Eigen release (:func:`mtdense.data.nyud_convert.fit_normal_axes`): the signed axis permutation
that best agrees with normals derived from the same samples' depth (the first
:data:`~mtdense.data.nyud_convert.AXES_FIT_IMAGES` samples of ``train``, or of the split opened when there
is no ``train``; intrinsics = the NYU RGB camera's scaled by 0.6, i.e. 480×640 → 288×384), then applied to
every normal so they come out in the project's frame (x right, y down, z forward, facing the camera).
``meta`` records the matrix (``normals_axes``) and its agreement; below
:data:`~mtdense.data.nyud_convert.MIN_AXES_AGREEMENT` the identity is kept and a warning says so.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ._geometry import normals_from_depth
from ._io import read_npy
from ._readers import IndexedDataset
from .nyud_convert import (
    AXES_FIT_IMAGES,
    MIN_AXES_AGREEMENT,
    NYU_INTRINSICS,
    class_names,
    fit_normal_axes,
    label_palette,
)
from .registry import register_dataset

TASKS = ("semseg", "depth", "normals", "edge")
FOLDERS = {"image": "image", "semseg": "label", "depth": "depth", "normals": "normal"}
SIZE = (288, 384)
SCALE = SIZE[0] / 480
INTRINSICS = {k: v * SCALE for k, v in NYU_INTRINSICS.items()}
"""The NYU RGB intrinsics scaled to the 288×384 images (approximate: the preprocessing's resize is not documented)."""
NUM_CLASSES = 13


def _ids(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    stems = [p.stem for p in folder.glob("*.npy")]
    bad = [s for s in stems if not s.isdigit()]
    if bad:
        raise DataError(f"{folder}: expected files <i>.npy with an integer i, got {bad[0]}.npy")
    return [str(i) for i in sorted(int(s) for s in stems)]


class NYUDMTAN(IndexedDataset):
    """A split (``train`` or ``val``) of the MTAN layout (module docstring) as a torch Dataset."""

    def __init__(self, root: str | os.PathLike, split: str = "train", tasks: Sequence[str] = TASKS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root}")
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ConfigError(f"unknown nyud_mtan13 task(s) {unknown}; expected a subset of {list(TASKS)}")
        self.split, self.tasks = split, tuple(tasks)
        self.dir = self.root / split
        if not self.dir.is_dir():
            raise DataError(f"split folder not found: {self.dir} (expected ROOT/train and ROOT/val)")
        self.ids = _ids(self.dir / "image")
        if not self.ids:
            raise DataError(f"{self.dir / 'image'} holds no <i>.npy images")
        if self.ids != [str(i) for i in range(len(self.ids))]:
            raise DataError(f"{self.dir / 'image'}: expected 0.npy .. {len(self.ids) - 1}.npy without gaps")
        needed = {t for t in self.tasks if t in FOLDERS} | ({"depth", "semseg"} if "edge" in self.tasks else set())
        for task in sorted(needed):
            folder = self.dir / FOLDERS[task]
            have = set(_ids(folder))
            missing = [i for i in self.ids if i not in have]
            if missing:
                raise DataError(
                    f"{folder}: {len(missing)} of the {len(self.ids)} files are missing (first: {missing[0]}.npy)"
                )
        self.meta: dict[str, Any] = {
            "dataset": "nyud-mtan13",
            "num_classes": NUM_CLASSES,
            "class_names": class_names(NUM_CLASSES),
            "palette": label_palette(NUM_CLASSES),
            "intrinsics": dict(INTRINSICS),
        }
        self.axes = np.eye(3, dtype=np.float32)
        if "normals" in self.tasks:
            self._establish_axes()

    def _read(self, kind: str, sid: str, *, shape: tuple[int, ...]) -> np.ndarray:
        path = self.dir / FOLDERS[kind] / f"{sid}.npy"
        a = read_npy(path)
        if kind in ("depth", "semseg") and a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.shape[:2] != shape[:2] or a.ndim != len(shape) or (len(shape) == 3 and a.shape[2] != shape[2]):
            raise DataError(f"{path}: expected shape {shape}, got {a.shape}")
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{path}: expected a numeric array, got dtype {a.dtype}")
        return a

    def _establish_axes(self) -> None:
        fit_dir = self.root / "train" if (self.root / "train" / "normal").is_dir() else self.dir
        ids = _ids(fit_dir / "image")[:AXES_FIT_IMAGES]
        stored, derived = [], []
        for sid in ids:
            depth = self._depth(self._read_any(fit_dir, "depth", sid))
            normal = self._normals_raw(self._read_any(fit_dir, "normals", sid))
            derived.append(normals_from_depth(depth, **INTRINSICS))
            stored.append(normal)
        axes, agreement = fit_normal_axes(stored, derived)
        self.meta["normals_axes_agreement"] = round(float(agreement), 4)
        if agreement < MIN_AXES_AGREEMENT:
            warnings.warn(
                f"{fit_dir}: the normals' axis convention could not be established (best agreement with depth-derived "
                f"normals {agreement:.2f} < {MIN_AXES_AGREEMENT}); they are used as stored",
                stacklevel=2,
            )
            axes = np.eye(3)
        self.axes = axes.astype(np.float32)
        self.meta["normals_axes"] = axes.astype(int).tolist()

    @staticmethod
    def _read_any(split_dir: Path, kind: str, sid: str) -> np.ndarray:
        return read_npy(split_dir / FOLDERS[kind] / f"{sid}.npy")

    @staticmethod
    def _depth(a: np.ndarray) -> np.ndarray:
        a = a[..., 0] if a.ndim == 3 else a
        a = a.astype(np.float32)
        return np.where(np.isfinite(a) & (a > 0), a, np.float32(0.0))

    @staticmethod
    def _normals_raw(a: np.ndarray) -> np.ndarray:
        a = np.where(np.isfinite(a), a, 0.0).astype(np.float32)
        norm = np.linalg.norm(a, axis=-1, keepdims=True)
        return np.where(norm > 1e-6, a / np.where(norm > 0, norm, 1.0), np.float32(0.0)).astype(np.float32)

    def load_raw(self, index: int) -> dict[str, np.ndarray]:
        """``image`` float32 (H, W, 3) in [0, 1]; ``semseg`` uint8 (255 = ignore); ``depth`` float32 metres;
        ``normals`` float32 unit vectors in the project frame; ``edge`` uint8 {0, 1}."""
        sid = self.ids[self._check(index)]
        image = self._read("image", sid, shape=(*SIZE, 3)).astype(np.float32)
        h, w = image.shape[:2]
        raw: dict[str, np.ndarray] = {"image": np.clip(image, 0.0, 1.0)}
        labels = None
        if "semseg" in self.tasks or "edge" in self.tasks:
            path = self.dir / "label" / f"{sid}.npy"
            lab = self._read("semseg", sid, shape=(h, w))
            ok = (lab == np.round(lab)) & (lab >= -1) & (lab < NUM_CLASSES)
            if not ok.all():
                bad = lab[~ok].flat[0]
                raise DataError(f"{path}: label {bad} outside the 13-class protocol (expected 0..12 or -1 = ignore)")
            labels = np.where(lab < 0, 255, lab).astype(np.uint8)
            if "semseg" in self.tasks:
                raw["semseg"] = labels
        depth = None
        if "depth" in self.tasks or "edge" in self.tasks:
            depth = self._depth(self._read("depth", sid, shape=(h, w)))
            if "depth" in self.tasks:
                raw["depth"] = depth
        if "normals" in self.tasks:
            n = self._normals_raw(self._read("normals", sid, shape=(h, w, 3)))
            raw["normals"] = np.ascontiguousarray(n @ self.axes.T)
        if "edge" in self.tasks:
            from .synthetic.renderer import thin_edges

            raw["edge"] = thin_edges(labels, np.where(depth > 0, depth, np.float32(np.inf)))
        return raw

    def finish(self, raw: dict[str, np.ndarray], index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(raw["image"].transpose(2, 0, 1)))}
        sample["image"] = sample["image"].float().clone()
        if "semseg" in raw:
            sample["semseg"] = torch.from_numpy(raw["semseg"].astype(np.int64))
        if "depth" in raw:
            sample["depth"] = torch.from_numpy(np.array(raw["depth"], np.float32)[None])
        if "normals" in raw:
            sample["normals"] = torch.from_numpy(np.array(raw["normals"].transpose(2, 0, 1), np.float32))
        if "edge" in raw:
            sample["edge"] = torch.from_numpy(raw["edge"].astype(np.float32)[None])
        sample["meta"] = {"id": self.ids[index], "index": int(index)}
        return sample


def _detect(root: Path) -> bool:
    return (root / "train" / "image").is_dir() and (root / "train" / "label").is_dir()


@register_dataset("nyud_mtan13", detect=_detect)
def open_nyud_mtan13(root: str | Path, *, split: str, tasks: Sequence[str]) -> NYUDMTAN:
    return NYUDMTAN(root, split=split, tasks=tasks)
