"""Cityscapes (``cityscapes``, ``cityscapes16``, ``cityscapes7``, ``cityscapes8``): semseg, depth, normals, edges.

The layout of the official download (Cordts et al., CVPR 2016; the ``leftImg8bit``, ``gtFine``,
``disparity`` and ``camera`` packages of cityscapes-dataset.com)::

    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png     RGB 2048×1024
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png               uint8 label ids 0..33
    ROOT/disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png                  uint16
    ROOT/camera/<split>/<city>/<city>_<seq>_<frame>_camera.json
        {"extrinsic": {"baseline": …, …}, "intrinsic": {"fx": …, "fy": …, "u0": …, "v0": …}}

A sample id is ``<city>/<city>_<seq>_<frame>``; a split is every ``leftImg8bit`` image of its folder
(2975 train, 500 val, 1525 test).

* ``semseg``: label ids mapped through the official label table (``cityscapesscripts.helpers.labels``, used
  when the ``cityscapesscripts`` package is installed — ``pip install mtdense[cityscapes]`` — else the same
  table kept in :data:`LABELS`, checked equal to the package's by the tests). Four protocols, one
  registered name each: ``cityscapes`` the 19 ``trainId`` classes; ``cityscapes16`` the 16 classes shared
  with SYNTHIA (the 19 without terrain, truck and train, in trainId order); ``cityscapes7`` the 7 categories
  (flat, construction, object, nature, sky, human, vehicle) of the 19 evaluated classes — *choice*: the
  classes with ``ignoreInEval`` (parking, guard rail, caravan, …) stay ignored here as in the 19-class
  protocol, so the 7-class map is a coarsening of the 19-class one; ``cityscapes8`` the 8 classes shared
  with Virtual KITTI 2 (:data:`VKITTI2_SHARED`: road, building, pole, traffic light, traffic sign, vegetation,
  sky, and vehicle = car and bus), on which DenseMTL (Lopes et al., WACV 2023, Table 6) scores VKITTI2 →
  Cityscapes. The paper does not list the 8 classes; their grouping follows the authors' released protocol
  (their DenseMTL code's 8-class VKITTI2/Cityscapes mapping); ``vkitti2_8``
  (:mod:`mtdense.data.vkitti2`) maps VKITTI2 onto the same class ids, names and colours. Every other id is 255.
* ``depth``: the Cityscapes README's disparity encoding: for a stored ``p > 0`` the disparity is
  ``d = (p − 1) / 256`` pixels, ``p = 0`` is invalid; depth = ``baseline · fx / d`` metres, with ``baseline``
  and ``fx`` from the image's camera JSON; invalid pixels and ``d = 0`` (infinitely far) are 0.
* ``normals``: derived from that depth and the camera JSON's intrinsics
  (:func:`~mtdense.data._geometry.normals_from_depth`: camera frame x right, y down, z forward, facing the
  camera; zero where a neighbour has no depth).
* ``edge``: ``thin(|Laplacian|(L) > 0)`` of the protocol's label map (255 included), the PASCAL rule
  (:func:`~mtdense.data._readers.label_edges`) — Cityscapes ships no edge ground truth.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError
from ._geometry import normals_from_depth
from ._io import read_image, read_label_png
from ._png16 import read_png
from ._readers import IGNORE, FolderDataset, check_hw, label_edges
from .registry import register_dataset


class Label(NamedTuple):
    """One row of the Cityscapes label table."""

    name: str
    id: int
    train_id: int
    category_id: int
    ignore_in_eval: bool
    color: tuple[int, int, int]


# The Cityscapes label definition (cityscapesScripts, helpers/labels.py, by M. Cordts et al.; see its
# LICENSE): name, label id, train id, category id, ignore in evaluation, colour. Kept here so that the
# reader works without the package; tests compare it with the package's table when it is installed.
LABELS: tuple[Label, ...] = tuple(
    Label(*row)
    for row in (
        ("unlabeled", 0, 255, 0, True, (0, 0, 0)),
        ("ego vehicle", 1, 255, 0, True, (0, 0, 0)),
        ("rectification border", 2, 255, 0, True, (0, 0, 0)),
        ("out of roi", 3, 255, 0, True, (0, 0, 0)),
        ("static", 4, 255, 0, True, (0, 0, 0)),
        ("dynamic", 5, 255, 0, True, (111, 74, 0)),
        ("ground", 6, 255, 0, True, (81, 0, 81)),
        ("road", 7, 0, 1, False, (128, 64, 128)),
        ("sidewalk", 8, 1, 1, False, (244, 35, 232)),
        ("parking", 9, 255, 1, True, (250, 170, 160)),
        ("rail track", 10, 255, 1, True, (230, 150, 140)),
        ("building", 11, 2, 2, False, (70, 70, 70)),
        ("wall", 12, 3, 2, False, (102, 102, 156)),
        ("fence", 13, 4, 2, False, (190, 153, 153)),
        ("guard rail", 14, 255, 2, True, (180, 165, 180)),
        ("bridge", 15, 255, 2, True, (150, 100, 100)),
        ("tunnel", 16, 255, 2, True, (150, 120, 90)),
        ("pole", 17, 5, 3, False, (153, 153, 153)),
        ("polegroup", 18, 255, 3, True, (153, 153, 153)),
        ("traffic light", 19, 6, 3, False, (250, 170, 30)),
        ("traffic sign", 20, 7, 3, False, (220, 220, 0)),
        ("vegetation", 21, 8, 4, False, (107, 142, 35)),
        ("terrain", 22, 9, 4, False, (152, 251, 152)),
        ("sky", 23, 10, 5, False, (70, 130, 180)),
        ("person", 24, 11, 6, False, (220, 20, 60)),
        ("rider", 25, 12, 6, False, (255, 0, 0)),
        ("car", 26, 13, 7, False, (0, 0, 142)),
        ("truck", 27, 14, 7, False, (0, 0, 70)),
        ("bus", 28, 15, 7, False, (0, 60, 100)),
        ("caravan", 29, 255, 7, True, (0, 0, 90)),
        ("trailer", 30, 255, 7, True, (0, 0, 110)),
        ("train", 31, 16, 7, False, (0, 80, 100)),
        ("motorcycle", 32, 17, 7, False, (0, 0, 230)),
        ("bicycle", 33, 18, 7, False, (119, 11, 32)),
    )
)
CATEGORY_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
"""The 7 categories, category id 1..7 → class 0..6."""
SYNTHIA16_DROPPED = ("terrain", "truck", "train")
"""The 3 of the 19 classes that SYNTHIA lacks; the 16-class protocol drops them."""
VKITTI2_SHARED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("road", ("road",)), ("building", ("building",)), ("pole", ("pole",)), ("traffic light", ("traffic light",)),
    ("traffic sign", ("traffic sign",)), ("vegetation", ("vegetation",)), ("sky", ("sky",)),
    ("vehicle", ("car", "bus")),
)  # fmt: skip
"""The 8-class protocol shared with Virtual KITTI 2 (module docstring): (class name, the Cityscapes labels it
groups), class id = position; its colour is that of its first label."""
NUM_LABEL_IDS = 34
"""Label ids stored in ``gtFine_labelIds.png``: 0..33."""
TASKS = ("semseg", "depth", "normals", "edge")
SPLITS = ("train", "val", "test")
PROTOCOL_NAMES = {19: "cityscapes", 16: "cityscapes16", 8: "cityscapes8", 7: "cityscapes7"}
"""Number of classes → registered dataset name."""


def label_table() -> tuple[Label, ...]:
    """The label table: ``cityscapesscripts``' when the package is installed, :data:`LABELS` otherwise."""
    try:
        from cityscapesscripts.helpers import labels as cs
    except ImportError:
        return LABELS
    return tuple(
        Label(lab.name, lab.id, lab.trainId, lab.categoryId, bool(lab.ignoreInEval), tuple(lab.color))
        for lab in cs.labels
        if 0 <= lab.id < NUM_LABEL_IDS
    )


