"""``nyud_raw``: NYUD raw frames in the BTS "sync" layout, on a fixture in that exact format.

``ROOT/sync/<scene>/rgb_%05d.jpg``, ``ROOT/sync/<scene>/sync_depth_%05d.png`` (16-bit, millimetres, 0 =
invalid) and ``ROOT/nyudepthv2_train_files_with_gt.txt`` (``/<scene>/rgb_… /<scene>/sync_depth_… <focal>``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtdense.data import open_dataset
from mtdense.errors import ConfigError, DataError

H, W = 32, 48
FOCAL = 518.8579


def write_nyud_raw(root: Path, *, frames: int = 4, size: tuple[int, int] = (H, W)) -> Path:
    """``frames`` frames in two scenes; frame i has constant depth (1000 + 250·i) mm with pixel (0, 0) invalid."""
    lines = []
    for i in range(frames):
        scene = f"kitchen_{i % 2:04d}a"
        folder = root / "sync" / scene
        folder.mkdir(parents=True, exist_ok=True)
        rgb = np.full((*size, 3), 40 * i, np.uint8)
        Image.fromarray(rgb).save(folder / f"rgb_{i:05d}.jpg", quality=95)
        depth = np.full(size, 1000 + 250 * i, np.uint16)
        depth[0, 0] = 0
        Image.fromarray(depth).save(folder / f"sync_depth_{i:05d}.png")
        lines.append(f"/{scene}/rgb_{i:05d}.jpg /{scene}/sync_depth_{i:05d}.png {FOCAL}")
    (root / "nyudepthv2_train_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    return write_nyud_raw(tmp_path_factory.mktemp("nyudraw"))


def test_depth_in_metres_from_16bit_millimetres(raw_root):
    ds = open_dataset("nyud_raw", raw_root, split="train", tasks=("depth",))
    assert len(ds) == 4
    s = ds[2]
    assert s["image"].shape == (3, H, W) and s["depth"].dtype == torch.float32
    assert s["depth"][0, 0, 0] == 0  # invalid stays 0
    assert torch.all(s["depth"][0].flatten()[1:] == torch.tensor(1.5))  # 1500 mm → 1.5 m exactly
    assert set(s) == {"image", "depth", "meta"}
    assert ds.meta["num_classes"] == 40 and ds.meta["provides"] == ["depth", "normals"]


def test_missing_targets_are_ignore_filled_and_normals_derived(raw_root):
    ds = open_dataset("nyud_raw", raw_root, split="train", tasks=("semseg", "depth", "normals", "edge"))
    s = ds[1]
    assert s["semseg"].dtype == torch.int64 and torch.all(s["semseg"] == 255) and s["semseg"].shape == (H, W)
    assert s["edge"].shape == (1, H, W) and torch.all(s["edge"] == 255)
    n = s["normals"]
    assert torch.allclose(n[:, 2:-1, 2:-1], torch.tensor([0.0, 0.0, -1.0])[:, None, None].expand(3, H - 3, W - 3))
    assert torch.all(n[:, 0, 0] == 0) and torch.all(n[:, 1, 0] == 0)  # next to the hole and on the border


def test_list_paths_without_leading_slash_and_under_root(tmp_path):
    root = write_nyud_raw(tmp_path / "r", frames=2)
    lst = root / "nyudepthv2_train_files_with_gt.txt"
    lst.write_text(lst.read_text().replace(" /", " sync/").replace("/kitchen", "sync/kitchen", 1))
    ds = open_dataset("nyud_raw", root, split="train", tasks=("depth",))
    assert float(ds[1]["depth"][0, 5, 5]) == 1.25


def test_named_errors(tmp_path, raw_root):
    with pytest.raises(DataError, match="nyudepthv2_val_files_with_gt.txt"):
        open_dataset("nyud_raw", raw_root, split="val", tasks=("depth",))
    with pytest.raises(ConfigError, match="unknown nyud_raw task"):
        open_dataset("nyud_raw", raw_root, split="train", tasks=("parts",))
    root = write_nyud_raw(tmp_path / "bad", frames=2)
    lst = root / "nyudepthv2_train_files_with_gt.txt"
    lst.write_text(lst.read_text() + "/x/rgb_1.jpg /x/sync_depth_1.png\n")
    with pytest.raises(DataError, match=r"nyudepthv2_train_files_with_gt.txt:3: expected '<rgb path> <depth path>"):
        open_dataset("nyud_raw", root, split="train", tasks=("depth",))
    lst.write_text("/x/rgb_1.jpg /x/sync_depth_1.png 518.8\n")
    with pytest.raises(DataError, match="file not found: x/rgb_1.jpg"):
        open_dataset("nyud_raw", root, split="train", tasks=("depth",))[0]
    # an 8-bit depth PNG (lost its millimetres) and a truncated one
    lines = (raw_root / "nyudepthv2_train_files_with_gt.txt").read_text()
    lst.write_text(lines)
    (root / "sync").rename(root / "old")
    import shutil

    shutil.copytree(raw_root / "sync", root / "sync")
    scene = root / "sync" / "kitchen_0000a"
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(scene / "sync_depth_00000.png")
    ds = open_dataset("nyud_raw", root, split="train", tasks=("depth",))
    with pytest.raises(DataError, match="sync_depth_00000.png: expected a 16-bit"):
        ds[0]
    (scene / "sync_depth_00002.png").write_bytes((scene / "sync_depth_00002.png").read_bytes()[:60])
    with pytest.raises(DataError, match="cannot decode depth map .*sync_depth_00002.png"):
        ds[2]


def test_indexing_is_range_checked_and_repr_names_the_split(raw_root):
    """The indexing every reader shares (mtdense.data._readers.IndexedDataset): negative indices too."""
    ds = open_dataset("nyud_raw", raw_root, split="train", tasks=("depth",))
    for bad in (4, -1):
        with pytest.raises(IndexError, match=rf"index {bad} out of range for 4 samples of .* \[train\]"):
            ds[bad]
    assert repr(ds) == f"NYUDRaw(root={str(raw_root)!r}, split='train', n=4, tasks=['depth'])"
