"""PASCAL-Context multi-task reader on a fixture written in the release's exact formats.

JPEG images, MATLAB v5 ``LabelMap`` and PASCAL-Part ``anno`` structs (scipy.io.savemat), a palette PNG for
semseg (with a fallback id under ``semseg/pascal-context``), RGB normals and grey saliency PNGs.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from mtdense.data import open_dataset
from mtdense.data.pascal import NORMALS_VALID_CONTEXT_IDS, PART_GROUPS
from mtdense.errors import ConfigError, DataError

H, W = 12, 16
WALL, SKY = 440, 360  # PASCAL-Context ids: wall exists in NYU (normals kept), sky does not


def _anno(objects: list[tuple[int, np.ndarray, list[tuple[str, np.ndarray]]]]) -> dict:
    """A PASCAL-Part ``anno`` struct: objects (class_ind, mask, [(part_name, mask)])."""
    objs = np.empty((1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")])
    for k, (cls, mask, parts) in enumerate(objects):
        if parts:
            arr = np.empty((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
            for j, (name, pmask) in enumerate(parts):
                arr[0, j] = (name, pmask.astype(np.uint8))
        else:
            arr = np.zeros((0, 0))
        objs[0, k] = ("obj", np.array([[cls]], np.uint8), mask.astype(np.uint8), arr)
    anno = np.empty((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = ("x", objs)
    return {"anno": anno}


def _masks():
    head = np.zeros((H, W), bool)
    head[1:3, 2:4] = True
    hand = np.zeros((H, W), bool)
    hand[4, 2] = True
    person = np.zeros((H, W), bool)
    person[0:6, 1:5] = True
    other_person = np.zeros((H, W), bool)
    other_person[8:10, 10:12] = True
    car = np.zeros((H, W), bool)
    car[10:12, 0:3] = True
    return head, hand, person, other_person, car


@pytest.fixture()
def pascal_root(tmp_path):
    root = tmp_path / "PASCAL_MT"
    for d in ("JPEGImages", "ImageSets/Context", "pascal-context/trainval", "semseg/VOC12", "semseg/pascal-context",
              "human_parts", "normals_distill", "sal_distill"):  # fmt: skip
        (root / d).mkdir(parents=True)
    (root / "ImageSets/Context/train.txt").write_text("2008_000001\n2008_000002\n")
    (root / "ImageSets/Context/val.txt").write_text("2008_000003\n")
    rng = np.random.default_rng(0)
    head, hand, person, other_person, car = _masks()
    for sid in ("2008_000001", "2008_000002", "2008_000003"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{sid}.jpg")
        labelmap = np.full((H, W), WALL, np.uint16)
        labelmap[:, W // 2 :] = SKY
        scipy.io.savemat(root / "pascal-context/trainval" / f"{sid}.mat", {"LabelMap": labelmap})
        seg = np.zeros((H, W), np.uint8)
        seg[person] = 15
        seg[0, :] = 255
        img = Image.fromarray(seg, mode="P")
        img.putpalette([0] * 768)
        folder = "semseg/VOC12" if sid != "2008_000002" else "semseg/pascal-context"
        img.save(root / folder / f"{sid}.png")
        normals = np.zeros((H, W, 3), np.uint8)
        normals[...] = (255, 0, 128)  # stored (1, -1, 0.0039) -> camera (1, -1, -0.0039) / norm
        Image.fromarray(normals).save(root / "normals_distill" / f"{sid}.png")
        sal = np.zeros((H, W), np.uint8)
        sal[:, 0] = 127
        sal[:, 1] = 128
        sal[:, 2:4] = 255
        Image.fromarray(sal).save(root / "sal_distill" / f"{sid}.png")
    scipy.io.savemat(
        root / "human_parts/2008_000001.mat",
        _anno([(15, person, [("head", head), ("lhand", hand)]), (15, other_person, []), (7, car, [])]),
    )
    scipy.io.savemat(root / "human_parts/2008_000002.mat", _anno([(7, car, [])]))
    scipy.io.savemat(root / "human_parts/2008_000003.mat", _anno([(15, person, [("torso", person)])]))
    return root


ALL = ("semseg", "parts", "saliency", "normals", "edge")


def test_samples_follow_the_data_contract(pascal_root):
    ds = open_dataset("pascal_mt", pascal_root, split="train", tasks=ALL)
    assert len(ds) == 2 and ds.ids == ["2008_000001", "2008_000002"]
    s = ds[0]
    assert s["image"].shape == (3, H, W) and s["image"].dtype.is_floating_point
    assert 0 <= float(s["image"].min()) and float(s["image"].max()) <= 1
    assert s["semseg"].dtype.is_floating_point is False and s["semseg"].shape == (H, W)
    assert s["parts"].shape == (H, W) and s["saliency"].shape == (1, H, W)
    assert s["normals"].shape == (3, H, W) and s["edge"].shape == (1, H, W)
    assert ds.meta["num_classes"] == 21 and len(ds.meta["parts_classes"]) == 7


def test_semseg_values_and_fallback_folder(pascal_root):
    ds = open_dataset("pascal_mt", pascal_root, split="train", tasks=("semseg",))
    _, _, person, _, _ = _masks()
    for i in range(2):  # the second id only exists under semseg/pascal-context
        seg = ds[i]["semseg"].numpy()
        expected = np.where(person, 15, 0)
        expected[0, :] = 255
        np.testing.assert_array_equal(seg, expected)


def test_human_parts_groups_ignore_and_missing_person(pascal_root):
    ds = open_dataset("pascal_mt", pascal_root, split="train", tasks=("parts",))
    head, hand, _, other_person, _ = _masks()
    parts = ds[0]["parts"].numpy()
    expected = np.zeros((H, W), np.int64)
    expected[head] = PART_GROUPS["head"]  # 1
    expected[hand] = PART_GROUPS["lhand"]  # 4: lower arms + hands
    expected[other_person] = 255  # a person without part annotation: ignore, not background
    np.testing.assert_array_equal(parts, expected)
    assert (ds[1]["parts"] == 255).all()  # no person: the missing target, skipped by loss and meter
    val = open_dataset("pascal_mt", pascal_root, split="val", tasks=("parts",))
    _, _, person, _, _ = _masks()
    np.testing.assert_array_equal(val[0]["parts"].numpy(), np.where(person, 2, 0))


def test_saliency_threshold(pascal_root):
    sal = open_dataset("pascal_mt", pascal_root, split="train", tasks=("saliency",))[0]["saliency"][0].numpy()
    assert (sal[:, 0] == 0).all()  # 127/255 < 0.5
    assert (sal[:, 1] == 1).all()  # 128/255 > 0.5
    assert (sal[:, 2:4] == 1).all() and (sal[:, 4:] == 0).all()


def test_normals_decoded_converted_unit_and_masked(pascal_root):
    n = open_dataset("pascal_mt", pascal_root, split="train", tasks=("normals",))[0]["normals"].numpy()
    assert WALL in NORMALS_VALID_CONTEXT_IDS and SKY not in NORMALS_VALID_CONTEXT_IDS
    stored = np.array([1.0, -1.0, 2 * 128 / 255 - 1])
    cam = stored * np.array([1, 1, -1])  # NYU colouring (z towards the viewer) -> camera frame (z forward)
    cam /= np.linalg.norm(cam)
    np.testing.assert_allclose(n[:, :, : W // 2].reshape(3, -1).T, np.tile(cam, (H * W // 2, 1)), atol=1e-6)
    assert (n[:, :, W // 2 :] == 0).all()  # sky: not an NYU class, no normal


def test_edges_from_labelmap(pascal_root):
    e = open_dataset("pascal_mt", pascal_root, split="train", tasks=("edge",))[0]["edge"][0].numpy()
    # the Laplacian is non-zero on columns W/2-1 and W/2 only; thinning keeps a one-pixel line
    assert set(np.unique(e)) <= {0.0, 1.0}
    assert e[:, : W // 2 - 1].sum() == 0 and e[:, W // 2 + 1 :].sum() == 0
    assert (e[1:-1, W // 2 - 1 : W // 2 + 1].sum(axis=1) == 1).all()


def test_named_errors(pascal_root):
    with pytest.raises(ConfigError, match="no target for task"):
        open_dataset("pascal_mt", pascal_root, split="train", tasks=("depth",))
    with pytest.raises(DataError, match="unknown split"):
        open_dataset("pascal_mt", pascal_root, split="test", tasks=("semseg",))
    (pascal_root / "human_parts/2008_000002.mat").unlink()
    ds = open_dataset("pascal_mt", pascal_root, split="train", tasks=("parts",))
    with pytest.raises(DataError, match="2008_000002.mat"):
        ds[1]
    scipy.io.savemat(pascal_root / "pascal-context/trainval/2008_000001.mat", {"Labels": np.zeros((H, W))})
    with pytest.raises(DataError, match="no key 'LabelMap'"):
        open_dataset("pascal_mt", pascal_root, split="train", tasks=("edge",))[0]
    (pascal_root / "pascal-context/trainval/2008_000001.mat").write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(DataError, match="cannot decode"):
        open_dataset("pascal_mt", pascal_root, split="train", tasks=("edge",))[0]
    seg = np.full((H, W), 30, np.uint8)
    Image.fromarray(seg).save(pascal_root / "semseg/VOC12/2008_000001.png")
    with pytest.raises(DataError, match="label value 30"):
        open_dataset("pascal_mt", pascal_root, split="train", tasks=("semseg",))[0]
    head, *_ = _masks()
    scipy.io.savemat(pascal_root / "human_parts/2008_000003.mat", _anno([(15, head, [("tail", head)])]))
    with pytest.raises(DataError, match="unknown person part 'tail'"):
        open_dataset("pascal_mt", pascal_root, split="val", tasks=("parts",))[0]
    (pascal_root / "ImageSets/Context/val.txt").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        open_dataset("pascal_mt", pascal_root, split="val", tasks=("parts",))


@pytest.mark.slow  # a short training run: seconds
def test_recipe_trains_parts_and_saliency_through_the_cli(pascal_root, tmp_path):
    """The shipped PASCAL recipe (rotation ±20°, scale 0.75-1.25, flips, the paper's loss weights) on the
    fixture, shrunk to a tiny model: the five tasks train and evaluate, parts and saliency included."""
    import json
    from importlib.resources import files

    from mtdense.cli.main import main

    cfg = files("mtdense") / "configs" / "pascal" / "mtl_hrnet18s.yaml"
    out = tmp_path / "run"
    overrides = [
        f"data.root={pascal_root}", "data.crop_size=[16,16]", "data.eval_size=[16,16]", "data.num_workers=0",
        "data.cache=true", "model.backbone.name=resnet18", "train.max_steps=2", "train.batch_size=2",
        "train.eval_every=0", "train.checkpoint_every=0", "train.channels_last=false", "eval.batch_size=1",
        "eval.edge_exact=false",
    ]  # fmt: skip
    assert main(["train", str(cfg), "--out", str(out), *overrides]) == 0
    results = json.loads(next(out.rglob("results.json")).read_text())
    assert sorted(results) == ["edge", "normals", "parts", "saliency", "semseg"]
    assert 0 <= results["parts"]["mIoU"] <= 100 and 0 <= results["saliency"]["mIoU"] <= 100


def test_label_edges_match_opencvs_laplacian():
    """The Laplacian of :func:`label_edges` is OpenCV's ``Laplacian(L, CV_64F)`` (ksize 1, mirrored borders),
    the operator of the ASTMT edge ground truth; both are thinned by the same MATLAB-compatible ``thin``."""
    import cv2

    from mtdense.data._readers import label_edges
    from mtdense.metrics._thinning import thin

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (9, 11)).repeat(3, axis=0).repeat(2, axis=1)
    reference = thin(cv2.Laplacian(labels.astype(np.float64), cv2.CV_64F) != 0)
    np.testing.assert_array_equal(label_edges(labels), reference.astype(np.uint8))


def test_detected_and_read_right_by_data_check(pascal_root, tmp_path, capsys):
    """``mtdense data check ROOT`` recognises the layout, reads every split and finds nothing wrong."""
    from mtdense.cli.main import main

    assert main(["data", "check", str(pascal_root), "--figure", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset pascal_mt at ") and "no problems found" in out and (tmp_path / "grid.png").is_file()


@pytest.mark.parametrize(
    ("signs", "problem"),
    [((1, 1, -1), None), ((1, 1, 1), "face the camera"), ((-1, -1, -1), "horizontal surfaces face up")],
)
def test_data_check_verifies_the_normals_axis_convention(pascal_root, tmp_path, monkeypatch, signs, problem):
    """Release-coloured normals of a wall facing the camera (128, 128, 255) over a floor facing up (128, 0, 160):
    read with the reader's RELEASE_TO_CAMERA the check passes; with z kept (no conversion), or x and y turned the
    other way (the other reading ASTMT's rotation allows, with z negated), it fails."""
    import mtdense.data.pascal as pascal
    from mtdense.data.check import check_dataset

    for sid in ("2008_000001", "2008_000002", "2008_000003"):
        normals = np.zeros((H, W, 3), np.uint8)
        normals[: H // 2] = (128, 128, 255)
        normals[H // 2 :] = (128, 0, 160)  # the floor, seen from above: tilted towards the camera
        Image.fromarray(normals).save(pascal_root / "normals_distill" / f"{sid}.png")
    monkeypatch.setattr(pascal, "RELEASE_TO_CAMERA", np.array(signs, np.float32))
    report = check_dataset(pascal_root, "pascal_mt", figure=tmp_path / "f.png")
    normals_problems = [p for p in report.problems if "normals" in p]
    if problem is None:
        assert not normals_problems, normals_problems
    else:
        assert normals_problems and all(problem in p for p in normals_problems), normals_problems


@pytest.mark.parametrize(
    ("rel", "what"),
    [("JPEGImages/{}.jpg", "image"), ("sal_distill/{}.png", "saliency map"), ("normals_distill/{}.png", "image"),
     ("pascal-context/trainval/{}.mat", "LabelMap file"), ("human_parts/{}.mat", "anno file")],
)  # fmt: skip
def test_each_missing_file_is_named(pascal_root, rel, what):
    ds = open_dataset("pascal_mt", pascal_root, split="val", tasks=ALL)
    path = pascal_root / rel.format(ds.ids[0])
    path.unlink()
    with pytest.raises(DataError, match=f"{what} not found: {path}"):
        ds[0]
