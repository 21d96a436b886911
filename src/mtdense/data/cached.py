"""In-memory cache of a dataset's decoded samples, so that training never waits on decoding.

:class:`CachedDataset` decodes every raw sample of a base dataset once (``base.load_raw(i)``) and
keeps it in compact arrays: image uint8, labels uint8, edges uint8, depth float32 and, with
``compact=True``, normals float16 (relative error ≤ 2⁻¹¹ per component, i.e. below 0.1°; depth stays
float32 because float16 would lose up to 5 cm at 100 m). Each access converts the cached arrays to
tensors with the base dataset's ``finish``, so a cached dataset yields exactly the samples of the
uncached one (up to the float16 normals); augmentation is applied on top, by the engine's
:class:`~mtdense.engine.data.Augmented`.

With ``cache_file``, the decoded arrays are also stored in an uncompressed ``.npz`` file; another
process (or the next run) loads it instead of decoding again. The file records the dataset folder,
split, tasks, sample ids and format; if any differs, the cache is rebuilt and rewritten (written to
a temporary name and renamed, so concurrent readers never see a partial file).

The base dataset must provide ``load_raw(i)``, ``finish(raw, i)``, ``ids``, ``tasks``, ``split`` and
``root`` (as :class:`~mtdense.data.nyud.NYUDMT` does).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from ..errors import DataError

CACHE_FORMAT = 1
"""Bumped when the layout of cache files changes (older files are then rebuilt)."""


class CachedDataset(Dataset):
    """Wrap ``base`` (module docstring); ``len`` and indexing behave like the base's.

    Args:
        base: the dataset whose raw samples are cached.
        cache_file: optional ``.npz`` path shared between processes and runs.
        compact: store normals as float16 (see the module docstring).
        progress: show a progress bar while decoding.
    """

    def __init__(
        self,
        base: Any,
        *,
        cache_file: str | os.PathLike | None = None,
        compact: bool = True,
        progress: bool = False,
    ) -> None:
        self.base = base
        self.compact = bool(compact)
        self.cache_file = None if cache_file is None else Path(cache_file)
        self.loaded_from_file = False
        fingerprint = self._fingerprint()
        raws = self._load_file(fingerprint) if self.cache_file is not None else None
        if raws is None:
            raws = [self._compact(base.load_raw(i)) for i in tqdm(range(len(base)), disable=not progress, desc="cache")]
            if self.cache_file is not None:
                self._save_file(raws, fingerprint)
        else:
            self.loaded_from_file = True
        self._raws = raws

    # -------------------------------------------------------------------------------- dataset API
    def __len__(self) -> int:
        return len(self._raws)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self._raws):
            raise IndexError(f"index {index} out of range for {len(self._raws)} cached samples")
        return self.base.finish(self._raws[index], int(index))

    def raw(self, index: int) -> dict[str, np.ndarray]:
        """The cached compact arrays of sample ``index`` (read-only views; do not modify)."""
        return self._raws[index]

    def __getattr__(self, name: str) -> Any:
        # num_classes, class_names, palette, ids, tasks, ... come from the base dataset
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached arrays."""
        return sum(a.nbytes for r in self._raws for a in r.values())

    # ---------------------------------------------------------------------------------- internals
    def _compact(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(raw)
        if self.compact and "normals" in out:
            out["normals"] = out["normals"].astype(np.float16)
        for a in out.values():
            a.setflags(write=False)  # a transform cannot corrupt the cache through a shared array
        return out

    def _fingerprint(self) -> dict[str, Any]:
        b = self.base
        return {
            "format": CACHE_FORMAT,
            "root": str(Path(b.root).resolve()),
            "split": b.split,
            "tasks": list(b.tasks),
            "ids": list(b.ids),
            "compact": self.compact,
        }

    def _load_file(self, fingerprint: dict[str, Any]) -> list[dict[str, np.ndarray]] | None:
        path = self.cache_file
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if json.loads(str(z["__fingerprint__"])) != fingerprint:
                    return None
                raws: list[dict[str, np.ndarray]] = [{} for _ in fingerprint["ids"]]
                for name in z.files:
                    if name == "__fingerprint__":
                        continue
                    i, key = name.split("/", 1)
                    raws[int(i)][key] = z[name]
        except (OSError, ValueError, KeyError, EOFError):
            return None  # unreadable or foreign file: rebuild it
        for r in raws:
            for a in r.values():
                a.setflags(write=False)
        return raws

    def _save_file(self, raws: list[dict[str, np.ndarray]], fingerprint: dict[str, Any]) -> None:
        path = self.cache_file
        arrays = {f"{i}/{k}": a for i, r in enumerate(raws) for k, a in r.items()}
        arrays["__fingerprint__"] = np.array(json.dumps(fingerprint))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot write dataset cache {path}: {e}") from None
