"""NYUD-MT: the multi-task NYU Depth V2 layout (semseg, depth, normals, edges), and anything written in it.

The layout (as distributed by the MTI-Net / ATRC line with their NYUD-MT download, and
written by :func:`mtdense.data.synthetic.write_synthetic_dataset`)::

    ROOT/images/<id>.jpg | .png        RGB
    ROOT/segmentation/<id>.png         uint8; 0 = void → 255 ignore; k → k − 1
    ROOT/depth/<id>.npy                float32 (H, W) metres; 0 = invalid
    ROOT/normals/<id>.npy              float32 (H, W, 3) unit vectors; zero vector = invalid
    ROOT/edge/<id>.npy                 float32 (H, W); binarised at >= 0.5
    ROOT/gt_sets/train.txt, val.txt    one id per line
    ROOT/meta.json                     required: num_classes; optional: class_names, palette, intrinsics

``meta.json`` is required: the class count cannot be guessed (a head of the wrong width trains
silently on wrong labels), and a missing one is also how an interrupted ``mtdense data synth`` looks
(the writer deletes it first and writes it last, atomically). A synthetic folder's ``meta.json``
(``"dataset": "mtdense-synthetic"``) records the image count of each split and the generator
version; the reader checks the counts against ``gt_sets/`` and that every listed image is on disk,
so a half-rendered folder is an error naming what is missing, never a silently smaller split.

Normals come out in the data contract's camera frame (x right, y down, z forward, facing the camera), the
frame the synthetic writer and ``mtdense data convert nyud`` store. A folder stored in another axis convention
says so in ``meta.json``: ``"normals_to_camera"``, the 3×3 signed permutation ``M`` with ``n_camera = M · n_stored``,
applied on load. The public NYUD-MT release documents no convention; it is established on the user's own files
by ``mtdense data check`` (:mod:`mtdense.data.check`): with ``"intrinsics"`` in ``meta.json`` (NYU's:
``{"fx": 518.8579, "fy": 519.4696, "cx": 325.5824, "cy": 253.7362}``) it fits the signed axis permutation that
maps the stored normals onto normals derived from the depth maps (as the converter does for Eigen's release) and,
when that is not the identity, reports the ``normals_to_camera`` matrix to write.

The reader returns un-augmented samples; augmentation is the engine's job
(:class:`mtdense.engine.data.Augmented`, which draws each sample's generator from
``(seed, epoch, index)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ._io import find_image, read_image, read_label_png, read_npy
from ._readers import IndexedDataset, check_hw
from .registry import register_dataset

TASKS = ("semseg", "depth", "normals", "edge")
"""Dense tasks stored in the layout."""
FOLDERS = {"images": "images", "semseg": "segmentation", "depth": "depth", "normals": "normals", "edge": "edge"}
"""Folder of the image and of each task's files under ROOT."""
IGNORE = 255
EDGE_THRESHOLD = 0.5
"""Stored edge maps are soft in the public release; ``edge >= EDGE_THRESHOLD`` is an edge."""
NYU40_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip
"""The 40 classes of Gupta et al. (``names40`` of ``nyuv2_meta.json``); class id = position."""


def raw_to_sample(raw: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, Any]:
    """Turn a raw sample (see :meth:`NYUDMT.load_raw`) into the data contract's tensors.

    ``image`` float32 (3, H, W) in [0, 1]; ``semseg`` int64 (H, W) with 255 = ignore; ``depth``
    float32 (1, H, W); ``normals`` float32 (3, H, W); ``edge`` float32 (1, H, W) in {0, 1}; ``meta``.
    Every tensor owns its memory, so in-place transforms cannot alter the raw (possibly cached) arrays.
    """
    sample: dict[str, Any] = {
        "image": torch.from_numpy(np.ascontiguousarray(raw["image"].transpose(2, 0, 1))).float().div_(255.0)
    }
    if "semseg" in raw:
        sample["semseg"] = torch.from_numpy(raw["semseg"].astype(np.int64))
    if "depth" in raw:
        sample["depth"] = torch.from_numpy(np.array(raw["depth"], dtype=np.float32, copy=True)[None])
    if "normals" in raw:
        n = np.ascontiguousarray(raw["normals"].transpose(2, 0, 1), dtype=np.float32)
        sample["normals"] = torch.from_numpy(n.copy() if np.shares_memory(n, raw["normals"]) else n)
    if "edge" in raw:
        sample["edge"] = torch.from_numpy(raw["edge"].astype(np.float32)[None])
    sample["meta"] = dict(meta)
    return sample


