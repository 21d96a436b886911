"""SUN RGB-D reader on a fixture in the official per-image folder layout: bit-rotated 16-bit depth PNGs
(written by an encoder independent of the reader's decoder), intrinsics.txt, 37-class label PNGs."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mtdense.data import open_dataset
from mtdense.errors import DataError

H, W = 8, 10
K = (529.5, 0.0, 365.0, 0.0, 529.5, 265.0, 0.0, 0.0, 1.0)


def write_png(path, a: np.ndarray) -> None:
    """PNG bytes of a uint8/uint16 (H, W) or (H, W, 3) array, filter 0, big-endian samples (PNG spec)."""
    a = np.ascontiguousarray(a)
    depth = 16 if a.dtype == np.uint16 else 8
    colour = 0 if a.ndim == 2 else 2
    rows = a.astype(">u2" if depth == 16 else np.uint8).reshape(a.shape[0], -1).view(np.uint8)
    raw = np.concatenate([np.zeros((a.shape[0], 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", a.shape[1], a.shape[0], depth, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def encode_depth(mm: np.ndarray) -> np.ndarray:
    """The SUN RGB-D storage of millimetres: rotate left by 3 bits on 16 bits (the reader rotates right)."""
    v = mm.astype(np.uint32)
    return (((v << 3) | (v >> 13)) & 0xFFFF).astype(np.uint16)


MM = np.array([0, 1234, 7999, 9000, 65535 >> 3], np.uint32)  # invalid, 1.234 m, 7.999 m, > cap, max


@pytest.fixture()
def sun_root(tmp_path):
    root = tmp_path / "SUNRGBD"
    for folder, name in (("kv1/NYUdata/NYU0001", "NYU0001"), ("realsense/lg/2014_10_24-15_31_49", "0000001")):
        base = root / folder
        for d in ("image", "depth_bfx", "depth"):
            (base / d).mkdir(parents=True)
        Image.fromarray(np.full((H, W, 3), 50, np.uint8)).save(base / "image" / f"{name}.jpg")
        mm = np.full((H, W), 2000, np.uint32)
        mm[0, :5] = MM
        write_png(base / "depth_bfx" / f"{name}.png", encode_depth(mm))
        (base / "intrinsics.txt").write_text(" ".join(f"{k:g}" for k in K[:3]) + "\n" + " ".join(map(str, K[3:])))
        lab = np.zeros((H, W), np.uint8)
        lab[:, 3:] = 1
        lab[:, 6:] = 37
        Image.fromarray(lab).save(base / "label37.png")
    (root / "train.txt").write_text("kv1/NYUdata/NYU0001\n")
    (root / "test.txt").write_text("realsense/lg/2014_10_24-15_31_49/\n")
    return root


def test_depth_bit_rotation_metres_and_cap(sun_root):
    ds = open_dataset("sunrgbd", sun_root, split="train", tasks=("depth",))
    d = ds[0]["depth"][0].numpy()
    np.testing.assert_allclose(d[0, :5], [0.0, 1.234, 7.999, 8.0, 8.0], rtol=1e-6)
    assert (d[1:] == np.float32(2.0)).all()


def test_labels_mapped_and_void_ignored(sun_root):
    ds = open_dataset("sunrgbd", sun_root, split="test", tasks=("semseg", "edge"))
    s = ds[0]
    np.testing.assert_array_equal(s["semseg"][0].numpy(), [255] * 3 + [0] * 3 + [36] * 4)
    assert ds.meta["num_classes"] == 37 and ds.meta["class_names"][36] == "bag"
    assert s["edge"][0, 2:-2, 4:5].sum() == 0 and s["edge"][0, 2:-2].sum(axis=1).tolist() == [2] * (H - 4)


def test_normals_from_depth_and_intrinsics(sun_root):
    n = open_dataset("sunrgbd", sun_root, split="train", tasks=("normals",))[0]["normals"].numpy()
    plane = np.broadcast_to(np.array([0.0, 0.0, -1.0])[:, None, None], (3, H - 3, W - 2))
    np.testing.assert_allclose(n[:, 2:-1, 1:-1], plane, atol=1e-6)  # constant 2 m: a fronto-parallel plane
    np.testing.assert_allclose(np.linalg.norm(n[:, 1, 1:-1], axis=0), 1.0, atol=1e-6)  # row 1: tilted, unit
    assert (n[:, 0] == 0).all() and (n[:, :, -1] == 0).all()  # border


def test_named_errors(sun_root):
    base = sun_root / "kv1/NYUdata/NYU0001"
    ds = open_dataset("sunrgbd", sun_root, split="train", tasks=("semseg", "normals"))
    (base / "intrinsics.txt").write_text("1 2 3")
    with pytest.raises(DataError, match="expected the 9 numbers"):
        ds[0]
    Image.fromarray(np.full((H, W), 38, np.uint8)).save(base / "label37.png")
    with pytest.raises(DataError, match="label value 38"):
        ds[0]
    (base / "label37.png").unlink()
    with pytest.raises(DataError, match="label37.png"):
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
