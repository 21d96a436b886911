"""``nyud_mtan13``: the MTAN / LibMTL 13-class NYUv2 npy layout, on a fixture in that exact format.

``ROOT/{train,val}/{image,label,depth,normal}/<i>.npy``: image (288, 384, 3) float in [0, 1]; label
(288, 384) 0..12 with −1 = ignore; depth (288, 384, 1) metres; normal (288, 384, 3), zero = invalid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtdense.data import open_dataset
from mtdense.data._geometry import normals_from_depth
from mtdense.data.mtan import INTRINSICS, SIZE
from mtdense.data.nyud_convert import signed_permutations
from mtdense.errors import DataError

H, W = SIZE
AXES = signed_permutations()[29]  # the fixture's stored convention: camera = AXES · stored


def plane_depth(n0: np.ndarray, c: float) -> np.ndarray:
    v, u = np.mgrid[:H, :W].astype(float)
    ray = np.stack(
        [(u - INTRINSICS["cx"]) / INTRINSICS["fx"], (v - INTRINSICS["cy"]) / INTRINSICS["fy"], 1 + 0 * u], -1
    )
    return (-c / (ray @ n0)).astype(np.float32)


def write_mtan(root: Path, counts=(("train", 2), ("val", 1))) -> Path:
    n0 = np.array([1.0, -2.0, -3.0]) / np.sqrt(14.0)
    for split, n in counts:
        for k in ("image", "label", "depth", "normal"):
            (root / split / k).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = np.random.default_rng(i).random((H, W, 3))
            label = np.full((H, W), 11.0)  # 'wall'
            label[:, W // 2 :] = 4.0  # 'floor'
            label[0, :] = -1.0
            depth = plane_depth(n0, 2.0 + i)
            normal = normals_from_depth(depth, **INTRINSICS) @ AXES  # stored = AXESᵀ · camera
            np.save(root / split / "image" / f"{i}.npy", image)
            np.save(root / split / "label" / f"{i}.npy", label)
            np.save(root / split / "depth" / f"{i}.npy", depth[..., None])
            np.save(root / split / "normal" / f"{i}.npy", normal)
    return root


@pytest.fixture(scope="module")
def mtan_root(tmp_path_factory) -> Path:
    return write_mtan(tmp_path_factory.mktemp("mtan"))


def test_values_of_the_mtan_layout(mtan_root):
    ds = open_dataset("nyud_mtan13", mtan_root, split="train", tasks=("semseg", "depth", "normals", "edge"))
    assert len(ds) == 2 and ds.meta["num_classes"] == 13 and ds.meta["class_names"][11] == "wall"
    s = ds[1]
    image = np.load(mtan_root / "train" / "image" / "1.npy")
    assert torch.equal(s["image"], torch.from_numpy(image.transpose(2, 0, 1)).float())  # no 8-bit round trip
    sem = s["semseg"]
    assert sem.dtype == torch.int64 and torch.all(sem[0] == 255) and sem[5, 0] == 11 and sem[5, W - 1] == 4
    np.testing.assert_array_equal(s["depth"][0].numpy(), np.load(mtan_root / "train" / "depth" / "1.npy")[..., 0])
    edge = s["edge"][0]
    assert edge[5, W // 2 - 1] + edge[5, W // 2] == 1 and edge[5, 3] == 0  # the wall|floor boundary, 1 px


def test_normals_are_put_in_the_camera_frame(mtan_root):
    ds = open_dataset("nyud_mtan13", mtan_root, split="val", tasks=("normals",))
    assert ds.meta["normals_axes"] == AXES.astype(int).tolist() and ds.meta["normals_axes_agreement"] > 0.99
    n = ds[0]["normals"][:, 10:-10, 10:-10]
    n0 = torch.tensor([1.0, -2.0, -3.0]) / np.sqrt(14.0)
    assert torch.allclose(n, n0[:, None, None].expand_as(n).float(), atol=1e-4)


def test_named_errors(tmp_path):
    root = write_mtan(tmp_path / "m", counts=(("train", 2),))
    with pytest.raises(DataError, match="split folder not found"):
        open_dataset("nyud_mtan13", root, split="val", tasks=("semseg",))
    (root / "train" / "depth" / "1.npy").unlink()
    with pytest.raises(DataError, match=r"depth: 1 of the 2 files are missing \(first: 1.npy\)"):
        open_dataset("nyud_mtan13", root, split="train", tasks=("depth",))
    label = np.load(root / "train" / "label" / "0.npy")
    label[3, 3] = 13
    np.save(root / "train" / "label" / "0.npy", label)
    ds = open_dataset("nyud_mtan13", root, split="train", tasks=("semseg",))
    with pytest.raises(DataError, match=r"0.npy: label 13.0 outside the 13-class protocol"):
        ds[0]
    np.save(root / "train" / "label" / "1.npy", np.zeros((H, W // 2)))
    with pytest.raises(DataError, match=r"1.npy: expected shape \(288, 384\), got \(288, 192\)"):
        ds[1]


def test_indexing_is_range_checked_and_repr_names_the_split(mtan_root):
    """The indexing every reader shares (mtdense.data._readers.IndexedDataset): negative indices too."""
    ds = open_dataset("nyud_mtan13", mtan_root, split="train", tasks=("depth",))
    for bad in (2, -1):
        with pytest.raises(IndexError, match=rf"index {bad} out of range for 2 samples of .* \[train\]"):
            ds[bad]
    assert repr(ds) == f"NYUDMTAN(root={str(mtan_root)!r}, split='train', n=2, tasks=['depth'])"


def test_detected_and_read_right_by_data_check(mtan_root, tmp_path, capsys):
    """``mtdense data check ROOT`` recognises the MTAN layout, reads both splits and finds nothing wrong."""
    from mtdense.cli.main import main

    assert main(["data", "check", str(mtan_root), "--figure", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset nyud_mtan13 at ") and "no problems found" in out