def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """The dataset's ``ROOT/meta.json`` as a dict; a missing, corrupt or non-object file is a :class:`DataError`
    naming it and saying what to do."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise DataError(
            f"{Path(root)} has no meta.json: either an interrupted `mtdense data synth` (render it again) or a "
            f"NYUD-MT folder without its class metadata (write {path} with at least "
            '{"num_classes": 40}, and "class_names" / "palette" if known)'
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: corrupt or unreadable JSON ({e}); restore or rewrite it") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _axes_matrix(value: Any, path: Path) -> np.ndarray | None:
    """``meta.json``'s ``normals_to_camera`` as a float32 3×3 signed permutation, or None when absent."""
    if value is None:
        return None
    try:
        m = np.asarray(value, dtype=np.float64) if isinstance(value, list) else np.zeros(0)
    except (TypeError, ValueError):  # ragged or non-numeric lists
        m = np.zeros(0)
    ok = m.shape == (3, 3) and set(np.unique(np.abs(m)).tolist()) <= {0.0, 1.0}
    if not ok or not (np.abs(m).sum(0) == 1).all() or not (np.abs(m).sum(1) == 1).all():
        raise DataError(
            f"{path}: normals_to_camera: expected a 3x3 signed permutation matrix (one ±1 per row and column), "
            f"got {value!r}"
        )
    return m.astype(np.float32)


