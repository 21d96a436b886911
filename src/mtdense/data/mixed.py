"""Training on the union of datasets, with a fixed share of each in every batch.

TRL (Sec. 4.1) and PSD (Sec. 4.1) train depth on raw NYUD frames and segmentation on the 795 labelled
images: one training set mixing samples that lack some targets. :class:`MixedDataset` concatenates the
datasets (the first is the primary one: its ``meta`` — classes, palette — is the mixture's); a sample
lacking a task's target gets it filled with the task's ignore value
(:func:`mtdense.data.registry.missing_target`), so the task's loss and meter skip it
(:class:`mtdense.tasks.base.Task`) and batches from different datasets collate.

:class:`MixedBatchSampler` builds every global batch from ``counts[k]`` samples of dataset ``k``
(:func:`batch_counts`: the configured ratios times the global batch size, rounded by largest
remainder). Dataset ``k`` is read as an endless stream of epochs, epoch ``e`` being a permutation
drawn from ``(seed, k, e)``; step ``s`` takes positions ``[s·counts[k], (s+1)·counts[k])`` of that
stream, and the global batch is put in an order drawn from ``(seed, s)`` before each rank takes its
slice. So batch ``s`` depends on ``(seed, step)`` only and a resumed run sees exactly the batches of
an uninterrupted one, as with :class:`mtdense.engine.data.ResumableBatchSampler`. Each index is paired
with the epoch of its own dataset, the key :class:`mtdense.engine.data.Augmented` draws augmentation from.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import ConfigError, DataError
from .registry import missing_target


def batch_counts(batch: int, ratios: Sequence[float]) -> list[int]:
    """Samples of each dataset in a batch of ``batch``: ``batch · ratio`` rounded by largest remainder (ties
    to the earlier dataset). Every dataset must get at least one sample (else :class:`ConfigError`)."""
    total = float(sum(ratios))
    exact = [batch * r / total for r in ratios]
    counts = [int(np.floor(x)) for x in exact]
    order = sorted(range(len(ratios)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in order[: batch - sum(counts)]:
        counts[k] += 1
    if min(counts) < 1:
        raise ConfigError(
            f"data.extra: a global batch of {batch} cannot hold every dataset at ratios {list(ratios)} "
            f"(samples per dataset {counts}); raise train.batch_size or the small ratios"
        )
    return counts


class MixedDataset(Dataset):
    """The concatenation of ``parts`` (each a dataset of the data contract) for ``tasks``.

    Args:
        parts: the datasets; ``parts[0]`` is the primary one (its ``meta`` is the mixture's).
        names: a name per part, recorded in each sample's ``meta["dataset"]``.
        ratios: the share of each part in every batch (any positive numbers; normalised).
        tasks: the targets every sample carries (missing ones are filled with the ignore value).
    """

    def __init__(
        self, parts: Sequence[Dataset], *, names: Sequence[str], ratios: Sequence[float], tasks: Sequence[str]
    ) -> None:
        if not parts or not len(parts) == len(names) == len(ratios):
            raise ConfigError(
                f"MixedDataset: need as many names and ratios as parts, got {len(parts)} parts, "
                f"{len(names)} names, {len(ratios)} ratios"
            )
        if any(not r > 0 for r in ratios):
            raise ConfigError(f"MixedDataset: ratios must be > 0, got {list(ratios)}")
        self.parts, self.names, self.tasks = list(parts), list(names), tuple(tasks)
        self.ratios = [float(r) for r in ratios]
        self.sizes = [len(p) for p in self.parts]  # type: ignore[arg-type]
        empty = [n for n, s in zip(self.names, self.sizes, strict=True) if s == 0]
        if empty:
            raise DataError(f"data.extra: dataset {empty[0]} has no samples")
        self.offsets = [0, *np.cumsum(self.sizes).tolist()]
        self.meta: dict[str, Any] = dict(getattr(self.parts[0], "meta", {}))
        self._check_classes()

    def _check_classes(self) -> None:
        """A part that carries semseg labels must share the primary's class table."""
        if "semseg" not in self.tasks:
            return
        want = self.meta.get("num_classes")
        for name, part in zip(self.names[1:], self.parts[1:], strict=True):
            meta = getattr(part, "meta", {})
            if "semseg" in meta.get("provides", ["semseg"]) and meta.get("num_classes") != want:
                raise ConfigError(
                    f"data.extra: dataset {name} labels {meta.get('num_classes')} classes, the primary dataset "
                    f"{self.names[0]} {want}: their semseg labels cannot be mixed"
                )

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(part, index within the part)`` of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} mixed samples")
        k = bisect.bisect_right(self.offsets, index) - 1
        return k, index - self.offsets[k]

    def __getitem__(self, index: int) -> dict[str, Any]:
        k, local = self.locate(int(index))
        sample = dict(self.parts[k][local])
        h, w = sample["image"].shape[-2:]
        for task in self.tasks:
            if task not in sample:
                sample[task] = missing_target(task, h, w)
        meta = sample.get("meta", {})
        sample["meta"] = {"id": str(meta.get("id", local)), "index": int(index), "dataset": self.names[k]}
        return sample

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {s}" for n, s in zip(self.names, self.sizes, strict=True))
        return f"MixedDataset({parts}; ratios={self.ratios})"


class MixedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless training batches of ``(epoch, global index)`` over a :class:`MixedDataset` (module docstring).

    ``steps_per_epoch`` counts the steps of one pass over the primary dataset.
    """

    def __init__(
        self,
        dataset: MixedDataset,
        *,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.sizes, self.offsets = dataset.sizes, dataset.offsets
        self.batch_size, self.seed, self.start_step = batch_size, seed, start_step
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.counts = batch_counts(self.global_batch, dataset.ratios)
        self.steps_per_epoch = max(1, self.sizes[0] // self.counts[0])
        self._perms: dict[tuple[int, int], list[int]] = {}

    def order(self, part: int, epoch: int) -> list[int]:
        """The permutation of dataset ``part`` in its epoch ``epoch``, from ``(seed, part, epoch)``."""
        key = (part, epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * len(self.sizes):
                self._perms.clear()
            state = np.random.SeedSequence([self.seed, part, epoch]).generate_state(2, np.uint64)
            g = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
            self._perms[key] = torch.randperm(self.sizes[part], generator=g).tolist()
        return self._perms[key]

    def global_batch_at(self, step: int) -> list[tuple[int, int]]:
        """The whole (all ranks) batch of ``step``."""
        batch: list[tuple[int, int]] = []
        for k, c in enumerate(self.counts):
            for pos in range(step * c, (step + 1) * c):
                epoch, j = divmod(pos, self.sizes[k])
                batch.append((epoch, self.offsets[k] + self.order(k, epoch)[j]))
        perm = np.random.default_rng([self.seed, step, 1]).permutation(len(batch))
        return [batch[i] for i in perm]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            lo = self.rank * self.batch_size
            yield self.global_batch_at(step)[lo : lo + self.batch_size]
            step += 1

    def __len__(self) -> int:
        return self.steps_per_epoch
