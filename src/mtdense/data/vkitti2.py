"""Virtual KITTI 2 (``vkitti2``, ``vkitti2_8``): colour-coded semseg, depth in centimetres, normals from depth, edges.

The Virtual KITTI 2 download (Cabon, Murray & Humenberger, 2020), DenseMTL's (Lopes et al., WACV 2023,
Sec. 4) second synthetic source, as its ``vkitti_2.0.3_rgb``, ``_depth`` and ``_classSegmentation``
archives unpack::

    ROOT/SceneXX/<variation>/frames/rgb/Camera_k/rgb_%05d.jpg
    ROOT/SceneXX/<variation>/frames/depth/Camera_k/depth_%05d.png                 uint16, 1 unit = 1 cm
    ROOT/SceneXX/<variation>/frames/classSegmentation/Camera_k/classgt_%05d.png    RGB colour-coded classes

A sample id is ``SceneXX/<variation>/Camera_k/%05d``; every rendered frame found is a sample.

* ``semseg``: the 14 classes of :data:`CLASS_COLOURS` (class id = position); ``Undefined`` (0, 0, 0) is 255;
  a colour outside the table is an error naming the file and the colour. ``vkitti2_8`` reads the same files
  under the 8-class protocol on which DenseMTL (Lopes et al., WACV 2023, Table 6) scores VKITTI2 → Cityscapes
  (:data:`CITYSCAPES8_GROUPS`: road, building, pole, traffic light, traffic sign, vegetation = tree and
  vegetation, sky, vehicle = truck, car and van; terrain, guardrail and misc are 255): the classes, names and
  colours of ``cityscapes8`` (:func:`mtdense.data.cityscapes.protocol` ``(8)``), so the two datasets share
  class ids. The paper does not list the classes; the grouping follows the authors' released protocol (their
  DenseMTL code's 8-class VKITTI2/Cityscapes mapping).
* ``depth``: value / 100 metres; 65535 marks "far" (the sky, beyond the renderer's range) and, having no
  depth, is 0 = invalid here.
* ``normals``: derived from that depth by :func:`~mtdense.data._geometry.normals_from_depth` (x right, y down,
  z forward, facing the camera) with the frame's intrinsics. They come from the release's own camera file,
  ``ROOT/SceneXX/<variation>/intrinsic.txt`` of the ``vkitti_2.0.3_textgt`` archive (a header line, then one row
  ``frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]`` per frame and camera), when it is unpacked beside the images;
  otherwise from :data:`INTRINSICS` (fx = fy = 725.0087, cx = 620.5, cy = 187.0), the values that file holds
  for every frame of the 1242×375 renders and that DenseMTL's loader uses, citing that archive.
* ``edge``: ``thin(|Laplacian(L)| > 0)`` of the protocol's semseg map (:func:`~mtdense.data._readers.label_edges`).
* Split: VKITTI2 has none. :func:`mtdense.data._splits.seeded_split` draws it once from :data:`SPLIT_SEED`
  and stores it in the dataset folder. Its units are ``SceneXX/%05d`` frames, not images: the variations
  (weather, time of day, camera shifts) and both cameras of one frame show the same scene, so they are kept
  in the same split (otherwise val would hold near copies of training images). Both protocols read the one
  split file: ``vkitti2_8`` trains and evaluates on the frames ``vkitti2`` does.
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
"""The intrinsics of ``intrinsic.txt`` (the same for every frame), used when that file is not unpacked."""
INTRINSIC_FILE = "intrinsic.txt"
CITYSCAPES8_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("road", ("road",)), ("building", ("building",)), ("pole", ("pole",)), ("traffic light", ("trafficlight",)),
    ("traffic sign", ("trafficsign",)), ("vegetation", ("tree", "vegetation")), ("sky", ("sky",)),
    ("vehicle", ("truck", "car", "van")),
)  # fmt: skip
"""The 8-class protocol (module docstring): (``cityscapes8`` class name, the VKITTI2 classes it groups), class id =
position, in the order of :data:`mtdense.data.cityscapes.VKITTI2_SHARED` (the tests check both agree)."""
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


def protocol8() -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(lut, class_names, palette)`` of the 8-class protocol: ``lut[vkitti2_class]`` = class or 255 (255 → 255)."""
    from .cityscapes import protocol

    _, names, palette = protocol(8)
    ids = {name: k for k, (name, _) in enumerate(CLASS_COLOURS)}
    lut = np.full(256, IGNORE, np.uint8)
    for k, (_, members) in enumerate(CITYSCAPES8_GROUPS):
        for member in members:
            lut[ids[member]] = k
    return lut, names, palette


