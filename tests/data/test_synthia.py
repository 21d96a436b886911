"""SYNTHIA-RAND-CITYSCAPES reader on a fixture of 16-bit RGB label PNGs and 16-bit depth PNGs (written by an
encoder independent of the reader's OpenCV decoder), and its write-once seeded train/val split."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mtdense.data import open_dataset
from mtdense.data._splits import SPLIT_FILE
from mtdense.errors import ConfigError, DataError

H, W = 6, 8
N = 20


RAW = np.array([3, 21, 1, 13, 0, 11, 8, 10], np.uint16)  # road, wall, sky, (unused 13), void, bicycle, car, person
TRAIN = [0, 3, 9, 255, 255, 15, 12, 10]


def _write_sample(write_png, root, sid: str) -> None:
    Image.fromarray(np.full((H, W, 3), 77, np.uint8)).save(root / "RGB" / f"{sid}.png")
    lab = np.zeros((H, W, 3), np.uint16)
    lab[..., 0] = RAW[None, :]
    lab[..., 1] = 40000  # instance ids: large 16-bit values in the second channel
    write_png(root / "GT/LABELS" / f"{sid}.png", lab)
    depth = np.full((H, W), 1234, np.uint16)
    depth[0, 0] = 0
    depth[0, 1] = 65535
    write_png(root / "Depth/Depth" / f"{sid}.png", depth)


@pytest.fixture()
def synthia_root(tmp_path, write_png):
    root = tmp_path / "RAND_CITYSCAPES"
    for d in ("RGB", "GT/LABELS", "Depth/Depth"):
        (root / d).mkdir(parents=True)
    for i in range(N):
        _write_sample(write_png, root, f"{i:07d}")
    return root


def test_16bit_labels_mapped(synthia_root):
    ds = open_dataset("synthia", synthia_root, split="train", tasks=("semseg",))
    seg = ds[0]["semseg"].numpy()
    np.testing.assert_array_equal(seg, np.tile(TRAIN, (H, 1)))
    assert ds.meta["num_classes"] == 16 and ds.meta["class_names"][6] == "traffic light"
    # why a 16-bit decoder: Pillow reduces the 16-bit RGB file to 8 bits and the class ids are lost
    with Image.open(synthia_root / "GT/LABELS/0000000.png") as img:
        assert img.mode == "RGB" and not (np.asarray(img)[0, :, 0] == RAW).all()


def test_depth_metres(synthia_root):
    d = open_dataset("synthia", synthia_root, split="val", tasks=("depth",))[0]["depth"][0].numpy()
    assert d[0, 0] == 0.0 and d[0, 1] == pytest.approx(655.35)
    assert (d[1:] == np.float32(12.34)).all()


def test_normals_from_depth_with_the_synthia_camera(synthia_root, write_png):
    """A fronto-parallel wall (constant depth) faces the camera: n = (0, 0, −1) in the camera frame; the border and
    pixels next to a hole have no normal; any depth map goes through the SYNTHIA intrinsics scaled to its size."""
    from mtdense.data._geometry import normals_from_depth
    from mtdense.data.synthia import INTRINSICS, scaled_intrinsics

    ds = open_dataset("synthia", synthia_root, split="val", tasks=("depth", "normals"))
    assert ds.meta["intrinsics"] == {"fx": 532.740352, "fy": 532.740352, "cx": 640.0, "cy": 380.0}
    sid = ds.ids[0]
    depth = np.full((H, W), 1000, np.uint16)
    depth[3, 5] = 0  # a hole
    write_png(synthia_root / "Depth/Depth" / f"{sid}.png", depth)
    n = ds[0]["normals"].numpy()
    near_hole = np.zeros((H, W), bool)
    for y, x in ((3, 5), (2, 5), (4, 5), (3, 4), (3, 6)):
        near_hole[y, x] = True
    inner = np.zeros((H, W), bool)
    inner[1:-1, 1:-1] = True
    inner &= ~near_hole
    assert inner.sum() == 19
    np.testing.assert_allclose(n[:, inner], np.broadcast_to([[0.0], [0.0], [-1.0]], (3, 19)), atol=1e-6)
    assert (n[:, ~inner] == 0).all()
    k = scaled_intrinsics((H, W))
    assert k["fx"] == pytest.approx(INTRINSICS["fx"] * W / 1280) and k["cy"] == pytest.approx(380.0 * H / 760)
    assert scaled_intrinsics((760, 1280)) == INTRINSICS
    rough = np.random.default_rng(0).integers(500, 3000, (H, W)).astype(np.uint16)
    write_png(synthia_root / "Depth/Depth" / f"{sid}.png", rough)
    want = normals_from_depth(rough.astype(np.float32) / 100, **k)
    np.testing.assert_allclose(ds[0]["normals"].numpy(), want.transpose(2, 0, 1), atol=1e-6)


def test_split_written_once_disjoint_and_stable(synthia_root):
    train = open_dataset("synthia", synthia_root, split="train", tasks=("semseg",)).ids
    val = open_dataset("synthia", synthia_root, split="val", tasks=("semseg",)).ids
    assert len(val) == 4 and len(train) == N - 4  # DenseMTL's random 80/20 split
    assert not set(train) & set(val) and sorted(train + val) == [f"{i:07d}" for i in range(N)]
    saved = json.loads((synthia_root / SPLIT_FILE).read_text())
    assert saved["train"] == train and saved["val"] == val and saved["seed"] == 0
    assert open_dataset("synthia", synthia_root, split="val", tasks=("semseg",)).ids == val  # read back


@pytest.mark.slow  # a fresh interpreter importing torch: seconds
def test_split_stable_across_processes(synthia_root):
    """Deleted and drawn again from the seed in another process, the split is the same."""
    train = open_dataset("synthia", synthia_root, split="train", tasks=("semseg",)).ids
    val = open_dataset("synthia", synthia_root, split="val", tasks=("semseg",)).ids
    (synthia_root / SPLIT_FILE).unlink()
    code = (
        "import sys; from mtdense.data import open_dataset; "
        "print(','.join(open_dataset('synthia', sys.argv[1], split='val', tasks=('semseg',)).ids))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(synthia_root)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",") == val
    assert json.loads((synthia_root / SPLIT_FILE).read_text())["train"] == train


def test_split_file_guards(synthia_root, write_png):
    open_dataset("synthia", synthia_root, split="train", tasks=("depth",))
    _write_sample(write_png, synthia_root, "0000999")  # a folder that changed after the split was made
    with pytest.raises(DataError, match="on disk but unlisted: \\['0000999'\\]"):
        open_dataset("synthia", synthia_root, split="train", tasks=("depth",))
    (synthia_root / "RGB/0000999.png").unlink()
    saved = json.loads((synthia_root / SPLIT_FILE).read_text())
    (synthia_root / SPLIT_FILE).write_text(json.dumps({**saved, "seed": 7}))
    with pytest.raises(DataError, match="records split settings"):
        open_dataset("synthia", synthia_root, split="train", tasks=("depth",))
    (synthia_root / SPLIT_FILE).write_text("{broken")
    with pytest.raises(DataError, match="corrupt split file"):
        open_dataset("synthia", synthia_root, split="train", tasks=("depth",))


def test_named_errors(synthia_root, write_png):
    ds = open_dataset("synthia", synthia_root, split="train", tasks=("semseg",))
    sid = ds.ids[0]
    write_png(synthia_root / "GT/LABELS" / f"{sid}.png", np.zeros((H, W), np.uint16))
    with pytest.raises(DataError, match="expected a 16-bit RGB label PNG"):
        ds[0]
    write_png(synthia_root / "GT/LABELS" / f"{sid}.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(DataError, match="expected a 16-bit PNG, got 8-bit"):
        ds[0]
    (synthia_root / "GT/LABELS" / f"{sid}.png").unlink()
    with pytest.raises(DataError, match="label map not found"):
        ds[0]
    with pytest.raises(ConfigError, match="no target for task"):
        open_dataset("synthia", synthia_root, split="train", tasks=("parts",))


def test_detected_and_read_right_by_data_check(synthia_root, tmp_path, capsys):
    """``mtdense data check ROOT`` recognises the layout, reads every split and finds nothing wrong."""
    from mtdense.cli.main import main

    assert main(["data", "check", str(synthia_root), "--figure", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset synthia at ") and "no problems found" in out and (tmp_path / "grid.png").is_file()


@pytest.mark.parametrize(
    ("folder", "what"), [("RGB", "image"), ("GT/LABELS", "label map"), ("Depth/Depth", "depth map")]
)
def test_each_missing_or_truncated_file_is_named(synthia_root, folder, what):
    ds = open_dataset("synthia", synthia_root, split="train", tasks=("semseg", "depth", "normals"))
    path = synthia_root / folder / f"{ds.ids[0]}.png"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=f"cannot decode {what} {path}"):
        ds[0]
    path.unlink()
    with pytest.raises(DataError, match=f"{what} not found: {path}"):
        ds[0]
