"""``mtdense data convert nyud``: the official NYU Depth V2 files → NYUD-MT, on fixtures in the exact formats.

The fixture ``nyu_depth_v2_labeled.mat`` is a MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte
MATLAB header (user block), arrays stored transposed (``images`` ``(N, 3, W, H)``, ``depths`` / ``labels``
``(N, W, H)``), ``names`` a ``(1, 894)`` array of object references to uint16 character arrays under
``#refs#``. ``splits.mat`` is MATLAB v5 (scipy.io.savemat) with 1-based ``trainNdxs`` / ``testNdxs``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from mtdense.cli.main import main
from mtdense.data import open_dataset
from mtdense.data._geometry import normals_from_depth
from mtdense.data.nyud_convert import convert_nyud, nyu_tables, signed_permutations
from mtdense.errors import DataError

H, W, N = 6, 8, 3
K = {"fx": 518.8579, "fy": 519.4696, "cx": 325.5824, "cy": 253.7362}
WALL, FLOOR, LAST = 21, 11, 894  # 894-class ids: 'wall', 'floor', the last class


def image_of(i: int) -> np.ndarray:
    """(H, W, 3) uint8 whose every pixel is distinct, so a wrong transpose shows."""
    y, x = np.mgrid[:H, :W]
    return np.stack([y * 10 + i, x * 10, np.full((H, W), 100 + i)], -1).astype(np.uint8)


def labels_of(i: int) -> np.ndarray:
    lab = np.zeros((H, W), np.uint16)
    lab[:, : W // 2] = WALL
    lab[:, W // 2 :] = FLOOR
    lab[0, 0] = 0  # void
    lab[-1, -1] = LAST
    return lab


def tilted_depth() -> np.ndarray:
    """Depth of the plane n0 · P = −2 with n0 ∝ (1, −2, −3) (facing the camera), NYU intrinsics."""
    n0 = np.array([1.0, -2.0, -3.0]) / np.sqrt(14.0)
    v, u = np.mgrid[:H, :W].astype(float)
    ray = np.stack([(u - K["cx"]) / K["fx"], (v - K["cy"]) / K["fy"], np.ones_like(u)], -1)
    return (-2.0 / (ray @ n0)).astype(np.float32)


def depth_of(i: int) -> np.ndarray:
    return tilted_depth() * (1 + i) if i else np.full((H, W), 2.5, np.float32)


def write_labeled_mat(path: Path, *, names: list[str] | None = None, n: int = N) -> Path:
    names = list(nyu_tables()["names894"]) if names is None else names
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("images", data=np.stack([image_of(i).transpose(2, 1, 0) for i in range(n)]))
        f.create_dataset("depths", data=np.stack([depth_of(i).T for i in range(n)]))
        f.create_dataset("labels", data=np.stack([labels_of(i).T for i in range(n)]))
        refs = f.create_group("#refs#")
        ref_list = []
        for k, name in enumerate(names):
            d = refs.create_dataset(f"n{k}", data=np.array([[ord(c)] for c in name], np.uint16))
            d.attrs["MATLAB_class"] = np.bytes_(b"char")
            ref_list.append(d.ref)
        f.create_dataset("names", data=np.array([ref_list], dtype=h5py.ref_dtype))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")
    return path


def write_splits(path: Path, train=((1,), (3,)), test=((2,),)) -> Path:
    scipy.io.savemat(path, {"trainNdxs": np.array(train, np.float64), "testNdxs": np.array(test, np.float64)})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("nyu")
    return write_labeled_mat(d / "nyu_depth_v2_labeled.mat"), write_splits(d / "splits.mat")


@pytest.fixture(scope="module")
def converted(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conv") / "NYUD_MT"
    assert main(["data", "convert", "nyud", "--mat", str(files[0]), "--splits", str(files[1]), "--out", str(out)]) == 0
    return out


def test_writes_the_nyud_mt_layout_with_exact_values(converted):
    assert (converted / "gt_sets" / "train.txt").read_text() == "0001\n0003\n"
    assert (converted / "gt_sets" / "val.txt").read_text() == "0002\n"
    meta = json.loads((converted / "meta.json").read_text())
    assert meta["num_classes"] == 40 and meta["class_names"][0] == "wall" and len(meta["palette"]) == 40
    assert meta["normals_source"] == "derived_from_depth"
    assert meta["intrinsics"] == K
    ds = open_dataset("nyud_mt", converted, split="train", tasks=("semseg", "depth", "normals", "edge"))
    s = ds[1]  # image 3 (1-based)
    assert s["meta"]["id"] == "0003"
    np.testing.assert_array_equal((s["image"] * 255).round().byte().permute(1, 2, 0).numpy(), image_of(2))
    sem = s["semseg"].numpy()
    last40 = nyu_tables()["map894_to40"][LAST - 1]
    assert sem[0, 0] == 255  # void stays void (→ ignore)
    assert sem[0, 1] == 0 and sem[3, 6] == 1  # wall → 40-id 1 → class 0; floor → 2 → class 1
    assert sem[-1, -1] == last40 - 1
    np.testing.assert_allclose(s["depth"][0].numpy(), depth_of(2), rtol=0, atol=0)


def test_derived_normals_are_the_planes_normal_in_the_camera_frame(converted):
    ds = open_dataset("nyud_mt", converted, split="train", tasks=("normals",))
    wall = ds[0]["normals"].numpy()  # constant depth: a wall facing the camera → (0, 0, −1)
    np.testing.assert_allclose(
        wall[:, 1:-1, 1:-1], np.broadcast_to(np.array([0, 0, -1.0])[:, None, None], (3, H - 2, W - 2)), atol=1e-6
    )
    assert np.all(wall[:, 0] == 0) and np.all(wall[:, :, -1] == 0)  # border: invalid
    tilted = ds[1]["normals"].numpy()[:, 1:-1, 1:-1]
    n0 = np.array([1.0, -2.0, -3.0]) / np.sqrt(14.0)
    np.testing.assert_allclose(tilted, np.broadcast_to(n0[:, None, None], tilted.shape), atol=1e-4)


def test_edges_follow_the_label_boundaries(converted):
    ds = open_dataset("nyud_mt", converted, split="val", tasks=("edge", "semseg"))
    edge = ds[0]["edge"][0].numpy()
    # the wall|floor boundary between columns 3 and 4 (equal depth: the left pixel is marked) + void/last corners
    assert edge[2:5, 3].tolist() == [1, 1, 1] and edge[2:5, 4].sum() == 0
    assert edge[0, 0] == 1 and edge[3, 1] == 0


def test_13_class_protocol(files, tmp_path):
    out = convert_nyud(files[0], files[1], tmp_path / "o13", classes=13, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_classes"] == 13 and meta["class_names"][11] == "wall"
    sem = open_dataset("nyud_mt", out, split="train", tasks=("semseg",))[0]["semseg"].numpy()
    assert sem[0, 1] == 11 and sem[3, 6] == 4 and sem[0, 0] == 255  # wall → 12 → 11; floor → 5 → 4


def test_eigen_normals_are_brought_into_the_camera_frame(files, tmp_path):
    """Release normals stored in another axis convention (a signed permutation) come out in the camera frame;
    the convention is established from the depth geometry and recorded in meta.json."""
    m = signed_permutations()[13]  # maps release axes → camera axes
    eig = tmp_path / "eigen"
    (eig / "normals").mkdir(parents=True)
    (eig / "masks").mkdir()
    for i in range(N):
        cam = normals_from_depth(depth_of(i), **K)
        stored = cam @ m  # m⁻¹ = mᵀ: stored = mᵀ · cam
        png = np.where(np.abs(cam).sum(-1, keepdims=True) > 0, np.round((stored + 1) * 127), 127).astype(np.uint8)
        Image.fromarray(png).save(eig / "normals" / f"{i:04d}.png")
        mask = np.full((H, W), 255, np.uint8)
        mask[2, 2] = 0
        Image.fromarray(mask).save(eig / "masks" / f"{i:04d}.png")
    out = convert_nyud(files[0], files[1], tmp_path / "oe", normals=eig, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["normals_source"] == "eigen" and meta["normals_axes"] == m.astype(int).tolist()
    n = open_dataset("nyud_mt", out, split="train", tasks=("normals",))[1]["normals"].numpy()
    n0 = np.array([1.0, -2.0, -3.0]) / np.sqrt(14.0)
    np.testing.assert_allclose(n[:, 3, 3], n0, atol=0.02)
    assert np.all(n[:, 2, 2] == 0)  # masked out
    np.testing.assert_allclose(np.linalg.norm(n[:, 3, 3]), 1.0, atol=1e-5)


def _convert_error(mat, splits, out, capsys, *extra) -> str:
    code = main(["data", "convert", "nyud", "--mat", str(mat), "--splits", str(splits), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:"), err
    return err


def test_corrupt_and_truncated_mat_are_named_errors(files, tmp_path, capsys):
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x00garbage" * 100)
    assert "junk.mat" in _convert_error(junk, files[1], tmp_path / "o1", capsys)
    cut = tmp_path / "cut.mat"
    data = files[0].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    err = _convert_error(cut, files[1], tmp_path / "o2", capsys)
    assert "cut.mat" in err and ("truncated" in err or "corrupt" in err)
    assert "not found" in _convert_error(tmp_path / "none.mat", files[1], tmp_path / "o3", capsys)


def test_malformed_mat_contents_are_named(files, tmp_path):
    renamed = tmp_path / "names.mat"
    renamed.write_bytes(files[0].read_bytes())
    with h5py.File(renamed, "r+") as f:  # class 1 'book' renamed 'wall': another numbering
        f["#refs#/n0"][...] = np.array([[ord(c)] for c in "wall"], np.uint16)
    with pytest.raises(DataError, match="class 1 is named 'wall', expected 'book'"):
        convert_nyud(renamed, files[1], tmp_path / "o", progress=False)
    nolabels = tmp_path / "nolabels.mat"
    with h5py.File(nolabels, "w") as f:
        f.create_dataset("images", data=np.zeros((1, 3, W, H), np.uint8))
        f.create_dataset("depths", data=np.zeros((1, W, H), np.float32))
    with pytest.raises(DataError, match="no 'labels' array"):
        convert_nyud(nolabels, files[1], tmp_path / "o", progress=False)


def test_bad_splits_are_named_errors(files, tmp_path):
    with pytest.raises(DataError, match="no key 'testNdxs'"):
        scipy.io.savemat(tmp_path / "s1.mat", {"trainNdxs": np.array([[1]])})
        convert_nyud(files[0], tmp_path / "s1.mat", tmp_path / "o", progress=False)
    with pytest.raises(DataError, match=r"1-based indices in 1\.\.3.*0\.\.1"):  # 0-based by mistake
        convert_nyud(files[0], write_splits(tmp_path / "s2.mat", train=((0,), (1,)), test=((2,),)), tmp_path / "o")
    with pytest.raises(DataError, match="share 1 indices"):
        convert_nyud(files[0], write_splits(tmp_path / "s3.mat", train=((1,), (2,)), test=((2,),)), tmp_path / "o")
    (tmp_path / "s4.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match="s4.mat"):
        convert_nyud(files[0], tmp_path / "s4.mat", tmp_path / "o", progress=False)


def test_out_holding_other_data_is_refused(files, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    with pytest.raises(DataError, match="holds something else"):
        convert_nyud(files[0], files[1], out, progress=False)
    assert (out / "thesis.tex").read_text() == "keep me"


def test_cli_13_classes_with_a_progress_bar(files, tmp_path, capsys):
    """``--classes 13`` through the command line, which shows a progress bar over the images (stderr)."""
    out = tmp_path / "cli13"
    args = ["data", "convert", "nyud", "--mat", str(files[0]), "--splits", str(files[1]), "--out", str(out)]
    assert main([*args, "--classes", "13"]) == 0
    captured = capsys.readouterr()
    n = len(open_dataset("nyud_mt", out, split="train", tasks=())) + len(
        open_dataset("nyud_mt", out, split="val", tasks=())
    )
    assert "convert nyud" in captured.err and f"{n}/{n}" in captured.err and "13 classes" in captured.out
    assert json.loads((out / "meta.json").read_text())["protocol"] == "nyud13"
