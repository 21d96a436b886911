"""SUN RGB-D reader on a fixture in the official per-image folder layout: bit-rotated 16-bit depth PNGs
(written by an encoder independent of the reader's decoder), intrinsics.txt, 37-class label PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from mtdense.data import open_dataset
from mtdense.errors import DataError

H, W = 8, 10
K = (529.5, 0.0, 365.0, 0.0, 529.5, 265.0, 0.0, 0.0, 1.0)


def encode_depth(mm: np.ndarray) -> np.ndarray:
    """The SUN RGB-D storage of millimetres: rotate left by 3 bits on 16 bits (the reader rotates right)."""
    v = mm.astype(np.uint32)
    return (((v << 3) | (v >> 13)) & 0xFFFF).astype(np.uint16)


MM = np.array([0, 1234, 7999, 9000, 65535 >> 3], np.uint32)  # invalid, 1.234 m, 7.999 m, > cap, max


TRAIN_DIR, TEST_DIR = "SUNRGBD/kv1/NYUdata/NYU0001", "SUNRGBD/realsense/lg/2014_10_24-15_31_49"


def _cells(paths: list[str]) -> np.ndarray:
    """A MATLAB 1xN cell array of strings, as allsplit.mat stores its folder lists."""
    cells = np.empty((1, len(paths)), dtype=object)
    for k, p in enumerate(paths):
        cells[0, k] = p
    return cells


@pytest.fixture()
def sun_root(tmp_path, write_png):
    root = tmp_path / "sunrgbd"
    for folder, name in ((TRAIN_DIR, "NYU0001"), (TEST_DIR, "0000001")):
        base = root / folder
        for d in ("image", "depth_bfx", "depth", "label"):
            (base / d).mkdir(parents=True)
        Image.fromarray(np.full((H, W, 3), 50, np.uint8)).save(base / "image" / f"{name}.jpg")
        mm = np.full((H, W), 2000, np.uint32)
        mm[0, :5] = MM
        write_png(base / "depth_bfx" / f"{name}.png", encode_depth(mm))
        (base / "intrinsics.txt").write_text(" ".join(f"{k:g}" for k in K[:3]) + "\n" + " ".join(map(str, K[3:])))
        lab = np.zeros((H, W), np.uint8)
        lab[:, 3:] = 1
        lab[:, 6:] = 37
        if folder == TRAIN_DIR:  # the RedNet / ESANet export of SUNRGBD2Dseg.mat
            np.save(base / "label" / "label.npy", lab)
        else:
            Image.fromarray(lab).save(base / "label37.png")
    (root / "SUNRGBDtoolbox/traintestSUNRGBD").mkdir(parents=True)
    scipy.io.savemat(
        root / "SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat",
        {"alltrain": _cells([f"/n/fs/sun3d/data/{TRAIN_DIR}"]), "alltest": _cells([f"/n/fs/sun3d/data/{TEST_DIR}/"])},
    )
    return root


def test_official_split_file(sun_root):
    assert open_dataset("sunrgbd", sun_root, split="train", tasks=("depth",)).ids == [TRAIN_DIR]
    assert open_dataset("sunrgbd", sun_root, split="test", tasks=("depth",)).ids == [TEST_DIR]
    (sun_root / "train.txt").write_text(f"{TEST_DIR}\n")  # a split list in ROOT takes precedence
    assert open_dataset("sunrgbd", sun_root, split="train", tasks=("depth",)).ids == [TEST_DIR]


def test_depth_bit_rotation_metres_and_cap(sun_root):
    ds = open_dataset("sunrgbd", sun_root, split="train", tasks=("depth",))
    d = ds[0]["depth"][0].numpy()
    np.testing.assert_allclose(d[0, :5], [0.0, 1.234, 7.999, 8.0, 8.0], rtol=1e-6)
    assert (d[1:] == np.float32(2.0)).all()


def test_labels_mapped_and_void_ignored(sun_root):
    for split in ("train", "test"):  # label/label.npy and label37.png
        row = open_dataset("sunrgbd", sun_root, split=split, tasks=("semseg",))[0]["semseg"][0].numpy()
        np.testing.assert_array_equal(row, [255] * 3 + [0] * 3 + [36] * 4)
    ds = open_dataset("sunrgbd", sun_root, split="test", tasks=("semseg", "edge"))
    s = ds[0]
    assert ds.meta["num_classes"] == 37 and ds.meta["class_names"][36] == "bag"
    assert s["edge"][0, 2:-2, 4:5].sum() == 0 and s["edge"][0, 2:-2].sum(axis=1).tolist() == [2] * (H - 4)


def test_normals_from_depth_and_intrinsics(sun_root):
    n = open_dataset("sunrgbd", sun_root, split="train", tasks=("normals",))[0]["normals"].numpy()
    plane = np.broadcast_to(np.array([0.0, 0.0, -1.0])[:, None, None], (3, H - 3, W - 2))
    np.testing.assert_allclose(n[:, 2:-1, 1:-1], plane, atol=1e-6)  # constant 2 m: a fronto-parallel plane
    np.testing.assert_allclose(np.linalg.norm(n[:, 1, 1:-1], axis=0), 1.0, atol=1e-6)  # row 1: tilted, unit
    assert (n[:, 0] == 0).all() and (n[:, :, -1] == 0).all()  # border


def test_named_errors(sun_root):
    base = sun_root / TRAIN_DIR
    ds = open_dataset("sunrgbd", sun_root, split="train", tasks=("semseg", "normals"))
    (base / "intrinsics.txt").write_text("1 2 3")
    with pytest.raises(DataError, match="expected the 9 numbers"):
        ds[0]
    np.save(base / "label/label.npy", np.full((H, W), 38, np.uint8))
    with pytest.raises(DataError, match="label value 38"):
        ds[0]
    np.save(base / "label/label.npy", np.zeros((H, W), np.float32))
    with pytest.raises(DataError, match="expected a \\(H, W\\) integer label map"):
        ds[0]
    (base / "label/label.npy").unlink()
    with pytest.raises(DataError, match="no 37-class label map"):
        ds[0]
    Image.fromarray(np.zeros((H, W), np.uint8)).save(base / "depth_bfx/NYU0001.png")
    with pytest.raises(DataError, match="expected a 16-bit PNG"):
        open_dataset("sunrgbd", sun_root, split="train", tasks=("depth",))[0]
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(base / "image/extra.jpg")
    with pytest.raises(DataError, match="expected one"):
        open_dataset("sunrgbd", sun_root, split="train", tasks=("depth",))[0]
    with pytest.raises(DataError, match="unknown split"):
        open_dataset("sunrgbd", sun_root, split="val", tasks=("depth",))
    (sun_root / "test.txt").write_text("missing/folder\n")
    with pytest.raises(DataError, match="image folder not found"):
        open_dataset("sunrgbd", sun_root, split="test", tasks=("depth",))[0]
    split_file = sun_root / "SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat"
    scipy.io.savemat(split_file, {"trainvalsplit": np.zeros(1)})
    with pytest.raises(DataError, match="no key 'alltrain'"):
        open_dataset("sunrgbd", sun_root, split="train", tasks=("depth",))
    split_file.write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot decode"):
        open_dataset("sunrgbd", sun_root, split="train", tasks=("depth",))
    split_file.unlink()
    with pytest.raises(DataError, match="split file not found"):
        open_dataset("sunrgbd", sun_root, split="train", tasks=("depth",))


def test_detected_and_read_right_by_data_check(sun_root, tmp_path, capsys):
    """``mtdense data check ROOT`` recognises the layout, reads every split and finds nothing wrong."""
    from mtdense.cli.main import main

    assert main(["data", "check", str(sun_root), "--figure", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset sunrgbd at ") and "no problems found" in out and (tmp_path / "grid.png").is_file()