class NYUDMT(IndexedDataset):
    """A split of a dataset in the NYUD-MT layout (module docstring) as a torch Dataset.

    Args:
        root: the dataset folder.
        split: name of a list in ``gt_sets/`` (``train`` or ``val``).
        tasks: which targets to load, a subset of :data:`TASKS`; the image is always loaded.

    Attributes: ``ids``, ``num_classes`` (``meta.json``; required to read semseg, else 0 if absent),
    ``class_names``, ``palette`` (``(K, 3)`` uint8 or None), ``intrinsics`` (dict ``fx, fy, cx, cy`` or
    None), ``meta``.
    Raises :class:`DataError` naming the path for a missing folder, split list or sample file, or an
    undecodable file; :class:`ConfigError` for an unknown task.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tasks: Sequence[str] = TASKS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root}")
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ConfigError(f"unknown NYUD-MT task(s) {unknown}; expected a subset of {list(TASKS)}")
        self.split, self.tasks = split, tuple(tasks)
        split_file = self.root / "gt_sets" / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(f"split list not found: {split_file}")
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise DataError(f"split list {split_file} is empty")
        self.meta = self._read_meta()
        self._check_complete(split_file)
        if "num_classes" not in self.meta and "semseg" in self.tasks:
            raise DataError(
                f"{self.root / 'meta.json'}: no 'num_classes', needed to read semseg labels "
                "(no default: a guessed class count would silently mislabel)"
            )
        self.num_classes = int(self.meta.get("num_classes", 0))
        if "semseg" in self.tasks and not 1 <= self.num_classes <= IGNORE:
            raise DataError(f"{self.root / 'meta.json'}: num_classes must be in [1, 255], got {self.num_classes}")
        names = self.meta.get("class_names")
        if names is None and self.num_classes == len(NYU40_CLASS_NAMES):
            names = NYU40_CLASS_NAMES
        self.class_names = tuple(names) if names is not None else tuple(f"class_{k}" for k in range(self.num_classes))
        palette = self.meta.get("palette")
        self.palette = None if palette is None else np.asarray(palette, np.uint8).reshape(-1, 3)
        self.intrinsics = self.meta.get("intrinsics")
        self.normals_to_camera = _axes_matrix(self.meta.get("normals_to_camera"), self.root / "meta.json")
        # raw label → class: 0 (void) → 255, k → k − 1; values above num_classes are rejected on load
        self._lut = np.full(256, IGNORE, np.uint8)
        self._lut[1 : self.num_classes + 1] = np.arange(self.num_classes, dtype=np.uint8)

    def _read_meta(self) -> dict[str, Any]:
        return read_meta(self.root)

    def _check_complete(self, split_file: Path) -> None:
        """A synthetic folder must be as its writer finished it: split count as recorded, images on disk."""
        if self.meta.get("dataset") != "mtdense-synthetic":
            return
        path = self.root / "meta.json"
        splits = self.meta.get("splits")
        if not isinstance(splits, dict) or self.split not in splits:
            raise DataError(f"{path}: no image count recorded for split {self.split!r} (expected 'splits')")
        if len(self.ids) != splits[self.split]:
            raise DataError(
                f"{split_file}: {len(self.ids)} ids, but {path} records {splits[self.split]} for split "
                f"{self.split!r} (generator version {self.meta.get('generator_version')}): an incomplete or "
                "mixed rendering; render it again"
            )
        for key in ("images", *self.tasks):
            folder = self.root / FOLDERS[key]
            on_disk = {q.stem for q in folder.iterdir()} if folder.is_dir() else set()
            missing = [sid for sid in self.ids if sid not in on_disk]
            if missing:
                raise DataError(
                    f"{folder}: {len(missing)} of the {len(self.ids)} {self.split} samples listed in {split_file} "
                    f"are missing (first: {missing[0]}): a half-rendered folder; render it again"
                )

    def load_raw(self, index: int) -> dict[str, np.ndarray]:
        """Decode sample ``index`` into compact numpy arrays (no transform).

        ``image`` uint8 (H, W, 3); ``semseg`` uint8 (H, W) classes 0..K−1, 255 = ignore; ``depth``
        float32 (H, W), non-finite or negative → 0; ``normals`` float32 (H, W, 3), non-finite → 0;
        ``edge`` uint8 (H, W) in {0, 1}. Only the requested tasks are read.
        """
        sid = self.ids[self._check(index)]
        image = read_image(find_image(self.root / "images", sid))
        hw = image.shape[:2]
        raw: dict[str, np.ndarray] = {"image": image}
        if "semseg" in self.tasks:
            path = self.root / "segmentation" / f"{sid}.png"
            lab = read_label_png(path)
            check_hw(path, lab.shape, hw)
            top = int(lab.max())
            if top > self.num_classes:
                raise DataError(f"{path}: label value {top} exceeds num_classes = {self.num_classes}")
            raw["semseg"] = self._lut[lab]
        if "depth" in self.tasks:
            path = self.root / "depth" / f"{sid}.npy"
            depth = read_npy(path)
            depth = depth[..., 0] if depth.ndim == 3 and depth.shape[2] == 1 else depth
            check_hw(path, depth.shape, hw)
            depth = depth.astype(np.float32, copy=False)
            raw["depth"] = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0))
        if "normals" in self.tasks:
            path = self.root / "normals" / f"{sid}.npy"
            normals = read_npy(path)
            check_hw(path, normals.shape, hw, channels=3)
            normals = normals.astype(np.float32, copy=False)
            normals = np.where(np.isfinite(normals), normals, np.float32(0.0))
            if self.normals_to_camera is not None:
                normals = normals @ self.normals_to_camera.T
            raw["normals"] = normals
        if "edge" in self.tasks:
            path = self.root / "edge" / f"{sid}.npy"
            edge = read_npy(path)
            edge = edge[..., 0] if edge.ndim == 3 and edge.shape[2] == 1 else edge
            check_hw(path, edge.shape, hw)
            raw["edge"] = (edge >= EDGE_THRESHOLD).astype(np.uint8)
        return raw

    def finish(self, raw: dict[str, np.ndarray], index: int) -> dict[str, Any]:
        """Tensors of the data contract from ``raw`` (a sample of :meth:`load_raw`, possibly cached)."""
        return raw_to_sample(raw, {"id": self.ids[index], "index": int(index)})

    def __repr__(self) -> str:
        return (
            f"NYUDMT(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, tasks={list(self.tasks)}, "
            f"num_classes={self.num_classes})"
        )


def _read_meta_dataset(root: Path) -> Any:
    try:
        return json.loads((root / "meta.json").read_text(encoding="utf-8")).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None


def _detect_nyud_mt(root: Path) -> bool:
    return (
        (root / "gt_sets").is_dir() and (root / "images").is_dir() and _read_meta_dataset(root) != "mtdense-synthetic"
    )


def _detect_synthetic(root: Path) -> bool:
    return _read_meta_dataset(root) == "mtdense-synthetic"


@register_dataset("nyud_mt", detect=_detect_nyud_mt)
def open_nyud_mt(root: str | Path, *, split: str, tasks: Sequence[str]) -> NYUDMT:
    """NYUD-MT (the MTI-Net line's release, or the output of ``mtdense data convert nyud``)."""
    return NYUDMT(root, split=split, tasks=tasks)


@register_dataset("synthetic", detect=_detect_synthetic)
def open_synthetic(root: str | Path, *, split: str, tasks: Sequence[str]) -> NYUDMT:
    """The embedded synthetic benchmark, written in the NYUD-MT layout by ``mtdense data synth``."""
    return NYUDMT(root, split=split, tasks=tasks)
