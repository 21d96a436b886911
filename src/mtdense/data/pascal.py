"""PASCAL-Context multi-task (``pascal_mt``): semseg, human parts, saliency, normals and edges.

The PASCAL_MT release of ASTMT (Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019),
whose setup, splits and loss weights MTI-Net (Vandenhende et al., ECCV 2020, Sec. 4.1 and suppl. A.2)
reuses, as users download it::

    ROOT/JPEGImages/<id>.jpg
    ROOT/ImageSets/Context/{train,val}.txt        4998 / 5105 ids
    ROOT/pascal-context/trainval/<id>.mat         key LabelMap: the 459-class PASCAL-Context map (uint16)
    ROOT/semseg/VOC12/<id>.png                    21 classes (0 = background), 255 = ignore;
    ROOT/semseg/pascal-context/<id>.png           the fallback where VOC12 has no file
    ROOT/human_parts/<id>.mat                     key anno: PASCAL-Part objects and their part masks
    ROOT/normals_distill/<id>.png                 RGB, n = 2·p/255 − 1 (distilled)
    ROOT/sal_distill/<id>.png                     grey, salient where p/255 > 0.5 (distilled)

Targets (the data contract of :func:`mtdense.data.open_dataset`):

* ``semseg``: the 21 VOC classes as stored (0 = background, 255 = ignore); any other value is an error.
* ``parts``: the 6 human-part groups of ASTMT plus background (7 classes, :data:`PART_NAMES`). Each PASCAL-Part
  object of class :data:`PERSON_CLASS` (15) with part masks paints its parts with their group
  (:data:`PART_GROUPS`); the rest of the image is background 0. *Choices*: the pixels of a person annotated
  without parts are 255 (ignore), not background — they are a person, so "background" would be a wrong
  label; an image without any part-annotated person has no parts target: all 255, the data contract's
  missing target, so the parts loss and meter skip it (ASTMT fills it with background instead).
* ``saliency``: ``p / 255 > 0.5`` as {0, 1}.
* ``normals``: ``2·p/255 − 1`` renormalised to unit length, kept only on pixels whose LabelMap class is one
  that also exists in NYU Depth v2 (:data:`NORMALS_VALID_CONTEXT_IDS`, where the distilling network was
  trained), zero elsewhere, and turned into the camera frame by :data:`RELEASE_TO_CAMERA` (z negated). The
  release documents no axis convention; it is established as follows. (1) Channel 0 is the horizontal axis:
  the benchmark's own loader (ASTMT's ``custom_transforms.py``, reused by MTI-Net) negates it, and only it, on a
  horizontal flip. (2) Channels 0 and 1 point right and down (or both the opposite way): its rotation
  augmentation turns ``(n₁, n₀)`` by ``+θ`` when ``cv2.getRotationMatrix2D`` turns the picture by ``θ``
  counter-clockwise on screen, which is the picture's rotation only if ``(n₀, n₁)`` = (right, down) or
  (left, up). (3) We take (right, down) with z towards the viewer, the usual colouring of camera-frame normal
  maps (a surface facing the camera stored light blue, (128, 128, 255)): a *choice*, not documented by the
  release. (4) It is checked on the user's files by ``mtdense data check`` (:mod:`mtdense.data.check`): in the
  camera frame nearly every valid normal faces the camera (``n_z < 0`` here, as PASCAL has no intrinsics) and
  horizontal surfaces mostly face up (``n_y < 0``); a wrong z sign fails the first statistic, the opposite
  choice of (2) the second (tested on fixtures). No PASCAL file was available where this was written, so the
  check has not been run on the real release: run it once before comparing normals numbers.
* ``edge``: ``thin(|Laplacian(LabelMap)| > 0)`` (:func:`~mtdense.data._readers.label_edges`); evaluate with
  ``eval.edge_max_dist: 0.0075`` (the SEISM default the PASCAL benchmark uses).

Images keep their stored size (about 500×375); the 512×512 of the benchmark is the configs' crop and
evaluation size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._io import _open_checked, read_image, read_label_png
from ._readers import IGNORE, FolderDataset, check_hw, label_edges, read_split_list
from .registry import register_dataset

VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""The 21 semseg classes (PASCAL VOC 2012 order); class id = position."""
PERSON_CLASS = 15
"""PASCAL-Part object class of a person (its ``class_ind``)."""
PART_NAMES = ("background", "head", "torso", "upper arms", "lower arms", "upper legs", "lower legs")
"""The 7 parts classes: background + ASTMT's 6 human-part groups."""
PART_GROUPS: dict[str, int] = {
    **dict.fromkeys(("hair", "head", "lear", "rear", "leye", "reye", "lebrow", "rebrow", "nose", "mouth"), 1),
    **dict.fromkeys(("neck", "torso"), 2),
    **dict.fromkeys(("luarm", "ruarm"), 3),
    **dict.fromkeys(("llarm", "rlarm", "lhand", "rhand"), 4),
    **dict.fromkeys(("luleg", "ruleg"), 5),
    **dict.fromkeys(("llleg", "rlleg", "lfoot", "rfoot"), 6),
}
"""PASCAL-Part person part name → parts class (head; torso + neck; upper arms; lower arms + hands; upper legs;
lower legs + feet)."""
NORMALS_VALID_CONTEXT_IDS = frozenset(
    (3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49, 50, 51, 53, 55, 56,
     59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101, 104, 105, 107, 111, 113, 115, 122, 124,
     135, 141, 142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199, 202,
     213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251, 252, 255, 260, 261,
     263, 269, 272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309, 310, 314,
     315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368, 370, 371, 374, 379, 380, 383,
     384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417, 419, 421, 423, 427, 429, 430, 432, 440, 441, 442,
     443, 444, 446, 454, 457)
)  # fmt: skip
"""PASCAL-Context (459-class, 1-based, alphabetical ``labels.txt``) ids whose class name is also one of the 894
NYU Depth v2 class names (``unknown`` excluded), plus ``tvmonitor`` (427, NYU's "television"): the classes on
which ASTMT keeps the distilled normals. Derived from the two official class lists (170 ids)."""
RELEASE_TO_CAMERA = np.array([1.0, 1.0, -1.0], np.float32)
"""Per-axis signs from the distilled normals (x right, y down, z towards the viewer; module docstring) to the camera
frame (x right, y down, z forward)."""
TASKS = ("semseg", "parts", "saliency", "normals", "edge")
SPLITS = ("train", "val")


