"""Write a synthetic dataset to disk in the NYUD-MT layout (see :mod:`mtdense.data.nyud`).

::

    OUT/images/<id>.png          RGB uint8
    OUT/segmentation/<id>.png    uint8; 0 = void, class k stored as k + 1
    OUT/depth/<id>.npy           float32 (H, W) metres; 0 = invalid (sky)
    OUT/normals/<id>.npy         float32 (H, W, 3) camera frame (x right, y down, z forward), facing the
                                 camera; zero vector = invalid
    OUT/edge/<id>.npy            float32 (H, W) in {0, 1}
    OUT/gt_sets/train.txt, val.txt
    OUT/meta.json                family, style, classes, palette, intrinsics, size, seed, generator version

Ids are ``train_<i>`` (scene index ``i``) and ``val_<j>`` (scene index ``VAL_INDEX_OFFSET + j``), so
the splits are disjoint, fixed by the seed, and growing one split never changes the other.
Completion marker: ``meta.json`` is deleted when a write starts and written last, atomically (a
temporary file renamed over it), with the image count of each split (``splits``) and the
``generator_version``. A folder without it is an interrupted write; the reader
(:class:`mtdense.data.nyud.NYUDMT`) checks the counts against ``gt_sets/`` and the files on disk, and
the engine re-renders a synthetic ``data.root`` whose ``meta.json`` is missing.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..._allocator import reuse_freed_memory
from ...errors import ConfigError, DataError
from .._io import write_png
from .families import GENERATOR_VERSION, _check_size, get_family, render_sample
from .styles import get_style

VAL_INDEX_OFFSET = 1_000_000_000
"""Scene index of the first validation image (train uses 0, 1, ...)."""
SUBDIRS = ("images", "segmentation", "depth", "normals", "edge", "gt_sets")
IMAGE_PNG_LEVEL = 0
"""zlib level of images/*.png: 0 (stored) costs 0.2 ms against 2 ms for level 1 at 192×256, and the
noisy images shrink only by a third, while the .npy targets already hold ~85% of the bytes."""
LABEL_PNG_LEVEL = 1  # label maps compress ~100× even at level 1, for almost no time


def _write_sample(job: tuple) -> str:
    """Render one sample and write its five files (runs in a worker process)."""
    out, family, seed, index, sid, size, style = job
    s = render_sample(family, seed, index, size, style=style)
    root = Path(out)
    write_png(root / "images" / f"{sid}.png", s["image"], level=IMAGE_PNG_LEVEL)
    label = s["semseg"]
    seg = np.where(label == 255, 0, label.astype(np.int32) + 1).astype(np.uint8)
    write_png(root / "segmentation" / f"{sid}.png", seg, level=LABEL_PNG_LEVEL)
    np.save(root / "depth" / f"{sid}.npy", s["depth"].astype(np.float32))
    np.save(root / "normals" / f"{sid}.npy", s["normals"].astype(np.float32))
    np.save(root / "edge" / f"{sid}.npy", s["edge"].astype(np.float32))
    return sid


def _pool_context() -> mp.context.BaseContext:
    # fork starts workers in milliseconds and the workers only use NumPy and Pillow
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def write_synthetic_dataset(
    out: str | os.PathLike,
    *,
    train: int,
    val: int,
    size: tuple[int, int] = (192, 256),
    seed: int = 0,
    family: str = "indoor",
    style: str = "a",
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Render ``train + val`` images of ``family`` in ``style`` (:mod:`.styles`) at ``size = (H, W)`` into ``out``
    (module docstring).

    ``workers`` processes render and write in parallel (default: ``min(2, cpu_count)``; ``0`` or ``1``
    renders in this process). Returns the dataset folder. Raises :class:`ConfigError` for a bad
    family, style, size or count, :class:`DataError` if ``out`` exists and is not a folder.
    """
    fam, sty = get_family(family), get_style(style)
    size = _check_size(size)
    for name, n in (("train", train), ("val", val), ("seed", seed)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError(f"{name}: expected an integer >= 0, got {n!r}")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DataError(f"synthetic dataset output {root} exists and is not a folder")
    for sub in SUBDIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    meta_path = root / "meta.json"
    if meta_path.exists():
        meta_path.unlink()  # the folder is incomplete until the new meta.json is written

    ids = {"train": [f"train_{i:06d}" for i in range(train)], "val": [f"val_{j:06d}" for j in range(val)]}
    base = (str(root), fam.name, int(seed))
    jobs = [(*base, i, sid, size, sty.name) for i, sid in enumerate(ids["train"])]
    jobs += [(*base, VAL_INDEX_OFFSET + j, sid, size, sty.name) for j, sid in enumerate(ids["val"])]
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    if workers > 1 and len(jobs) > 1:
        with _pool_context().Pool(workers, initializer=reuse_freed_memory) as pool:
            done = pool.imap_unordered(_write_sample, jobs, chunksize=4)
            for _ in tqdm(done, total=len(jobs), disable=not progress, desc=f"synth {fam.name}", unit="img"):
                pass
    else:
        reuse_freed_memory()  # ~10% less CPU per image (mtdense._allocator)
        for job in tqdm(jobs, disable=not progress, desc=f"synth {fam.name}", unit="img"):
            _write_sample(job)

    for split, names in ids.items():
        (root / "gt_sets" / f"{split}.txt").write_text("".join(f"{sid}\n" for sid in names))
    fx, fy, cx, cy = fam.intrinsics(size, sty.name)
    meta = {
        "dataset": "mtdense-synthetic",
        "family": fam.name,
        "style": sty.name,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "size": list(size),
        "num_classes": fam.num_classes,
        "class_names": list(fam.class_names),
        "palette": [list(c) for c in fam.palette],
        "intrinsics": {"fx": fx, "fy": fy, "cx": cx, "cy": cy},
        "hfov_deg": fam.hfov_deg(sty.name),
        "camera_height_range_m": list(sty.camera_height[fam.name]),
        "splits": {k: len(v) for k, v in ids.items()},
        "val_index_offset": VAL_INDEX_OFFSET,
        "encoding": {
            "segmentation": "png uint8, class k stored as k + 1, 0 = void",
            "depth": "npy float32 (H, W), z-depth in metres, 0 = invalid",
            "normals": "npy float32 (H, W, 3), camera frame x right, y down, z forward, facing the camera; "
            "zero = invalid",
            "edge": "npy float32 (H, W) in {0, 1}",
            "intrinsics": "pixel centres at integer coordinates",
        },
    }
    tmp = meta_path.with_name(f".meta.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, meta_path)  # atomic: the folder is complete exactly when meta.json exists
    return root
