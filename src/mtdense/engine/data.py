"""Datasets and loaders from a config, with a resumable sampler.

Exact resume needs the data order and the augmentation of step k to depend only on
(seed, step): :class:`ResumableBatchSampler` draws epoch ``e``'s order from ``seed`` and ``e`` and can
start at any step, and :class:`Augmented` draws each sample's augmentation from
``numpy.random.default_rng([seed, epoch, index])`` — independent of DataLoader workers, of how
many steps ran before, and of the process (train and val are fixed splits on disk; they are never
reshuffled independently).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mtdense.config.schema import Config
from mtdense.errors import DataError


class Augmented(Dataset):
    """``base[index]`` followed by ``transform(sample, rng)``; indexed by ``(epoch, index)`` pairs."""

    def __init__(self, base: Dataset, transform: Any | None, *, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        sample = self.base[index]
        if self.transform is not None:
            sample = self.transform(sample, np.random.default_rng([self.seed, epoch, index]))
        return sample


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite stream of training batches of ``(epoch, index)`` that can start at any step.

    Epoch ``e`` visits ``torch.randperm(n)`` drawn from ``seed`` and ``e``; the last incomplete batch
    is dropped, so every step has ``batch_size`` samples. With ``world_size > 1`` each rank takes its
    own contiguous slice of every global batch (DDP).
    """

    def __init__(
        self, n: int, *, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self.global_batch = batch_size * world_size
        if n < self.global_batch:
            raise DataError(
                f"the training split has {n} samples, fewer than one global batch ({self.global_batch}); "
                "lower train.batch_size"
            )
        self.steps_per_epoch = n // self.global_batch

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            epoch, pos = divmod(step, self.steps_per_epoch)
            order = self.order(epoch)
            for p in range(pos, self.steps_per_epoch):
                lo = p * self.global_batch + self.rank * self.batch_size
                yield [(epoch, i) for i in order[lo : lo + self.batch_size]]
            step = (epoch + 1) * self.steps_per_epoch

    def __len__(self) -> int:  # one epoch's worth; the stream itself is infinite
        return self.steps_per_epoch


def _synth_meta_matches(root: Path, cfg: Config) -> bool:
    spec = cfg.data.synth
    meta_path = root / "meta.json"
    if spec is None or not meta_path.is_file():
        return True
    meta = json.loads(meta_path.read_text())
    return (
        meta.get("family") == spec.family
        and list(meta.get("size", [])) == list(spec.size)
        and meta.get("seed") == spec.seed
    )


def prepare_dataset_root(cfg: Config, *, progress: bool = True) -> Path:
    """The dataset folder; the synthetic benchmark is rendered there first if it is not on disk yet."""
    root = Path(cfg.data.root).expanduser()
    if cfg.data.dataset == "synthetic":
        spec = cfg.data.synth
        split_files = [root / "gt_sets" / f"{s}.txt" for s in ("train", "val")]
        if spec is not None and not all(p.is_file() for p in split_files):
            from mtdense.data.synthetic import write_synthetic_dataset

            write_synthetic_dataset(
                root,
                train=spec.train,
                val=spec.val,
                size=tuple(spec.size),
                seed=spec.seed,
                family=spec.family,
                progress=progress,
            )
        elif spec is not None and not _synth_meta_matches(root, cfg):
            raise DataError(
                f"{root} holds a synthetic dataset rendered with other settings than data.synth; "
                "delete it or point data.root elsewhere"
            )
    if not root.is_dir():
        raise DataError(f"dataset folder does not exist: {root}")
    return root


def build_base_dataset(cfg: Config, split: str, *, root: Path) -> Dataset:
    """The raw (un-augmented) dataset of ``split``, optionally cached in memory."""
    from mtdense.data.nyud import NYUDMT

    tasks = tuple(cfg.data.tasks) + tuple(cfg.data.aux_tasks)
    ds: Dataset = NYUDMT(root, split=split, tasks=tasks)
    if cfg.data.cache:
        from mtdense.data.cached import CachedDataset

        ds = CachedDataset(ds)
    return ds


def build_train_transform(cfg: Config) -> Any:
    from mtdense.data import transforms as T

    steps: list[Any] = []
    if list(cfg.data.scales) != [1.0]:
        steps.append(
            T.RandomScale(scales=tuple(cfg.data.scales), depth_divide=cfg.data.depth_divide_by_scale)
        )
    if cfg.data.crop_size is not None:
        steps.append(T.RandomCrop(size=tuple(cfg.data.crop_size)))
    if cfg.data.flip:
        steps.append(T.RandomHorizontalFlip())
    if cfg.data.photometric:
        steps.append(T.PhotometricJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
    return T.Compose(steps) if steps else None


def build_eval_transform(cfg: Config) -> Any:
    from mtdense.data import transforms as T

    return T.Compose([T.Resize(size=tuple(cfg.data.eval_size))]) if cfg.data.eval_size is not None else None


def dataset_meta(root: Path) -> dict[str, Any]:
    """``meta.json`` of a dataset folder (class names, palette, intrinsics), or ``{}``."""
    p = root / "meta.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def make_train_loader(
    cfg: Config, dataset: Dataset, *, start_step: int = 0, rank: int = 0, world_size: int = 1
) -> DataLoader:
    sampler = ResumableBatchSampler(
        len(dataset),
        batch_size=cfg.train.batch_size,
        seed=cfg.seed,
        start_step=start_step,  # type: ignore[arg-type]
        rank=rank,
        world_size=world_size,
    )
    # the loader's own generator: creating an iterator must not draw from the global RNG, or a
    # resumed run's dropout stream would be one draw off the uninterrupted run's
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def make_eval_loader(cfg: Config, dataset: Dataset, *, rank: int = 0, world_size: int = 1) -> DataLoader:
    indices = list(range(rank, len(dataset), world_size))  # type: ignore[arg-type]
    subset = torch.utils.data.Subset(dataset, indices) if world_size > 1 else dataset
    return DataLoader(
        subset,
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
