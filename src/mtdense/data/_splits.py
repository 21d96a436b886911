"""Random train/val splits made once, from a seed, and written into the dataset folder.

SYNTHIA-RAND-CITYSCAPES and Virtual KITTI 2 ship without a train/val split. A reader that shuffled
its file list on every call, or shuffled train and val with independent generators, could put one
image in both splits (a known leak in a public implementation). :func:`seeded_split` instead draws
*one* permutation of the sorted split units from ``seed``, cuts it into val (the first
``round(n · val_fraction)``) and train (the rest), and writes both lists to ``ROOT/<SPLIT_FILE>``;
every later call, in any process, reads that file back, so the split never changes and the two
lists are disjoint by construction. The file records the dataset, seed and fraction; a request
with other settings, or a folder whose units no longer match the file, is a :class:`DataError`
(delete the file to split again). The file is written to a temporary name and renamed, so
concurrent first readers never see a partial file (they compute the same lists from the same seed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError

SPLIT_FILE = "mtdense_split.json"
"""Name of the split file in the dataset root."""


def seeded_split(
    root: str | os.PathLike, units: Sequence[str], *, dataset: str, val_fraction: float, seed: int
) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` over ``units``: read from ``ROOT/SPLIT_FILE``, or drawn and written once.

    Args:
        root: the dataset folder (must be writable the first time).
        units: the split units (ids that must stay together, e.g. a frame and all its renderings).
        dataset: the dataset name recorded in the file.
        val_fraction: share of units in val, in (0, 1).
        seed: seed of the one permutation.

    Raises:
        DataError: the file is corrupt, records other settings or other units, or cannot be written.
    """
    path = Path(root) / SPLIT_FILE
    want = {"dataset": dataset, "seed": int(seed), "val_fraction": float(val_fraction)}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            lists = {"train": list(map(str, data["train"])), "val": list(map(str, data["val"]))}
            found = {k: data[k] for k in want}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: corrupt split file ({type(e).__name__}: {e}); delete it to split again") from None
        if found != want:
            raise DataError(
                f"{path}: records split settings {found}, but {want} were asked for; delete it to split again"
            )
        on_disk = set(units)
        listed = set(lists["train"]) | set(lists["val"])
        if listed != on_disk or set(lists["train"]) & set(lists["val"]):
            missing, extra = sorted(listed - on_disk), sorted(on_disk - listed)
            raise DataError(
                f"{path}: the split lists {len(listed)} units but the folder has {len(on_disk)} "
                f"(listed but missing: {missing[:3]}, on disk but unlisted: {extra[:3]}); an incomplete download or "
                "a changed folder: restore it, or delete the split file to split again"
            )
        return lists
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = sorted(set(units))
    if len(order) < 2:
        raise DataError(f"{Path(root)}: {len(order)} sample(s) found; a train/val split needs at least 2")
    n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1)
    perm = np.random.default_rng(seed).permutation(len(order))
    val = sorted(order[i] for i in perm[:n_val])
    train = sorted(order[i] for i in perm[n_val:])
    tmp = path.with_name(f".{SPLIT_FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({**want, "train": train, "val": val}, indent=0), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise DataError(
            f"cannot write the train/val split to {path} ({e}); the split must be stored in the dataset folder "
            "once (make it writable for the first run)"
        ) from None
    return {"train": train, "val": val}
