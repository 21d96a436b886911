"""Virtual KITTI 2 reader on a fixture in the release layout: colour-coded class PNGs, 16-bit depth PNGs in cm
(written by an encoder independent of the reader's decoder), and the frame-grouped write-once split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mtdense.data import open_dataset
from mtdense.data.vkitti2 import CLASS_COLOURS
from mtdense.errors import DataError

H, W = 6, 8
FRAMES = 10


COLOURS = [(90, 200, 255), (100, 60, 100), (255, 127, 80), (0, 0, 0), (0, 139, 139), (210, 0, 200), (80, 80, 80),
           (140, 140, 140)]  # fmt: skip
IDS = [1, 5, 12, 255, 13, 0, 10, 4]  # sky, road, car, undefined, van, terrain, misc, building


@pytest.fixture()
def vk_root(tmp_path, write_png):
    root = tmp_path / "vkitti2"
    for variation in ("clone", "fog"):
        for cam in ("Camera_0", "Camera_1"):
            base = root / "Scene01" / variation / "frames"
            for kind in ("rgb", "depth", "classSegmentation"):
                (base / kind / cam).mkdir(parents=True, exist_ok=True)
            for f in range(FRAMES):
                Image.fromarray(np.full((H, W, 3), 60, np.uint8)).save(base / "rgb" / cam / f"rgb_{f:05d}.jpg")
                cls = np.zeros((H, W, 3), np.uint8)
                cls[:] = np.array(COLOURS, np.uint8)[None]
                write_png(base / "classSegmentation" / cam / f"classgt_{f:05d}.png", cls)
                depth = np.full((H, W), 1234, np.uint16)
                depth[0, 0] = depth[3, 4] = 65535
                write_png(base / "depth" / cam / f"depth_{f:05d}.png", depth)
    return root


def test_colour_coded_classes(vk_root):
    ds = open_dataset("vkitti2", vk_root, split="train", tasks=("semseg",))
    np.testing.assert_array_equal(ds[0]["semseg"].numpy(), np.tile(IDS, (H, 1)))
    assert ds.meta["class_names"][12] == "car" and len(CLASS_COLOURS) == ds.meta["num_classes"] == 14


def test_depth_centimetres_and_far(vk_root):
    s = open_dataset("vkitti2", vk_root, split="val", tasks=("depth", "normals"))[0]
    d = s["depth"][0].numpy()
    assert d[0, 0] == 0.0 and d[3, 4] == 0.0 and (d[d > 0] == np.float32(12.34)).sum() == H * W - 2
    np.testing.assert_allclose(s["normals"][:, 2, 2].numpy(), [0, 0, -1], atol=1e-6)
    assert (s["normals"][:, 3, 3] == 0).all() and (s["normals"][:, 2, 4] == 0).all()  # next to far = invalid


def test_split_keeps_a_frame_together(vk_root):
    train = open_dataset("vkitti2", vk_root, split="train", tasks=("depth",)).ids
    val = open_dataset("vkitti2", vk_root, split="val", tasks=("depth",)).ids
    assert len(train) + len(val) == 2 * 2 * FRAMES and not set(train) & set(val)
    frames = lambda ids: {(i.split("/")[0], i.split("/")[3]) for i in ids}  # noqa: E731
    assert not frames(train) & frames(val) and len(frames(val)) == 2  # 20 % of the 10 frames
    assert len(val) == 8  # both variations and both cameras of those frames
    assert open_dataset("vkitti2", vk_root, split="val", tasks=("depth",)).ids == val


def test_named_errors(vk_root, write_png):
    ds = open_dataset("vkitti2", vk_root, split="train", tasks=("semseg",))
    scene, variation, cam, frame = ds.ids[0].split("/")
    path = vk_root / scene / variation / "frames/classSegmentation" / cam / f"classgt_{frame}.png"
    bad = np.zeros((H, W, 3), np.uint8)
    bad[2, 3] = (1, 2, 3)
    write_png(path, bad)
    with pytest.raises(DataError, match=r"colour \(1, 2, 3\) at \(row 2, col 3\)"):
        ds[0]
    path.unlink()
    with pytest.raises(DataError, match="class map not found"):
        ds[0]
    with pytest.raises(DataError, match="no frames found"):
        open_dataset("vkitti2", vk_root / "Scene01" / "clone", split="train", tasks=("semseg",))


def test_detected_and_read_right_by_data_check(vk_root, tmp_path, capsys):
    """``mtdense data check ROOT`` recognises the layout, reads every split and finds nothing wrong."""
    from mtdense.cli.main import main

    assert main(["data", "check", str(vk_root), "--figure", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset vkitti2 at ") and "no problems found" in out and (tmp_path / "grid.png").is_file()


def test_derived_normals_of_the_ground_point_up():
    """A ground plane 1.5 m below the camera (y down): z = 1.5·fy / (v − cy) below the horizon, no depth above.
    Its normal faces the camera and points up: (0, −1, 0); a wall x = 2 m right: (−1, 0, 0)."""
    from mtdense.data._geometry import normals_from_depth

    fx, fy, cx, cy = 50.0, 50.0, 15.5, 4.5
    v = np.arange(20, dtype=np.float64)[:, None] * np.ones((1, 32))
    ground = np.where(v > cy, 1.5 * fy / np.maximum(v - cy, 1e-9), 0.0)
    n = normals_from_depth(ground, fx=fx, fy=fy, cx=cx, cy=cy)
    np.testing.assert_allclose(n[7:-1, 1:-1].reshape(-1, 3), np.tile([0, -1, 0], ((20 - 8) * 30, 1)), atol=1e-6)
    assert (n[:6] == 0).all()  # above the horizon and next to it: no depth
    u = np.arange(32, dtype=np.float64)[None, :] * np.ones((20, 1))
    wall = np.where(u > cx, 2.0 * fx / np.maximum(u - cx, 1e-9), 0.0)
    n = normals_from_depth(wall, fx=fx, fy=fy, cx=cx, cy=cy)
    np.testing.assert_allclose(n[1:-1, 18:-1].reshape(-1, 3), np.tile([-1, 0, 0], (18 * 13, 1)), atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "name", "what"),
    [("rgb", "rgb_{}.jpg", "image"), ("depth", "depth_{}.png", "depth map"),
     ("classSegmentation", "classgt_{}.png", "class map")],
)  # fmt: skip
def test_each_missing_or_truncated_file_is_named(vk_root, write_png, kind, name, what):
    ds = open_dataset("vkitti2", vk_root, split="train", tasks=("semseg", "depth", "normals"))
    scene, variation, camera, frame = ds.ids[0].split("/")
    path = vk_root / scene / variation / "frames" / kind / camera / name.format(frame)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=f"cannot decode {what} {path}"):
        ds[0]
    path.unlink()
    with pytest.raises(DataError, match=f"{what} not found: {path}"):
        ds[0]
    if kind == "depth":
        write_png(path, np.full((H, W), 100, np.uint8))
        with pytest.raises(DataError, match="expected a 16-bit PNG, got 8-bit"):
            ds[0]
        write_png(path, np.full((H + 1, W), 100, np.uint16))
        with pytest.raises(DataError, match=r"expected shape \(6, 8\) to match the image, got \(7, 8\)"):
            ds[0]


# The 8 classes shared with Cityscapes (DenseMTL, Table 6), written out by hand from the VKITTI2 class names:
# road 0, building 1, pole 2, traffic light 3, traffic sign 4, tree/vegetation 5, sky 6, truck/car/van 7, else 255.
EIGHT = {"terrain": 255, "sky": 6, "tree": 5, "vegetation": 5, "building": 1, "road": 0, "guardrail": 255,
         "trafficsign": 4, "trafficlight": 3, "pole": 2, "misc": 255, "truck": 7, "car": 7, "van": 7}  # fmt: skip


def test_eight_class_protocol_maps_every_class(vk_root, write_png):
    """``vkitti2_8`` on a class map holding every colour of the release (and Undefined): each pixel's class."""
    colours = [c for _, c in CLASS_COLOURS] + [(0, 0, 0)]
    expected = [EIGHT[n] for n, _ in CLASS_COLOURS] + [255]
    pos = np.arange(H * W).reshape(H, W) % len(colours)
    ds = open_dataset("vkitti2_8", vk_root, split="train", tasks=("semseg", "edge"))
    scene, variation, cam, frame = ds.ids[0].split("/")
    write_png(vk_root / scene / variation / "frames/classSegmentation" / cam / f"classgt_{frame}.png",
              np.array(colours, np.uint8)[pos])  # fmt: skip
    sample = ds[0]
    np.testing.assert_array_equal(sample["semseg"].numpy(), np.array(expected)[pos])
    assert ds.meta["num_classes"] == 8 and ds.meta["dataset"] == "vkitti2_8"
    assert ds.meta["class_names"] == ["road", "building", "pole", "traffic light", "traffic sign", "vegetation",
                                      "sky", "vehicle"]  # fmt: skip
    assert ds.meta["palette"][7] == [0, 0, 142]  # Cityscapes' car colour for "vehicle"
    # the 14-class reader of the same file is unchanged
    full = open_dataset("vkitti2", vk_root, split="train", tasks=("semseg",))[0]["semseg"].numpy()
    np.testing.assert_array_equal(full, np.array([*range(14), 255])[pos])


