"""Bad input at the command line's boundaries: one named ``error:`` line, exit code 2, nothing lost.

Baselines for Δm, dataset folders (corrupt / missing / half-written meta.json), output paths of
``eval`` and ``predict``, non-UTF-8 configs, ``--max-side``, clashing image stems, ``--device``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mtdense.cli.main import main


@pytest.fixture(scope="module")
def run(tiny_raw_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("boundaries")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config(**{"data.tasks": ["semseg", "depth"]})))
    assert main(["train", str(cfg), "--out", str(tmp / "run"), "--max-steps", "1"]) == 0
    return tmp / "run"


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ")
    return err


def _photo(path, size=(20, 30), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_malformed_baseline_is_named(run, tmp_path, capsys):
    bad = tmp_path / "stl.json"
    bad.write_text('{"semseg": {"mIoU": 40.0},')
    assert main(["eval", str(run), "--baseline", str(bad)]) == 2
    err = _err(capsys)
    assert "not valid JSON" in err and str(bad) in err
    assert not (run / "eval").exists()  # refused before evaluating: nothing written
    bad.write_text('{"semseg": 40.0}')
    assert main(["eval", str(run), "--baseline", str(bad)]) == 2
    assert "expected a JSON object {task: {metric: value}}" in _err(capsys)


def test_baseline_must_cover_every_task(run, tmp_path, capsys):
    """Today's Δm would silently average over the tasks the baseline happens to have; now it is an error."""
    partial = tmp_path / "stl_semseg_only.json"
    partial.write_text(json.dumps({"semseg": {"mIoU": 0.4}}))
    assert main(["eval", str(run), "--baseline", str(partial)]) == 2
    err = _err(capsys)
    assert "depth" in err and str(partial) in err and "every task" in err
    full = tmp_path / "stl.json"
    full.write_text(json.dumps({"semseg": {"mIoU": 0.4}, "depth": {"rmse": 1.0}}))
    out = tmp_path / "with_delta.json"
    assert main(["eval", str(run), "--baseline", str(full), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    # Δm by hand (MTI-Net eq. 2): mean of +(mIoU - 0.4)/0.4 and -(rmse - 1.0)/1.0, in percent
    expected = 100 * ((res["semseg"]["mIoU"] - 0.4) / 0.4 - (res["depth"]["rmse"] - 1.0)) / 2
    assert res["multitask"]["delta_m"] == pytest.approx(expected, rel=1e-9)


def test_train_checks_its_baseline_before_training(tiny_raw_config, tmp_path, capsys):
    partial = tmp_path / "stl.json"
    partial.write_text(json.dumps({"semseg": {"mIoU": 0.4}}))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(tiny_raw_config(**{"data.tasks": ["semseg", "depth"], "eval.baseline": str(partial)}))
    )
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = _err(capsys)
    assert "depth" in err and str(partial) in err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()  # refused before the first step


def test_eval_out_paths(run, tmp_path, capsys):
    target = tmp_path / "new" / "deeper" / "val.json"  # a missing folder is created
    assert main(["eval", str(run), "--out", str(target)]) == 0
    assert set(json.loads(target.read_text())) == {"semseg", "depth"}
    before = target.read_bytes()
    assert main(["eval", str(run), "--out", str(target)]) == 2  # an existing file is never overwritten
    assert "exists" in _err(capsys) and target.read_bytes() == before
    assert main(["eval", str(run), "--out", str(tmp_path / "new")]) == 2
    assert "is a folder" in _err(capsys)
    assert main(["eval", str(run), "--out", str(target / "x.json")]) == 2  # a file where a folder should be
    assert "is a file, not a folder" in _err(capsys)


def test_predict_out_is_a_file_and_same_stems(run, tmp_path, capsys):
    photo = _photo(tmp_path / "photo.png")
    out_file = tmp_path / "taken.txt"
    out_file.write_text("keep me")
    assert main(["predict", str(run), str(photo), "--out", str(out_file)]) == 2
    assert "expected a folder" in _err(capsys) and out_file.read_text() == "keep me"
    assert main(["train", str(run / "config.yaml"), "--out", str(out_file)]) == 2  # a run directory too
    assert "expected a folder" in _err(capsys) and out_file.read_text() == "keep me"

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _photo(tmp_path / "a" / "x.png", seed=1), _photo(tmp_path / "b" / "x.jpg", seed=2)
    out = tmp_path / "preds"
    assert main(["predict", str(run), str(first), str(tmp_path / "b"), "--out", str(out)]) == 2
    err = _err(capsys)
    assert "same file stem" in err and str(first) in err and str(second) in err
    assert not out.exists()  # refused before anything was written
    # the same file given twice is not a clash
    assert main(["predict", str(run), str(first), str(first), "--out", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"x_{t}.{ext}" for t in ("semseg", "depth") for ext in ("png", "npy")] + ["x_all.png"]
    )


@pytest.mark.parametrize("value", ["0", "-3", "abc"])
def test_max_side_must_be_positive(run, tmp_path, capsys, value):
    photo = _photo(tmp_path / "p.png")
    with pytest.raises(SystemExit) as e:
        main(["predict", str(run), str(photo), "--out", str(tmp_path / "o"), "--max-side", value])
    assert e.value.code == 2
    assert "--max-side: expected a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_device_option(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "--device", "gpu0"])
    assert e.value.code == 2 and "expected a torch device" in capsys.readouterr().err
    code = main(["eval", str(run), "--device", "cuda", "--out", str(tmp_path / "r.json")])
    if torch.cuda.is_available():
        assert code == 0
    else:
        assert code == 2 and "CUDA is not available" in _err(capsys)


def test_non_utf8_config_is_named(tmp_path, capsys):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("# réglages\nmodel: {name: mtl}\n".encode("latin-1"))
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = _err(capsys)
    assert "not UTF-8" in err and str(cfg) in err and "0xe9" in err
    assert not (tmp_path / "r").exists()


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_corrupt_and_missing_meta_json(run, synth_root, tiny_raw_config, tmp_path, capsys):
    data = _copy(synth_root, tmp_path / "data")
    (data / "meta.json").write_text('{"num_classes": 4')  # truncated
    assert main(["eval", str(run), "--data-root", str(data)]) == 2
    err = _err(capsys)
    assert "meta.json" in err and "corrupt" in err

    (data / "meta.json").unlink()  # gt_sets/ but no meta.json: the reader refuses, naming what to do
    cfg = tmp_path / "nyud.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config(**{"data.root": str(data), "data.dataset": "nyud_mt"})))
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = _err(capsys)
    assert "no meta.json" in err and str(data) in err


def test_half_rendered_synthetic_folder(run, synth_root, tmp_path, capsys):
    data = _copy(synth_root, tmp_path / "data")
    for f in sorted((data / "normals").iterdir())[:2]:
        f.unlink()
    with open(data / "gt_sets" / "val.txt", "a") as f:
        f.write("val_000099\n")  # a list that disagrees with the counts meta.json recorded
    assert main(["eval", str(run), "--data-root", str(data)]) == 2
    err = _err(capsys)
    assert "5 ids, but" in err and "records 4" in err and "render it again" in err


def test_interrupted_synthetic_render_is_rendered_again(tiny_raw_config, tmp_path, capsys):
    """A data.synth folder without meta.json (the writer's completion marker) is rendered again, not used."""
    data = tmp_path / "synth"
    spec = {"family": "indoor", "train": 4, "val": 2, "size": [32, 32], "seed": 1}
    raw = tiny_raw_config(**{"data.root": str(data), "data.synth": spec, "data.tasks": ["depth"], "data.cache": False})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    from mtdense.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(data, train=4, val=2, size=(32, 32), seed=1, progress=False, workers=1)
    reference = np.load(data / "depth" / "train_000003.npy")
    (data / "meta.json").unlink()
    (data / "depth" / "train_000003.npy").unlink()  # as if the render was killed half-way
    assert main(["train", str(cfg), "--out", str(tmp_path / "r"), "--max-steps", "1"]) == 0
    assert "rendering it" in capsys.readouterr().out
    assert json.loads((data / "meta.json").read_text())["splits"] == {"train": 4, "val": 2}
    np.testing.assert_array_equal(np.load(data / "depth" / "train_000003.npy"), reference)
