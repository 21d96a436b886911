"""CachedDataset: the same samples as the uncached reader, under the engine's augmentation too; the on-disk
cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mtdense.data.cached import CachedDataset
from mtdense.data.nyud import NYUDMT
from mtdense.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("cached") / "ds"
    return write_synthetic_dataset(
        out, train=4, val=1, size=(24, 32), seed=9, family="street", progress=False, workers=1
    )


def _flip_and_draw(sample, rng):
    """A transform with randomness (a random horizontal flip and a recorded draw) that also modifies
    every tensor in place, which must not reach the cached arrays."""
    for k in ("image", "depth", "normals", "edge"):
        sample[k].mul_(-1.0).mul_(-1.0)
    sample["semseg"].add_(1).sub_(1)
    sample["normals"][0].neg_().neg_()
    sample["depth"].add_(1.0)
    if rng.random() < 0.5:
        for k in ("image", "semseg", "depth", "normals", "edge"):
            sample[k] = sample[k].flip(-1)
        sample["normals"][0].neg_()
    sample["draw"] = rng.random()
    return sample


def _assert_same(a, b, *, normals_atol=0.0):
    assert set(a) == set(b)
    for k in ("image", "semseg", "depth", "edge"):
        assert a[k].dtype == b[k].dtype
        assert torch.equal(a[k], b[k]), k
    torch.testing.assert_close(a["normals"], b["normals"], atol=normals_atol, rtol=0)
    assert a["meta"] == b["meta"]


@pytest.mark.parametrize("compact", [False, True])
def test_cached_equals_uncached(root, compact):
    """Exact equality, except float16 normals (compact): unit components in [−1, 1] are rounded to
    float16 with an error ≤ 2⁻¹¹ ≈ 4.9e-4."""
    base = NYUDMT(root, "train")
    cached = CachedDataset(base, compact=compact)
    assert len(cached) == len(base) == 4
    assert cached.num_classes == base.num_classes and cached.ids == base.ids
    for i in range(len(base)):
        _assert_same(cached[i], base[i], normals_atol=4.9e-4 if compact else 0.0)


def test_augmented_cached_equals_augmented_uncached_and_cache_stays_intact(root):
    """The engine's augmentation (``Augmented``, generator from (seed, epoch, index)) on top of the cache
    gives the samples it gives on top of the reader, and its in-place changes never reach the cache."""
    from mtdense.engine.data import Augmented

    base = Augmented(NYUDMT(root, "train"), _flip_and_draw, seed=3)
    cached = Augmented(CachedDataset(NYUDMT(root, "train"), compact=False), _flip_and_draw, seed=3)
    draws = set()
    for epoch in (0, 1):
        for i in range(len(base)):
            a, b = cached[(epoch, i)], base[(epoch, i)]
            assert a["draw"] == b["draw"]
            draws.add(a["draw"])
            _assert_same({k: v for k, v in a.items() if k != "draw"}, {k: v for k, v in b.items() if k != "draw"})
    assert len(draws) == 2 * len(base)  # another epoch or index: another generator
    raw = NYUDMT(root, "train").load_raw(0)
    for k, v in raw.items():
        np.testing.assert_array_equal(cached.base.raw(0)[k], v, err_msg=k)


def test_cache_file_is_reused_without_decoding(root, tmp_path):
    """A second CachedDataset loads the .npz: it still works after the source files are deleted."""
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    cache = tmp_path / "cache" / "train.npz"
    first = CachedDataset(NYUDMT(copy, "train"), cache_file=cache)
    assert not first.loaded_from_file and cache.is_file()
    expected = [first[i] for i in range(len(first))]
    base = NYUDMT(copy, "train")  # ids and meta read now
    for sub in ("images", "segmentation", "depth", "normals", "edge"):
        shutil.rmtree(copy / sub)
    second = CachedDataset(base, cache_file=cache)
    assert second.loaded_from_file
    for i, e in enumerate(expected):
        _assert_same(second[i], e)


def test_stale_cache_file_is_rebuilt(root, tmp_path):
    cache = tmp_path / "c.npz"
    CachedDataset(NYUDMT(root, "train"), cache_file=cache)
    val = CachedDataset(NYUDMT(root, "val"), cache_file=cache)  # other split: other fingerprint
    assert not val.loaded_from_file and len(val) == 1
    assert CachedDataset(NYUDMT(root, "val"), cache_file=cache).loaded_from_file
    cache.write_bytes(b"garbage")
    assert not CachedDataset(NYUDMT(root, "val"), cache_file=cache).loaded_from_file
