"""``mtdense data check ROOT [--dataset NAME]`` through the CLI: report, figure, problems and exit codes."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mtdense.cli.main import main


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_check_a_good_dataset_writes_report_and_figure(synth_root, tmp_path, capsys):
    fig = tmp_path / "grid.png"
    assert main(["data", "check", str(synth_root), "--figure", str(fig), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "dataset synthetic" in out and "train: 16 samples, 16 checked; sizes 32x48 (16)" in out
    assert "val: 4 samples" in out and "test: absent" in out and "no problems found" in out
    assert "semseg ids:" in out and "depth (m, valid):" in out
    image = np.asarray(Image.open(fig))
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0  # a drawn grid, not a blank


def test_check_finds_missing_files_and_labels_outside_the_protocol(synth_root, tmp_path, capsys):
    root = _copy(synth_root, tmp_path / "broken")
    ids = (root / "gt_sets" / "train.txt").read_text().split()
    (root / "depth" / f"{ids[1]}.npy").unlink()
    label = np.asarray(Image.open(root / "segmentation" / f"{ids[2]}.png")).copy()
    label[0, 0] = 40  # the synthetic indoor protocol has 13 classes
    Image.fromarray(label).save(root / "segmentation" / f"{ids[2]}.png")
    meta = json.loads((root / "meta.json").read_text())
    meta["dataset"] = "nyud-v2"  # a real NYUD-MT folder: readable without the synthetic completeness check
    (root / "meta.json").write_text(json.dumps(meta))
    code = main(["data", "check", str(root), "--dataset", "nyud_mt", "--figure", str(tmp_path / "f.png")])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith("error:") and "2 problem(s)" in captured.err
    assert f"train[1]: array file not found: {root / 'depth' / (ids[1] + '.npy')}" in captured.out
    assert f"train[2]: {root / 'segmentation' / (ids[2] + '.png')}: label value 40 exceeds num_classes" in captured.out


def test_check_nyud_raw_frames_by_detection(tmp_path, capsys):
    root = tmp_path / "raw"
    folder = root / "sync" / "bedroom_0001"
    folder.mkdir(parents=True)
    lines = []
    for i in range(2):
        Image.fromarray(np.full((16, 24, 3), 50 * i, np.uint8)).save(folder / f"rgb_{i:05d}.jpg")
        Image.fromarray(np.full((16, 24), 2000, np.uint16)).save(folder / f"sync_depth_{i:05d}.png")
        lines.append(f"/bedroom_0001/rgb_{i:05d}.jpg /bedroom_0001/sync_depth_{i:05d}.png 518.8579")
    (root / "nyudepthv2_train_files_with_gt.txt").write_text("\n".join(lines))
    assert main(["data", "check", str(root), "--figure", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "dataset nyud_raw" in out and "tasks: depth, normals" in out and "depth (m, valid): 2 .. 2" in out


def test_check_unknown_folder_is_an_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "no known dataset layout recognised; pass --dataset" in capsys.readouterr().err


def test_check_flags_normals_in_another_axis_convention(synth_root, tmp_path, capsys):
    """The synthetic normals face the camera (n · P < 0) and horizontal ones mostly face up; stored with z towards
    the viewer, or y up, the check says so."""
    assert main(["data", "check", str(synth_root), "--figure", str(tmp_path / "a.png"), "--limit", "8"]) == 0
    out = capsys.readouterr().out
    share = float(out.split("normals facing the camera (share): ")[1].split()[0])
    up = float(out.split("horizontal normals facing up (share): ")[1].split()[0])
    assert share > 0.9 and up > 0.5
    root = _copy(synth_root, tmp_path / "flipped")
    for path in (root / "normals").glob("*.npy"):
        n = np.load(path)
        np.save(path, n * np.array([1, 1, -1], n.dtype))
    assert main(["data", "check", str(root), "--figure", str(tmp_path / "b.png"), "--limit", "8"]) == 2
    captured = capsys.readouterr()
    assert "problem(s) found" in captured.err
    assert "  - train: only " in captured.out and "% of the valid normals face the camera" in captured.out
    for path in (root / "normals").glob("*.npy"):  # z right again, y up instead of down
        n = np.load(path)
        np.save(path, n * np.array([1, -1, -1], n.dtype))
    assert main(["data", "check", str(root), "--figure", str(tmp_path / "c.png"), "--limit", "8"]) == 2
    out = capsys.readouterr().out
    assert "of the normals of horizontal surfaces face up (n_y < 0" in out and "face the camera (expected" not in out


def test_check_establishes_a_release_axis_convention_from_depth(synth_root, tmp_path, capsys):
    """NYUD-MT normals stored in other axes: the check fits the signed permutation against the normals derived from
    the depth maps and names it; written into meta.json as normals_to_camera, the reader converts and the check
    passes."""
    from mtdense.data import open_dataset

    root = _copy(synth_root, tmp_path / "release")
    meta = json.loads((root / "meta.json").read_text())
    assert "intrinsics" in meta
    meta["dataset"] = "nyud-v2"
    (root / "meta.json").write_text(json.dumps(meta))
    want = open_dataset("nyud_mt", root, split="train", tasks=("normals",))[0]["normals"]
    for path in (root / "normals").glob("*.npy"):  # stored as (y, −x, −z) of the camera frame
        n = np.load(path)
        np.save(path, n[..., [1, 0, 2]] * np.array([1, -1, -1], n.dtype))
    assert (
        main(["data", "check", str(root), "--dataset", "nyud_mt", "--figure", str(tmp_path / "a.png"), "--limit", "8"])
        == 2
    )
    out = capsys.readouterr().out
    matrix = [[0, -1, 0], [1, 0, 0], [0, 0, -1]]
    assert f'"normals_to_camera": {matrix} in its meta.json' in out
    meta["normals_to_camera"] = matrix
    (root / "meta.json").write_text(json.dumps(meta))
    assert open_dataset("nyud_mt", root, split="train", tasks=("normals",))[0]["normals"].equal(want)
    assert (
        main(["data", "check", str(root), "--dataset", "nyud_mt", "--figure", str(tmp_path / "b.png"), "--limit", "8"])
        == 0
    )
    agreement = float(capsys.readouterr().out.split("normals agreement with depth (mean cos): ")[1].split()[0])
    assert agreement > 0.8
    meta["normals_to_camera"] = [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    (root / "meta.json").write_text(json.dumps(meta))
    assert main(["data", "check", str(root), "--dataset", "nyud_mt", "--limit", "1"]) == 2
    captured = capsys.readouterr()
    assert "normals_to_camera: expected a 3x3 signed permutation matrix" in captured.out + captured.err
