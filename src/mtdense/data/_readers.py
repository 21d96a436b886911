"""Plumbing shared by the readers of downloaded datasets (PASCAL-Context, Cityscapes, SUN RGB-D, SYNTHIA, VKITTI2).

* :class:`IndexedDataset`: the indexing every reader shares (NYUD ones included): ``len``, the range
  check, ``ds[i] = finish(load_raw(i), i)`` (so :class:`~mtdense.data.cached.CachedDataset` can cache
  the raw arrays), ``repr``.
* :class:`FolderDataset`: the base of a downloaded-dataset reader: task validation, split ids and the
  data contract's tensors (:func:`to_sample`).
* :func:`label_edges`: semantic edges derived from a label map, ``thin(|Laplacian(L)| > 0)``.

Depth-derived surface normals: :func:`mtdense.data._geometry.normals_from_depth`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from ..metrics._thinning import thin

IGNORE = 255


def label_edges(labels: np.ndarray) -> np.ndarray:
    """Semantic edges of a label map: ``thin(|Laplacian(labels)| > 0)`` as uint8 ``(H, W)`` in {0, 1}.

    The rule of the PASCAL-Context multi-task benchmark (ASTMT, Maninis et al. CVPR 2019, whose setup
    MTI-Net Sec. 4.1 reuses): the 4-neighbour Laplacian ``L[y-1,x] + L[y+1,x] + L[y,x-1] + L[y,x+1] −
    4·L[y,x]`` of the integer label map (borders mirrored without repeating the edge pixel, OpenCV's
    default), non-zero pixels thinned to one-pixel-wide curves (MATLAB ``bwmorph(·, 'thin', Inf)``).
    """
    lab = np.asarray(labels, dtype=np.int64)
    if lab.ndim != 2:
        raise ValueError(f"label_edges: expected a (H, W) label map, got shape {lab.shape}")
    p = np.pad(lab, 1, mode="reflect") if min(lab.shape) > 1 else np.pad(lab, 1, mode="edge")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * lab
    return thin(lap != 0).astype(np.uint8)


def to_sample(raw: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, Any]:
    """Raw arrays → the data contract's tensors (:func:`mtdense.data.nyud.raw_to_sample` plus parts and saliency).

    ``image`` uint8 ``(H, W, 3)`` → float32 ``(3, H, W)`` in [0, 1]; ``semseg`` / ``parts`` uint8 ``(H, W)``
    → int64 (255 = ignore); ``depth`` float32 ``(H, W)`` → ``(1, H, W)`` metres; ``normals`` ``(H, W, 3)`` →
    ``(3, H, W)``; ``edge`` / ``saliency`` uint8 ``(H, W)`` in {0, 1} (255 = ignore) → float32 ``(1, H, W)``.
    Every tensor owns its memory (raw arrays may be shared by a cache).
    """
    sample: dict[str, Any] = {
        "image": torch.from_numpy(np.ascontiguousarray(raw["image"].transpose(2, 0, 1))).float().div_(255.0)
    }
    for key in ("semseg", "parts"):
        if key in raw:
            sample[key] = torch.from_numpy(raw[key].astype(np.int64))
    if "depth" in raw:
        sample["depth"] = torch.from_numpy(np.array(raw["depth"], dtype=np.float32, copy=True)[None])
    if "normals" in raw:
        sample["normals"] = torch.from_numpy(np.array(raw["normals"].transpose(2, 0, 1), dtype=np.float32, copy=True))
    for key in ("edge", "saliency"):
        if key in raw:
            sample[key] = torch.from_numpy(raw[key].astype(np.float32)[None])
    sample["meta"] = dict(meta)
    return sample


def read_split_list(path: Path) -> list[str]:
    """Non-empty, stripped lines of a split list; a missing or empty list is a :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"split list not found: {path}")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split list {path} is empty")
    return ids


def check_hw(path: Path, shape: Sequence[int], hw: Sequence[int], channels: int | None = None) -> None:
    """A :class:`DataError` unless ``shape`` is ``hw`` (plus ``channels``): every map must match its image."""
    want = (*hw, channels) if channels is not None else tuple(hw)
    if tuple(shape) != tuple(want):
        raise DataError(f"{path}: expected shape {tuple(want)} to match the image, got {tuple(shape)}")


class IndexedDataset(Dataset):
    """A split of samples named by :attr:`ids`: ``ds[i]`` is ``finish(load_raw(i), i)`` after a range check.

    ``load_raw`` decodes compact numpy arrays and ``finish`` turns them into the data contract's tensors;
    the split lets :class:`~mtdense.data.cached.CachedDataset` keep the raw arrays. Subclasses set
    :attr:`root`, :attr:`split`, :attr:`tasks` and :attr:`ids`, and implement both methods.
    """

    root: Path
    split: str
    tasks: tuple[str, ...]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def _check(self, index: int) -> int:
        """``index`` as an int, or an IndexError naming the range and the split (negative indices too)."""
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} samples of {self.root} [{self.split}]")
        return int(index)

    def load_raw(self, index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def finish(self, raw: dict[str, np.ndarray], index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check(index)
        return self.finish(self.load_raw(index), index)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, tasks={list(self.tasks)})"


class FolderDataset(IndexedDataset):
    """Base of a downloaded-dataset reader: a split of samples, each decoded by :meth:`load_sample`.

    Subclasses set :attr:`name` and :attr:`supported_tasks` and implement :meth:`list_ids` and
    :meth:`load_sample`; they build :attr:`meta` (``num_classes``, ``class_names``, ``palette`` and, where
    known, ``intrinsics``). Asking for a task the dataset has no target for is a :class:`ConfigError`
    listing the ones it has.
    """

    name: ClassVar[str]
    supported_tasks: ClassVar[tuple[str, ...]]

    def __init__(self, root: str | os.PathLike, *, split: str, tasks: Sequence[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.name}: dataset folder not found: {self.root}")
        unknown = [t for t in tasks if t not in self.supported_tasks]
        if unknown:
            raise ConfigError(
                f"dataset {self.name!r} has no target for task(s) {unknown}; its tasks: {list(self.supported_tasks)}"
            )
        self.split, self.tasks = split, tuple(tasks)
        self.ids = self.list_ids(split)
        if not self.ids:
            raise DataError(f"{self.name}: split {split!r} of {self.root} has no samples")
        self.meta: dict[str, Any] = {}

    def list_ids(self, split: str) -> list[str]:
        raise NotImplementedError

    def load_sample(self, sid: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_raw(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` as compact numpy arrays (see :func:`to_sample` for dtypes); only requested tasks."""
        return self.load_sample(self.ids[self._check(index)])

    def finish(self, raw: dict[str, np.ndarray], index: int) -> dict[str, Any]:
        return to_sample(raw, {"id": self.ids[index], "index": int(index)})