def read_intrinsic_file(path: Path) -> dict[tuple[int, int], dict[str, float]]:
    """``{(frame, camera): {fx, fy, cx, cy}}`` of a VKITTI2 ``intrinsic.txt`` (module docstring); ``{}`` when the
    file does not exist; a :class:`DataError` naming the file and line when it is malformed."""
    if not path.is_file():
        return {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read camera file {path}: {e}") from None
    out: dict[tuple[int, int], dict[str, float]] = {}
    for number, line in enumerate(lines[1:], start=2):  # line 1 is the header
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 6:
                raise ValueError(f"{len(fields)} fields")
            frame, camera = int(fields[0]), int(fields[1])
            fx, fy, cx, cy = (float(v) for v in fields[2:])
        except ValueError as e:
            raise DataError(
                f"{path}, line {number}: expected 'frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]', got {line!r} ({e})"
            ) from None
        if fx <= 0 or fy <= 0:
            raise DataError(f"{path}, line {number}: expected focal lengths > 0, got fx={fx}, fy={fy}")
        out[(frame, camera)] = {"fx": fx, "fy": fy, "cx": cx, "cy": cy}
    if not out:
        raise DataError(f"{path}: no intrinsics rows after the header")
    return out


class VKITTI2(FolderDataset):
    """A split (``train`` / ``val``) of Virtual KITTI 2 (module docstring)."""

    name = "vkitti2"
    supported_tasks = TASKS

    def __init__(
        self, root: str | os.PathLike, *, split: str, tasks: Sequence[str], num_classes: int = len(CLASS_COLOURS)
    ) -> None:
        if num_classes == len(CLASS_COLOURS):
            self.lut = None
            names, palette = [n for n, _ in CLASS_COLOURS], [list(c) for _, c in CLASS_COLOURS]
        elif num_classes == 8:
            self.name = "vkitti2_8"
            self.lut, names, colours = protocol8()
            palette = colours.tolist()
        else:
            raise ValueError(f"VKITTI2 protocol: expected {len(CLASS_COLOURS)} or 8 classes, got {num_classes}")
        super().__init__(root, split=split, tasks=tasks)
        self.meta: dict[str, Any] = {
            "dataset": self.name,
            "num_classes": num_classes,
            "class_names": names,
            "palette": palette,
            "intrinsics": dict(INTRINSICS),
        }
        self._camera_files: dict[tuple[str, str], dict[tuple[int, int], dict[str, float]]] = {}

    def list_ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise DataError(f"{self.name}: unknown split {split!r}; expected one of {list(SPLITS)}")
        ids = sorted(
            f"{p.parts[-6]}/{p.parts[-5]}/{p.parts[-2]}/{p.stem[len('rgb_') :]}"
            for p in self.root.glob("Scene*/*/frames/rgb/Camera_*/rgb_*.jpg")
        )
        if not ids:
            raise DataError(f"{self.name}: no frames found under {self.root}/Scene*/<variation>/frames/rgb/Camera_*/")
        units = sorted({self._unit(sid) for sid in ids})
        # one split file for every protocol: "vkitti2_8" trains and evaluates on the frames "vkitti2" does
        chosen = set(
            seeded_split(self.root, units, dataset="vkitti2", val_fraction=VAL_FRACTION, seed=SPLIT_SEED)[split]
        )
        return [sid for sid in ids if self._unit(sid) in chosen]

    def intrinsics(self, sid: str) -> dict[str, float]:
        """``fx, fy, cx, cy`` of sample ``sid``: its ``intrinsic.txt`` row, or :data:`INTRINSICS` without the file."""
        scene, variation, camera, frame = sid.split("/")
        table = self._camera_files.get((scene, variation))
        if table is None:
            table = read_intrinsic_file(self.root / scene / variation / INTRINSIC_FILE)
            self._camera_files[(scene, variation)] = table
        if not table:
            return dict(INTRINSICS)
        key = (int(frame), int(camera[len("Camera_") :]))
        if key not in table:
            raise DataError(
                f"{self.root / scene / variation / INTRINSIC_FILE}: no row for frame {key[0]} camera {key[1]}"
            )
        return dict(table[key])

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
            if self.lut is not None:
                labels = self.lut[labels]
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
                raw["normals"] = normals_from_depth(depth, **self.intrinsics(sid))
        return raw


@register_dataset("vkitti2", detect=lambda root: any(root.glob("Scene*/*/frames/rgb")))
def open_vkitti2(root: str | Path, *, split: str, tasks: Sequence[str]) -> VKITTI2:
    """Virtual KITTI 2 at ``root`` (module docstring)."""
    return VKITTI2(root, split=split, tasks=tasks)


@register_dataset("vkitti2_8")
def open_vkitti2_8(root: str | Path, *, split: str, tasks: Sequence[str]) -> VKITTI2:
    """Virtual KITTI 2 at ``root``, the 8 classes shared with Cityscapes (module docstring)."""
    return VKITTI2(root, split=split, tasks=tasks, num_classes=8)