def protocol(num_classes: int, table: Sequence[Label] | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(lut, class_names, palette)`` of the 19-, 16-, 8- or 7-class protocol: ``lut[label_id]`` = class or 255."""
    table = label_table() if table is None else table
    evaluated = sorted((lab for lab in table if not lab.ignore_in_eval and 0 <= lab.train_id < IGNORE),
                       key=lambda lab: lab.train_id)  # fmt: skip
    lut = np.full(256, IGNORE, np.uint8)
    if num_classes == 19:
        kept = evaluated
    elif num_classes == 16:
        kept = [lab for lab in evaluated if lab.name not in SYNTHIA16_DROPPED]
    elif num_classes == 7:
        for lab in evaluated:
            lut[lab.id] = lab.category_id - 1
        colours = {lab.category_id: lab.color for lab in reversed(evaluated)}  # first class of each category
        return lut, list(CATEGORY_NAMES), np.array([colours[c + 1] for c in range(7)], np.uint8)
    elif num_classes == 8:
        by_name = {lab.name: lab for lab in table}
        for k, (_, members) in enumerate(VKITTI2_SHARED):
            for member in members:
                lut[by_name[member].id] = k
        colours = [by_name[members[0]].color for _, members in VKITTI2_SHARED]
        return lut, [name for name, _ in VKITTI2_SHARED], np.array(colours, np.uint8)
    else:
        raise ValueError(f"Cityscapes protocol: expected 19, 16, 8 or 7 classes, got {num_classes}")
    for k, lab in enumerate(kept):
        lut[lab.id] = k
    return lut, [lab.name for lab in kept], np.array([lab.color for lab in kept], np.uint8)


def disparity_to_depth(p: np.ndarray, *, baseline: float, fx: float) -> np.ndarray:
    """Stored disparity PNG values (uint16) → depth in metres, 0 = invalid (module docstring)."""
    p = np.asarray(p, np.float64)
    d = np.where(p > 0, (p - 1.0) / 256.0, 0.0)
    return np.where(d > 0, baseline * fx / np.where(d > 0, d, 1.0), 0.0).astype(np.float32)


def read_camera(path: Path) -> dict[str, float]:
    """``baseline, fx, fy, cx, cy`` of a Cityscapes camera JSON; a :class:`DataError` naming a missing key."""
    if not path.is_file():
        raise DataError(f"camera file not found: {path}")
    try:
        cam = json.loads(path.read_text(encoding="utf-8"))
        out = {"baseline": cam["extrinsic"]["baseline"]}
        out.update({k: cam["intrinsic"][src] for k, src in (("fx", "fx"), ("fy", "fy"), ("cx", "u0"), ("cy", "v0"))})
    except ValueError as e:
        raise DataError(f"cannot decode camera file {path}: {e}") from None
    except (KeyError, TypeError) as e:
        raise DataError(
            f"{path}: missing key {e}; expected "
            "{'extrinsic': {'baseline'}, 'intrinsic': {'fx', 'fy', 'u0', 'v0'}}"
        ) from None
    try:
        vals = {k: float(v) for k, v in out.items()}
    except (TypeError, ValueError):
        raise DataError(f"{path}: camera values must be numbers, got {out}") from None
    if vals["baseline"] <= 0 or vals["fx"] <= 0 or vals["fy"] <= 0:
        raise DataError(f"{path}: expected baseline, fx and fy > 0, got {vals}")
    return vals


class Cityscapes(FolderDataset):
    """A split of Cityscapes under one label protocol (module docstring)."""

    supported_tasks = TASKS

    def __init__(self, root: str | os.PathLike, *, split: str, tasks: Sequence[str], num_classes: int = 19) -> None:
        self.name = PROTOCOL_NAMES.get(num_classes, "cityscapes")
        super().__init__(root, split=split, tasks=tasks)
        self.lut, names, palette = protocol(num_classes)
        self.meta: dict[str, Any] = {
            "dataset": self.name,
            "num_classes": num_classes,
            "class_names": names,
            "palette": palette.tolist(),
        }

    def list_ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise DataError(f"{self.name}: unknown split {split!r}; expected one of {list(SPLITS)}")
        folder = self.root / "leftImg8bit" / split
        if not folder.is_dir():
            raise DataError(f"{self.name}: image folder not found: {folder}")
        suffix = "_leftImg8bit.png"
        return sorted(f"{p.parent.name}/{p.name[: -len(suffix)]}" for p in folder.glob(f"*/*{suffix}"))

    def _path(self, kind: str, sid: str, suffix: str) -> Path:
        return self.root / kind / self.split / f"{sid}_{suffix}"

    def load_sample(self, sid: str) -> dict[str, np.ndarray]:
        image = read_image(self._path("leftImg8bit", sid, "leftImg8bit.png"))
        hw = image.shape[:2]
        raw: dict[str, np.ndarray] = {"image": image}
        if {"semseg", "edge"} & set(self.tasks):
            path = self._path("gtFine", sid, "gtFine_labelIds.png")
            ids = read_label_png(path)
            check_hw(path, ids.shape, hw)
            if int(ids.max()) >= NUM_LABEL_IDS:
                raise DataError(f"{path}: label id {int(ids.max())} outside the Cityscapes ids 0..{NUM_LABEL_IDS - 1}")
            labels = self.lut[ids]
            if "semseg" in self.tasks:
                raw["semseg"] = labels
            if "edge" in self.tasks:
                raw["edge"] = label_edges(labels)
        if {"depth", "normals"} & set(self.tasks):
            cam = read_camera(self._path("camera", sid, "camera.json"))
            path = self._path("disparity", sid, "disparity.png")
            disp = read_png(path, what="disparity map", dtype=np.uint16)
            check_hw(path, disp.shape, hw)
            depth = disparity_to_depth(disp, baseline=cam["baseline"], fx=cam["fx"])
            if "depth" in self.tasks:
                raw["depth"] = depth
            if "normals" in self.tasks:
                raw["normals"] = normals_from_depth(depth, fx=cam["fx"], fy=cam["fy"], cx=cam["cx"], cy=cam["cy"])
        return raw


def _detect(root: Path) -> bool:
    return (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir()


@register_dataset("cityscapes", detect=_detect)
def open_cityscapes(root: str | Path, *, split: str, tasks: Sequence[str]) -> Cityscapes:
    """Cityscapes, 19 train classes (module docstring)."""
    return Cityscapes(root, split=split, tasks=tasks, num_classes=19)


@register_dataset("cityscapes16")
def open_cityscapes16(root: str | Path, *, split: str, tasks: Sequence[str]) -> Cityscapes:
    """Cityscapes, the 16 classes shared with SYNTHIA (module docstring)."""
    return Cityscapes(root, split=split, tasks=tasks, num_classes=16)


@register_dataset("cityscapes7")
def open_cityscapes7(root: str | Path, *, split: str, tasks: Sequence[str]) -> Cityscapes:
    """Cityscapes, the 7 categories (module docstring)."""
    return Cityscapes(root, split=split, tasks=tasks, num_classes=7)


@register_dataset("cityscapes8")
def open_cityscapes8(root: str | Path, *, split: str, tasks: Sequence[str]) -> Cityscapes:
    """Cityscapes, the 8 classes shared with Virtual KITTI 2 (module docstring)."""
    return Cityscapes(root, split=split, tasks=tasks, num_classes=8)
