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


def _synth_meta_mismatches(root: Path, cfg: Config, *, split_sizes: bool = True) -> list[str]:
    """What differs between ``data.synth`` and the ``meta.json`` of the synthetic dataset at ``root``, as
    ``"key: on disk X, configured Y"`` lines (empty: the folder is the configured dataset). A ``meta.json``
    without ``style`` predates styles: its images are style ``a``'s (which renders as the generator always did)."""
    from mtdense.data.synthetic.families import GENERATOR_VERSION

    spec = cfg.data.synth
    meta_path = root / "meta.json"
    if spec is None or not meta_path.is_file():
        return []
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{meta_path}: corrupt or unreadable JSON ({e}); delete {root} to render it again") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}; delete {root}")
    expected = {
        "family": spec.family,
        "style": spec.style,
        "size": list(spec.size),
        "seed": spec.seed,
        "generator_version": GENERATOR_VERSION,
    }
    if split_sizes:
        expected |= {"train": spec.train, "val": spec.val}
    found = {**meta, "style": meta.get("style", "a"), "size": list(meta.get("size", []))}
    splits = meta.get("splits")  # the writer's counts; the reader checks gt_sets/*.txt against them
    found |= splits if isinstance(splits, dict) else {}
    return [f"{k}: on disk {found.get(k)!r}, configured {v!r}" for k, v in expected.items() if found.get(k) != v]


def prepare_dataset_root(cfg: Config, *, progress: bool = True, split_sizes: bool = True) -> Path:
    """The dataset folder; the synthetic benchmark is rendered there first if it is not on disk yet.

    A synthetic folder without ``meta.json`` — the writer's completion marker, written last — is an
    interrupted rendering and is rendered again; one rendered with other settings (family, style, size,
    seed, number of train or val images: a protocol scored on 1,000 validation images must not be scored on
    the 100 of a folder rendered earlier) or by another generator version is an error naming the differences
    (the folder may hold results a user wants to keep). ``split_sizes=False`` accepts other numbers of images:
    ``mtdense eval RUN --data-root OTHER`` scores a run on a folder the user names, e.g. a larger validation set.
    """
    root = Path(cfg.data.root).expanduser()
    if cfg.data.dataset == "synthetic":
        spec = cfg.data.synth
        split_files = [root / "gt_sets" / f"{s}.txt" for s in ("train", "val")]
        complete = all(p.is_file() for p in split_files) and (root / "meta.json").is_file()
        if spec is not None and not complete:
            if root.exists():
                print(f"{root}: no complete synthetic dataset there (no meta.json); rendering it")
            from mtdense.data.synthetic import write_synthetic_dataset

            write_synthetic_dataset(
                root,
                train=spec.train,
                val=spec.val,
                size=tuple(spec.size),
                seed=spec.seed,
                family=spec.family,
                style=spec.style,
                progress=progress,
            )
        elif spec is not None and (diff := _synth_meta_mismatches(root, cfg, split_sizes=split_sizes)):
            raise DataError(
                f"{root} holds a synthetic dataset rendered with other settings than data.synth or by another "
                f"generator version ({'; '.join(diff)}); delete it or point data.root elsewhere"
            )
    if not root.is_dir():
        raise DataError(f"dataset folder does not exist: {root}")
    return root


def _open(cfg: Config, name: str, root: Path, split: str) -> Dataset:
    from mtdense.data.registry import open_dataset

    tasks = tuple(cfg.data.tasks) + tuple(cfg.data.aux_tasks)
    ds = open_dataset(name, root, split=split, tasks=tasks)
    if cfg.data.cache and hasattr(ds, "load_raw"):
        from mtdense.data.cached import CachedDataset

        ds = CachedDataset(ds)
    return ds


def build_base_dataset(cfg: Config, split: str, *, root: Path, mix: bool = False) -> Dataset:
    """The raw (un-augmented) dataset ``data.dataset`` of ``split``, opened through
    :func:`mtdense.data.open_dataset` and optionally cached in memory.

    With ``mix=True`` (the training set) and ``data.extra`` given, the union of this dataset and every
    extra one (:class:`mtdense.data.mixed.MixedDataset`, sampled with each one's ratio per batch).
    """
    ds = _open(cfg, cfg.data.dataset, root, split)
    if not (mix and cfg.data.extra):
        return ds
    from mtdense.data.mixed import MixedDataset

    parts, names = [ds], [cfg.data.dataset]
    for k, extra in enumerate(cfg.data.extra):
        parts.append(_open(cfg, extra.dataset, Path(extra.root).expanduser(), extra.split))
        names.append(f"extra[{k}]:{extra.dataset}")
    ratios = [1.0 - sum(e.ratio for e in cfg.data.extra), *(e.ratio for e in cfg.data.extra)]
    mixed = MixedDataset(parts, names=names, ratios=ratios, tasks=tuple(cfg.data.tasks) + tuple(cfg.data.aux_tasks))
    if cfg.data.crop_size is None:  # without a crop every sample must have one size to collate
        sizes = {n: tuple(p[0]["image"].shape[-2:]) for n, p in zip(names, parts, strict=True)}
        if len(set(sizes.values())) > 1:
            raise DataError(f"data.extra: the mixed datasets have different image sizes {sizes}; set data.crop_size")
    return mixed


def build_train_transform(cfg: Config) -> Any:
    from mtdense.data import transforms as T

    steps: list[Any] = []
    if cfg.data.scale_range is not None:
        if list(cfg.data.scales) != [1.0]:
            from mtdense.errors import ConfigError

            raise ConfigError("data.scale_range and data.scales are both set; give one of them")
        steps.append(
            T.RandomScale(scale_range=tuple(cfg.data.scale_range), depth_divide=cfg.data.depth_divide_by_scale)
        )
    elif list(cfg.data.scales) != [1.0]:
        steps.append(T.RandomScale(scales=tuple(cfg.data.scales), depth_divide=cfg.data.depth_divide_by_scale))
    if cfg.data.rotation > 0:
        steps.append(T.RandomRotation(cfg.data.rotation))
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


def dataset_meta(dataset: Dataset | Path) -> dict[str, Any]:
    """The dataset's meta (class count and names, palette, intrinsics): ``dataset.meta`` of an opened
    dataset — so datasets without a ``meta.json`` work — or, for a folder, its ``meta.json``
    (:func:`mtdense.data.nyud.read_meta`: a missing or corrupt one is an error naming it)."""
    if isinstance(dataset, (str, Path)):
        from mtdense.data.nyud import read_meta

        return read_meta(dataset)
    meta = getattr(dataset, "meta", None)
    if not isinstance(meta, dict):
        raise DataError(f"{dataset!r} has no meta (a dict with num_classes, class_names, ...)")
    return dict(meta)


def make_train_loader(
    cfg: Config, dataset: Dataset, *, start_step: int = 0, rank: int = 0, world_size: int = 1
) -> DataLoader:
    from mtdense.data.mixed import MixedBatchSampler, MixedDataset

    base = getattr(dataset, "base", dataset)
    sampler: Sampler[list[tuple[int, int]]]
    if isinstance(base, MixedDataset):
        sampler = MixedBatchSampler(
            base,
            batch_size=cfg.train.batch_size,
            seed=cfg.seed,
            start_step=start_step,
            rank=rank,
            world_size=world_size,
        )
    else:
        sampler = ResumableBatchSampler(
            len(dataset),  # type: ignore[arg-type]
            batch_size=cfg.train.batch_size,
            seed=cfg.seed,
            start_step=start_step,
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
