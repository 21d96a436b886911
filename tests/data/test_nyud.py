"""NYUD-MT reader: label / depth / edge conventions, meta.json and the completion check, bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtdense.data._io import encode_png, read_image, read_label_png, read_npy
from mtdense.data.nyud import NYU40_CLASS_NAMES, NYUDMT
from mtdense.errors import ConfigError, DataError

H, W = 4, 5


def _write_sample(root, sid, *, image, seg, depth, normals, edge, ext=".png"):
    Image.fromarray(image).save(root / "images" / f"{sid}{ext}")
    Image.fromarray(seg).save(root / "segmentation" / f"{sid}.png")
    np.save(root / "depth" / f"{sid}.npy", depth)
    np.save(root / "normals" / f"{sid}.npy", normals)
    np.save(root / "edge" / f"{sid}.npy", edge)


@pytest.fixture
def nyud(tmp_path):
    """Two hand-made samples: ``a`` as .png with known values, ``b`` as .jpg (lossy, only shapes)."""
    root = tmp_path / "NYUD_MT"
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    seg = np.zeros((H, W), np.uint8)
    seg[0, :3] = [0, 1, 40]  # void, first class, last class
    depth = np.full((H, W), 2.5, np.float32)
    depth[1, 0], depth[1, 1], depth[1, 2] = np.nan, -1.0, 0.0
    normals = np.zeros((H, W, 3), np.float32)
    normals[..., 2] = -1.0
    normals[2, 0] = [np.inf, 0, 0]
    edge = np.zeros((H, W), np.float32)
    edge[3, :3] = [0.49, 0.5, 1.0]
    _write_sample(root, "a", image=image, seg=seg, depth=depth, normals=normals, edge=edge)
    _write_sample(root, "b", image=image, seg=seg, depth=depth, normals=normals, edge=edge, ext=".jpg")
    (root / "gt_sets" / "train.txt").write_text("a\nb\n")
    (root / "gt_sets" / "val.txt").write_text("b\n\n")
    (root / "meta.json").write_text(json.dumps({"num_classes": 40}))
    return root, image


def test_sample_follows_the_data_contract(nyud):
    """Void 0 → 255, k → k − 1 (so 1 → 0 and 40 → 39); NaN / negative depth → 0; non-finite normal
    components → 0; edges are ``>= 0.5`` (0.49 → 0, 0.5 → 1); image / 255 as float in (3, H, W)."""
    root, image = nyud
    ds = NYUDMT(root, "train")
    assert len(ds) == 2 and ds.num_classes == 40 and ds.class_names == NYU40_CLASS_NAMES
    s = ds[0]
    assert s["meta"] == {"id": "a", "index": 0}
    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
    torch.testing.assert_close(s["image"], torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    assert s["semseg"].dtype == torch.int64
    assert s["semseg"][0, :3].tolist() == [255, 0, 39]
    assert (s["semseg"][1:] == 255).all()
    assert s["depth"].shape == (1, H, W)
    assert s["depth"][0, 1, :3].tolist() == [0.0, 0.0, 0.0]
    assert s["depth"][0, 0, 0].item() == 2.5
    assert s["normals"].shape == (3, H, W)
    assert s["normals"][:, 2, 0].tolist() == [0.0, 0.0, 0.0]
    assert s["normals"][:, 0, 0].tolist() == [0.0, 0.0, -1.0]
    assert s["edge"].shape == (1, H, W)
    assert s["edge"][0, 3, :3].tolist() == [0.0, 1.0, 1.0]
    jpg = ds[1]  # .jpg image found when there is no .png
    assert jpg["image"].shape == (3, H, W) and jpg["meta"]["id"] == "b"
    assert NYUDMT(root, "val").ids == ["b"]  # blank lines ignored


def test_task_subset_and_meta_json(nyud):
    root, _ = nyud
    meta = {
        "num_classes": 41,
        "class_names": [f"c{k}" for k in range(41)],
        "palette": [[k, k, k] for k in range(41)],
    }
    (root / "meta.json").write_text(json.dumps(meta))
    ds = NYUDMT(root, "train", tasks=("depth",))
    assert set(ds[0]) == {"image", "depth", "meta"}
    assert ds.num_classes == 41 and ds.class_names[40] == "c40"
    assert ds.palette.shape == (41, 3) and ds.palette.dtype == np.uint8


def test_missing_paths_name_the_culprit(nyud, tmp_path):
    root, _ = nyud
    with pytest.raises(DataError, match="dataset folder not found.*nowhere"):
        NYUDMT(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"split list not found.*gt_sets/test\.txt"):
        NYUDMT(root, "test")
    (root / "gt_sets" / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        NYUDMT(root, "empty")
    with pytest.raises(ConfigError, match="unknown NYUD-MT task"):
        NYUDMT(root, tasks=("semseg", "saliency"))
    ds = NYUDMT(root)
    (root / "depth" / "a.npy").unlink()
    with pytest.raises(DataError, match=r"not found.*depth/a\.npy"):
        ds[0]
    (root / "images" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"image not found.*images/b"):
        ds[1]
    with pytest.raises(IndexError):
        ds[2]


def test_corrupt_files_name_the_file(nyud):
    root, _ = nyud
    ds = NYUDMT(root)
    png = root / "images" / "a.png"
    png.write_bytes(png.read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match=r"cannot decode image .*images/a\.png"):
        ds[0]
    (root / "images" / "b.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"images/b\.jpg"):
        ds[1]


def test_bad_values_and_shapes_are_rejected(nyud):
    root, image = nyud
    ds = NYUDMT(root)
    Image.fromarray(np.full((H, W), 41, np.uint8)).save(root / "segmentation" / "a.png")
    with pytest.raises(DataError, match=r"segmentation/a\.png: label value 41 exceeds num_classes = 40"):
        ds[0]
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "segmentation" / "a.png")
    np.save(root / "normals" / "a.npy", np.zeros((H, W), np.float32))
    with pytest.raises(DataError, match=r"normals/a\.npy: expected shape \(4, 5, 3\)"):
        ds[0]
    np.save(root / "normals" / "a.npy", np.zeros((H, W, 3), np.float32))
    (root / "depth" / "a.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"cannot decode array file .*depth/a\.npy"):
        ds[0]
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "segmentation" / "a.png")
    with pytest.raises(DataError, match="single-channel"):
        read_label_png(root / "segmentation" / "a.png")
    (root / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json"):
        NYUDMT(root)


def test_missing_meta_json_is_an_error_that_says_what_to_do(nyud):
    root, _ = nyud
    (root / "meta.json").unlink()
    with pytest.raises(DataError, match=r"has no meta\.json.*num_classes"):
        NYUDMT(root)
    (root / "meta.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"meta\.json: expected a JSON object, got list"):
        NYUDMT(root)
    # no class count: no 40-class default for semseg; depth alone needs none
    (root / "meta.json").write_text(json.dumps({"class_names": ["a"]}))
    with pytest.raises(DataError, match=r"meta\.json: no 'num_classes', needed to read semseg labels"):
        NYUDMT(root)
    assert NYUDMT(root, tasks=("depth",))[0]["depth"].shape == (1, H, W)


def test_half_rendered_synthetic_folder_is_refused(tmp_path):
    """The writer records each split's count in meta.json (written last); a folder whose gt_sets or files
    disagree with it is refused with the counts, the generator version or the first missing file."""
    from mtdense.data.synthetic import GENERATOR_VERSION, write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "s", train=3, val=2, size=(16, 16), progress=False, workers=1)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["splits"] == {"train": 3, "val": 2} and meta["generator_version"] == GENERATOR_VERSION
    assert not list(root.glob(".meta.json*"))  # the temporary file was renamed over meta.json
    assert len(NYUDMT(root, "train")) == 3
    (root / "gt_sets" / "train.txt").write_text("train_000000\ntrain_000001\n")
    with pytest.raises(DataError, match=rf"2 ids, but .*meta\.json records 3 .*version {GENERATOR_VERSION}"):
        NYUDMT(root, "train")
    (root / "depth" / "val_000001.npy").unlink()
    assert len(NYUDMT(root, "val", tasks=("semseg",))) == 2  # depth is not needed
    with pytest.raises(DataError, match=r"depth: 1 of the 2 val samples .* missing \(first: val_000001\)"):
        NYUDMT(root, "val", tasks=("depth",))


def test_png_encoder_round_trips_through_pillow(tmp_path):
    """encode_png must produce standard PNGs: Pillow decodes them to the same arrays (RGB and grey,
    including wrap-around of the Sub filter on random data)."""
    rng = np.random.default_rng(1)
    for shape in ((7, 9, 3), (5, 11), (1, 1, 3)):
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        back = np.asarray(Image.open(io.BytesIO(encode_png(a))))
        np.testing.assert_array_equal(back, a)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2), np.float32))
    p = tmp_path / "x.npy"
    np.save(p, np.arange(3))
    np.testing.assert_array_equal(read_npy(p), np.arange(3))
    q = tmp_path / "x.png"
    Image.fromarray(np.zeros((2, 2), np.uint8)).convert("L").save(q)
    assert read_image(q).shape == (2, 2, 3)  # grey converted to RGB
