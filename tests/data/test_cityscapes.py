"""Cityscapes reader on a fixture in the official formats: 8-bit label-id PNGs, 16-bit disparity PNGs
(written by a PNG encoder independent of the reader's OpenCV decoder) and camera JSON files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mtdense.data import open_dataset
from mtdense.data.cityscapes import LABELS, protocol
from mtdense.errors import DataError

H, W = 10, 12
BASELINE, FX, FY, U0, V0 = 0.209313, 2262.52, 2265.3017905988, 1096.98, 513.137
STEM = "aachen/aachen_000000_000019"


LABEL_IDS = np.array([7, 22, 27, 9, 0, 33], np.uint8)  # road, terrain, truck, parking, unlabeled, bicycle


@pytest.fixture()
def cs_root(tmp_path, write_png):
    root = tmp_path / "cityscapes"
    for kind in ("leftImg8bit", "gtFine", "disparity", "camera"):
        (root / kind / "train" / "aachen").mkdir(parents=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / f"leftImg8bit/train/{STEM}_leftImg8bit.png")
    ids = np.tile(np.repeat(LABEL_IDS, 2), (H, 1))  # 6 vertical stripes, 2 px each
    Image.fromarray(ids).save(root / f"gtFine/train/{STEM}_gtFine_labelIds.png")
    disp = np.full((H, W), 257 + 256 * 9, np.uint16)  # d = (p - 1) / 256 = 10 px everywhere ...
    disp[0, 0], disp[0, 1], disp[5, 5] = 0, 1, 257  # ... but invalid, d = 0 (infinitely far), d = 1 px
    write_png(root / f"disparity/train/{STEM}_disparity.png", disp)
    cam = {"extrinsic": {"baseline": BASELINE, "pitch": 0.0}, "intrinsic": {"fx": FX, "fy": FY, "u0": U0, "v0": V0}}
    (root / f"camera/train/{STEM}_camera.json").write_text(json.dumps(cam))
    return root


def test_label_table_matches_cityscapesscripts():
    cs = pytest.importorskip("cityscapesscripts.helpers.labels")
    pkg = [(lab.name, lab.id, lab.trainId, lab.categoryId, lab.ignoreInEval, tuple(lab.color))
           for lab in cs.labels if lab.id >= 0]  # fmt: skip
    assert [tuple(lab) for lab in LABELS] == pkg


@pytest.mark.parametrize(
    ("name", "expected", "num_classes"),
    [
        ("cityscapes", [0, 9, 14, 255, 255, 18], 19),
        ("cityscapes16", [0, 255, 255, 255, 255, 15], 16),
        ("cityscapes7", [0, 3, 6, 255, 255, 6], 7),
        ("cityscapes8", [0, 255, 255, 255, 255, 255], 8),
    ],
)
def test_protocols(cs_root, name, expected, num_classes):
    ds = open_dataset(name, cs_root, split="train", tasks=("semseg",))
    assert ds.ids == [STEM] and ds.meta["num_classes"] == num_classes == len(ds.meta["class_names"])
    np.testing.assert_array_equal(ds[0]["semseg"].numpy()[0], np.repeat(expected, 2))


def test_protocol_names():
    assert protocol(16)[1] == ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                               "traffic sign", "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle",
                               "bicycle"]  # fmt: skip
    assert protocol(7)[1] == ["flat", "construction", "object", "nature", "sky", "human", "vehicle"]


def test_depth_from_disparity(cs_root):
    depth = open_dataset("cityscapes", cs_root, split="train", tasks=("depth",))[0]["depth"][0].numpy()
    assert depth[0, 0] == 0 and depth[0, 1] == 0  # p = 0 invalid; p = 1 gives d = 0
    assert depth[5, 5] == pytest.approx(BASELINE * FX / 1.0, rel=1e-6)
    assert depth[9, 9] == pytest.approx(BASELINE * FX / 10.0, rel=1e-6)


def test_normals_from_depth_face_the_camera(cs_root):
    n = open_dataset("cityscapes", cs_root, split="train", tasks=("normals",))[0]["normals"].numpy()
    assert (n[:, 0, :] == 0).all() and (n[:, :, -1] == 0).all()  # border: no neighbours
    assert (n[:, 1, 1] == 0).all()  # next to an invalid pixel
    np.testing.assert_allclose(n[:, 8, 8], [0.0, 0.0, -1.0], atol=1e-6)  # a plane at constant depth


def test_edges_follow_the_protocol_labels(cs_root):
    e = open_dataset("cityscapes16", cs_root, split="train", tasks=("edge",))[0]["edge"][0].numpy()
    # 16-class row: 0 0 | 255 x6 | 255 255 | 15 15: two label changes, one thin line each
    assert e[:, 4:8].sum() == 0 and e[3:-3, 1:3].sum(axis=1).tolist() == [1] * (H - 6)


def test_named_errors(cs_root):
    cam = cs_root / f"camera/train/{STEM}_camera.json"
    cam.write_text(json.dumps({"extrinsic": {}, "intrinsic": {"fx": FX, "fy": FY, "u0": U0, "v0": V0}}))
    ds = open_dataset("cityscapes", cs_root, split="train", tasks=("depth",))
    with pytest.raises(DataError, match="missing key 'baseline'"):
        ds[0]
    cam.write_text("{not json")
    with pytest.raises(DataError, match="cannot decode camera file"):
        ds[0]
    cam.unlink()
    with pytest.raises(DataError, match="camera file not found"):
        ds[0]
    Image.fromarray(np.zeros((H, W), np.uint8)).save(cs_root / f"disparity/train/{STEM}_disparity.png")
    cam.write_text(json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 1, "fy": 1, "u0": 0, "v0": 0}}))
    with pytest.raises(DataError, match="expected a 16-bit PNG, got 8-bit"):
        ds[0]
    Image.fromarray(np.full((H, W), 40, np.uint8)).save(cs_root / f"gtFine/train/{STEM}_gtFine_labelIds.png")
    with pytest.raises(DataError, match="label id 40"):
        open_dataset("cityscapes", cs_root, split="train", tasks=("semseg",))[0]
    with pytest.raises(DataError, match="image folder not found"):
        open_dataset("cityscapes", cs_root, split="val", tasks=("semseg",))
    (cs_root / f"disparity/train/{STEM}_disparity.png").write_bytes(b"\x89PNG\r\n\x1a\n trunc")
    with pytest.raises(DataError, match="cannot decode disparity map"):
        ds[0]


def test_detected_and_read_right_by_data_check(cs_root, tmp_path, capsys):
    """``mtdense data check ROOT`` recognises the layout, reads every split and finds nothing wrong."""
    from mtdense.cli.main import main

    assert main(["data", "check", str(cs_root), "--figure", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset cityscapes at ") and "no problems found" in out and (tmp_path / "grid.png").is_file()


@pytest.mark.parametrize(
    ("rel", "what"),
    [
        (f"gtFine/train/{STEM}_gtFine_labelIds.png", "label map not found"),
        (f"disparity/train/{STEM}_disparity.png", "disparity map not found"),
        (f"camera/train/{STEM}_camera.json", "camera file not found"),
    ],
)
def test_each_missing_file_is_named(cs_root, rel, what):
    ds = open_dataset("cityscapes", cs_root, split="train", tasks=("semseg", "depth"))
    (cs_root / rel).unlink()
    with pytest.raises(DataError, match=f"{what}: {cs_root / rel}"):
        ds[0]


# The 8 classes shared with Virtual KITTI 2 (DenseMTL, Table 6), written out by hand: label id -> class.
EIGHT = {7: 0, 11: 1, 17: 2, 19: 3, 20: 4, 21: 5, 23: 6, 26: 7, 28: 7}


def test_eight_class_protocol_maps_every_label_id(cs_root):
    """``cityscapes8`` on a gtFine label map holding every id 0..33: road, building, pole, traffic light,
    traffic sign, vegetation, sky, vehicle (car and bus); every other id (truck, train, terrain, ...) is 255."""
    ids = (np.arange(H * W) % 34).reshape(H, W).astype(np.uint8)
    Image.fromarray(ids).save(cs_root / f"gtFine/train/{STEM}_gtFine_labelIds.png")
    ds = open_dataset("cityscapes8", cs_root, split="train", tasks=("semseg",))
    expected = np.vectorize(lambda i: EIGHT.get(int(i), 255))(ids)
    np.testing.assert_array_equal(ds[0]["semseg"].numpy(), expected)
    assert ds.meta["dataset"] == "cityscapes8" and ds.meta["num_classes"] == 8
    assert ds.meta["class_names"] == ["road", "building", "pole", "traffic light", "traffic sign", "vegetation",
                                      "sky", "vehicle"]  # fmt: skip
    assert ds.meta["palette"][0] == [128, 64, 128] and ds.meta["palette"][7] == [0, 0, 142]  # road; car's colour
    table = {lab.name: lab.id for lab in LABELS}
    assert [table[n] for n in ("road", "car", "bus", "truck")] == [7, 26, 28, 27]  # the ids the map above uses


def test_data_check_reads_the_eight_class_protocol(cs_root, tmp_path, capsys):
    from mtdense.cli.main import main

    assert main(["data", "check", str(cs_root), "--dataset", "cityscapes8", "--figure", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset cityscapes8 at ") and "no problems found" in out