def _mat(path: Path, key: str) -> Any:
    """``key`` of a MATLAB v5 file, or a :class:`DataError` naming the file (missing, corrupt, key absent)."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise DataError(f"{key} file not found: {path}")
    try:
        data = scipy.io.loadmat(str(path))
    except (OSError, ValueError, TypeError, NotImplementedError, MatReadError) as e:
        raise DataError(f"cannot decode {path} (expected a MATLAB v5 .mat with key {key!r}): {e}") from None
    if key not in data:
        raise DataError(f"{path}: no key {key!r} (keys: {sorted(k for k in data if not k.startswith('__'))})")
    return data[key]


def _field(struct: np.ndarray, name: str, path: Path) -> Any:
    try:
        return struct[name]
    except (ValueError, IndexError, KeyError):
        raise DataError(f"{path}: malformed PASCAL-Part annotation, no field {name!r}") from None


def read_human_parts(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """The parts target (uint8 ``(H, W)``, module docstring) of a PASCAL-Part ``anno`` file."""
    anno = _mat(path, "anno")
    try:
        objects = _field(anno[0, 0], "objects", path).reshape(-1)
        objects = objects[0].reshape(-1) if objects.dtype == object and objects.size == 1 else objects
    except (IndexError, AttributeError):
        raise DataError(f"{path}: malformed PASCAL-Part annotation (expected anno.objects)") from None
    target = np.zeros(hw, np.uint8)
    unlabelled = np.zeros(hw, bool)
    found = False
    for obj in objects.reshape(-1):
        cls = int(np.asarray(_field(obj, "class_ind", path)).reshape(-1)[0])
        if cls != PERSON_CLASS:
            continue
        mask = np.asarray(_field(obj, "mask", path)).astype(bool)
        check_hw(path, mask.shape, hw)
        parts = np.asarray(_field(obj, "parts", path)).reshape(-1)
        if parts.size == 0:
            unlabelled |= mask
            continue
        found = True
        for part in parts:
            name = str(np.asarray(_field(part, "part_name", path)).reshape(-1)[0])
            if name not in PART_GROUPS:
                raise DataError(f"{path}: unknown person part {name!r}; expected one of {sorted(PART_GROUPS)}")
            pmask = np.asarray(_field(part, "mask", path)).astype(bool)
            check_hw(path, pmask.shape, hw)
            target[pmask] = PART_GROUPS[name]
    if not found:
        return np.full(hw, IGNORE, np.uint8)
    target[unlabelled & (target == 0)] = IGNORE
    return target


class PascalContextMT(FolderDataset):
    """A split (``train`` / ``val``) of PASCAL-Context multi-task; layout and targets in the module docstring."""

    name = "pascal_mt"
    supported_tasks = TASKS

    def __init__(self, root: str | os.PathLike, *, split: str, tasks: Sequence[str]) -> None:
        super().__init__(root, split=split, tasks=tasks)
        self.meta = {
            "dataset": self.name,
            "num_classes": len(VOC_CLASS_NAMES),
            "class_names": list(VOC_CLASS_NAMES),
            "palette": _voc_palette(len(VOC_CLASS_NAMES)).tolist(),
            "parts_classes": list(PART_NAMES),
            "edge_max_dist": 0.0075,
        }

    def list_ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise DataError(f"pascal_mt: unknown split {split!r}; expected one of {list(SPLITS)}")
        return read_split_list(self.root / "ImageSets" / "Context" / f"{split}.txt")

    def _label_map(self, sid: str, hw: tuple[int, int]) -> np.ndarray:
        path = self.root / "pascal-context" / "trainval" / f"{sid}.mat"
        lab = np.asarray(_mat(path, "LabelMap"))
        check_hw(path, lab.shape, hw)
        return lab.astype(np.int64)

    def load_sample(self, sid: str) -> dict[str, np.ndarray]:
        image = read_image(self.root / "JPEGImages" / f"{sid}.jpg")
        hw = image.shape[:2]
        raw: dict[str, np.ndarray] = {"image": image}
        context = self._label_map(sid, hw) if {"edge", "normals"} & set(self.tasks) else None
        if "semseg" in self.tasks:
            path = self.root / "semseg" / "VOC12" / f"{sid}.png"
            if not path.is_file():
                path = self.root / "semseg" / "pascal-context" / f"{sid}.png"
                if not path.is_file():
                    raise DataError(f"semseg label not found: {self.root / 'semseg' / 'VOC12' / sid}.png (nor {path})")
            lab = read_label_png(path)
            check_hw(path, lab.shape, hw)
            bad = (lab >= len(VOC_CLASS_NAMES)) & (lab != IGNORE)
            if bad.any():
                raise DataError(f"{path}: label value {int(lab[bad][0])} is neither a class 0..20 nor 255 (ignore)")
            raw["semseg"] = lab.astype(np.uint8)
        if "parts" in self.tasks:
            raw["parts"] = read_human_parts(self.root / "human_parts" / f"{sid}.mat", hw)
        if "saliency" in self.tasks:
            path = self.root / "sal_distill" / f"{sid}.png"
            img = _open_checked(path, "saliency map")
            sal = np.asarray(img if img.mode == "L" else img.convert("L"), dtype=np.float32)
            check_hw(path, sal.shape, hw)
            raw["saliency"] = (sal / 255.0 > 0.5).astype(np.uint8)
        if "normals" in self.tasks:
            path = self.root / "normals_distill" / f"{sid}.png"
            p = read_image(path)
            check_hw(path, p.shape, (*hw, 3))
            n = (2.0 * p.astype(np.float32) / 255.0 - 1.0) * RELEASE_TO_CAMERA
            norm = np.linalg.norm(n, axis=-1, keepdims=True)
            keep = np.isin(context, list(NORMALS_VALID_CONTEXT_IDS))[..., None] & (norm > 0)
            raw["normals"] = np.where(keep, n / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)
        if "edge" in self.tasks:
            raw["edge"] = label_edges(context)
        return raw


def _voc_palette(n: int) -> np.ndarray:
    from ..tasks.semseg import default_palette

    return default_palette(n)


@register_dataset("pascal_mt", detect=lambda root: (root / "ImageSets" / "Context").is_dir())
def open_pascal_mt(root: str | Path, *, split: str, tasks: Sequence[str]) -> PascalContextMT:
    """PASCAL-Context multi-task at ``root`` (module docstring)."""
    return PascalContextMT(root, split=split, tasks=tasks)
