"""NYU Depth V2 raw frames in the BTS "sync" layout (``nyud_raw``): depth only, for mixing with NYUD-MT.

The layout (the ~24k-frame subset of the official training scenes distributed with BTS, Lee et al.
2019, and used by the depth-estimation line)::

    ROOT/sync/<scene>/rgb_%05d.jpg                 RGB 480×640
    ROOT/sync/<scene>/sync_depth_%05d.png          uint16 millimetres (metres = value / 1000), 0 = invalid
    ROOT/nyudepthv2_train_files_with_gt.txt        lines "<rgb path> <depth path> <focal>"

List paths are relative (BTS writes them with a leading ``/``, relative to ``sync/``); each is looked up
under ``ROOT/sync`` first, then under ``ROOT``. Split ``s`` reads ``ROOT/nyudepthv2_<s>_files_with_gt.txt``
(``train``; ``test`` where the user has BTS's test list next to it).

Targets: ``depth`` from the PNG; ``normals`` derived from that depth with
:func:`mtdense.data._geometry.normals_from_depth` (``fx = fy =`` the list's focal, principal point of
the NYU RGB camera), in the project's camera frame (x right, y down, z forward, facing the camera); raw
Kinect depth has holes and millimetre steps, so derived normals are zero next to holes and noisier
than the labelled set's. ``semseg`` and ``edge`` do not exist for these frames: asked for, they come
filled with the tasks' ignore value (:func:`mtdense.data.registry.missing_target`), so a training set
mixing these frames with the 795 labelled images (TRL Sec. 4.1, PSD Sec. 4.1) trains segmentation on
the labelled images only. ``meta`` carries the NYU 40 classes so the mixture keeps one class table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ._geometry import normals_from_depth
from ._io import _open_checked, read_image
from ._readers import IndexedDataset
from .nyud import raw_to_sample
from .nyud_convert import NYU_INTRINSICS, class_names, label_palette
from .registry import missing_target, register_dataset

TASKS = ("semseg", "depth", "normals", "edge")
PROVIDED = ("depth", "normals")
"""Targets these frames carry; the others are filled with the task's ignore value."""
DEPTH_SCALE = 1000.0
"""Stored depth units per metre (millimetres)."""


def split_list(root: Path, split: str) -> Path:
    return root / f"nyudepthv2_{split}_files_with_gt.txt"


def read_depth_png(path: Path, *, scale: float) -> np.ndarray:
    """A 16-bit depth PNG → float32 metres (``value / scale``), 0 stays 0 = invalid; an 8-bit file is an error."""
    img = _open_checked(path, "depth map")
    if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise DataError(f"depth map {path}: expected a 16-bit single-channel PNG, got mode {img.mode}")
    return (np.asarray(img).astype(np.float32) / np.float32(scale)).astype(np.float32)


class NYUDRaw(IndexedDataset):
    """A split of the BTS "sync" raw frames (module docstring) as a torch Dataset.

    Attributes: ``ids`` (the rgb paths of the list), ``meta`` (40 NYU classes, palette, intrinsics,
    ``provides``). Raises :class:`DataError` naming the list file and line for a malformed line, and
    the path of a missing or undecodable frame.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", tasks: Sequence[str] = PROVIDED) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root}")
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ConfigError(f"unknown nyud_raw task(s) {unknown}; expected a subset of {list(TASKS)}")
        self.split, self.tasks = split, tuple(tasks)
        path = split_list(self.root, split)
        if not path.is_file():
            raise DataError(f"split list not found: {path} (the BTS list nyudepthv2_{split}_files_with_gt.txt)")
        self.items: list[tuple[str, str, float]] = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 3:
                    raise ValueError(f"expected 3 fields, got {len(fields)}")
                focal = float(fields[2])
                if not focal > 0:
                    raise ValueError(f"focal must be > 0, got {focal}")
            except ValueError as e:
                raise DataError(f"{path}:{n}: expected '<rgb path> <depth path> <focal>', got {line!r} ({e})") from None
            self.items.append((fields[0], fields[1], focal))
        if not self.items:
            raise DataError(f"split list {path} is empty")
        self.ids = [rgb for rgb, _, _ in self.items]
        self.list_file = path
        self.meta: dict[str, Any] = {
            "dataset": "nyud-raw",
            "num_classes": 40,
            "class_names": class_names(40),
            "palette": label_palette(40),
            "intrinsics": dict(NYU_INTRINSICS),
            "provides": list(PROVIDED),
        }

    def resolve(self, rel: str) -> Path:
        rel = rel.lstrip("/")
        for base in (self.root / "sync", self.root):
            if (base / rel).is_file():
                return base / rel
        raise DataError(f"{self.list_file}: file not found: {rel} (looked under {self.root / 'sync'} and {self.root})")

    def load_raw(self, index: int) -> dict[str, np.ndarray]:
        """``image`` uint8 (H, W, 3); ``depth`` float32 metres; ``normals`` derived from it (if asked)."""
        rgb, dep, focal = self.items[self._check(index)]
        image = read_image(self.resolve(rgb))
        raw: dict[str, np.ndarray] = {"image": image}
        if "depth" in self.tasks or "normals" in self.tasks:
            path = self.resolve(dep)
            depth = read_depth_png(path, scale=DEPTH_SCALE)
            if depth.shape != image.shape[:2]:
                raise DataError(f"{path}: expected shape {image.shape[:2]} to match the image, got {depth.shape}")
            if "depth" in self.tasks:
                raw["depth"] = depth
            if "normals" in self.tasks:
                k = {**NYU_INTRINSICS, "fx": focal, "fy": focal}
                raw["normals"] = normals_from_depth(depth, **k)
        return raw

    def finish(self, raw: dict[str, np.ndarray], index: int) -> dict[str, Any]:
        sample = raw_to_sample(raw, {"id": self.ids[index], "index": int(index)})
        h, w = raw["image"].shape[:2]
        for task in self.tasks:
            if task not in sample:
                sample[task] = missing_target(task, h, w)
        return sample


def _detect(root: Path) -> bool:
    return split_list(root, "train").is_file()


@register_dataset("nyud_raw", detect=_detect)
def open_nyud_raw(root: str | Path, *, split: str, tasks: Sequence[str]) -> NYUDRaw:
    return NYUDRaw(root, split=split, tasks=tasks)


__all__ = ["NYUDRaw", "open_nyud_raw", "read_depth_png"]