def test_eight_class_protocol_shares_the_split_and_cityscapes8_classes(vk_root):
    """Both protocols read one split file; ``vkitti2_8``'s classes are ``cityscapes8``'s, so the trainer's
    label-space check passes for the pair and fails for the 14-class reader."""
    from mtdense.data._splits import SPLIT_FILE
    from mtdense.data.cityscapes import protocol
    from mtdense.data.vkitti2 import CITYSCAPES8_GROUPS
    from mtdense.engine.setup import check_label_space
    from mtdense.errors import ConfigError

    for split in ("train", "val"):
        eight = open_dataset("vkitti2_8", vk_root, split=split, tasks=("depth",))
        assert eight.ids == open_dataset("vkitti2", vk_root, split=split, tasks=("depth",)).ids
    assert [p.name for p in vk_root.glob("*.json")] == [SPLIT_FILE]
    _, names, palette = protocol(8)
    assert [n for n, _ in CITYSCAPES8_GROUPS] == names and eight.meta["palette"] == palette.tolist()
    cs8 = {"num_classes": 8, "class_names": names}
    check_label_space(eight.meta, cs8, what="uda.target")
    full = open_dataset("vkitti2", vk_root, split="val", tasks=("semseg",)).meta
    with pytest.raises(ConfigError, match="uda.target: its dataset has classes 8"):
        check_label_space(full, cs8, what="uda.target")


def test_data_check_reads_the_eight_class_protocol(vk_root, tmp_path, capsys):
    from mtdense.cli.main import main

    assert main(["data", "check", str(vk_root), "--dataset", "vkitti2_8", "--figure", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset vkitti2_8 at ") and "no problems found" in out
    assert main(["data", "check", str(vk_root), "--dataset", "vkitti2_9"]) == 2
    assert "unknown dataset 'vkitti2_9'" in capsys.readouterr().err
