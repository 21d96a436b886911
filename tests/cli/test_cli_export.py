"""``mtdense export`` (safetensors, onnx, torchscript, exported) and ``mtdense predict`` from an ``.onnx`` file, end
to end through the command line, on one run trained for a single step; and their bad-input errors (exit 2)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mtdense.cli.main import main
from mtdense.engine.export import read_export_record
from mtdense.engine.inference import load_run

#: neither a multiple of the output stride nor the traced size: a dynamic graph runs at any size in its range
PHOTO_SIZE = (37, 53)


@pytest.fixture(scope="module")
def run_dir(tiny_raw_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config()))
    assert main(["train", str(cfg), "--out", str(tmp / "run"), "--max-steps", "1"]) == 0
    return tmp / "run"


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    rgb = np.random.default_rng(0).integers(0, 255, (*PHOTO_SIZE, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _err(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_predict_from_onnx_writes_the_same_files_as_from_the_checkpoint(run_dir, photo, tmp_path, capsys):
    onnx_path = tmp_path / "model.onnx"
    argv = ["export", str(run_dir), "--format", "onnx", "--size", "64x64", "--dynamic", "--out", str(onnx_path)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out

    import onnx

    proto = onnx.load(str(onnx_path))
    assert proto.opset_import[0].version >= 17
    onnx.checker.check_model(proto, full_check=True)
    record = read_export_record(onnx_path)
    run = load_run(run_dir)
    assert record["tasks"] == ["semseg", "depth", "normals", "edge"]
    assert record["classes"]["semseg"] == run.tasks["semseg"].class_names
    assert record["input"]["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert record["input"]["range"] == [0.0, 1.0] and record["input"]["dynamic"] is True
    steps = {t: [s["op"] for s in o["steps"]] for t, o in record["outputs"].items()}
    assert steps == {"semseg": ["softmax"], "depth": ["clamp"], "normals": ["l2_normalize"], "edge": ["sigmoid"]}
    assert record["outputs"]["semseg"]["label"]["op"] == "argmax"

    assert main(["predict", str(run_dir), str(photo), "--out", str(tmp_path / "pt")]) == 0
    assert main(["predict", str(onnx_path), str(photo), "--out", str(tmp_path / "onnx")]) == 0
    pt_files = sorted(p.name for p in (tmp_path / "pt").iterdir())
    assert pt_files == sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert len(pt_files) == 9  # per task a PNG and a .npy, and the side-by-side figure
    for name in pt_files:
        if name.endswith(".npy"):
            a, b = np.load(tmp_path / "pt" / name), np.load(tmp_path / "onnx" / name)
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4, err_msg=name)


def test_export_formats_round_trip_and_record_metadata(run_dir, tmp_path, capsys):
    run = load_run(run_dir)
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = run.model(x)
    # no --format: taken from the suffix of --out
    pt2, ts, st = tmp_path / "m.pt2", tmp_path / "m.ts", tmp_path / "m.safetensors"
    assert main(["export", str(run_dir), "--out", str(pt2)]) == 0
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(ts)]) == 0
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(st)]) == 0
    with torch.no_grad():
        for module in (torch.export.load(str(pt2)).module(), torch.jit.load(str(ts))):
            got = module(x)
            assert list(got) == ["semseg", "depth", "normals", "edge"]
            for task, value in got.items():
                torch.testing.assert_close(value, ref[task], rtol=0, atol=1e-5)
    for path, fmt in ((pt2, "exported"), (ts, "torchscript"), (st, "safetensors")):
        record = read_export_record(path)
        assert record["export_format"] == fmt and record["tasks"] == ["semseg", "depth", "normals", "edge"]
        assert record["meta"] == run.meta and record["config"]["model"]["name"] == "mtl"
    assert read_export_record(pt2)["input"]["traced_size"] == [32, 48]  # the dataset's size by default
    # the weights load back as a run with the same outputs
    with torch.no_grad():
        torch.testing.assert_close(load_run(st).model(x)["depth"], ref["depth"])
    # the default output path: RUN/export/model.<suffix> (safetensors: the same path logic without another trace)
    assert main(["export", str(run_dir), "--format", "safetensors"]) == 0
    assert (run_dir / "export" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "{tmp}/no_run", "--format", "onnx"], "no_run"),
        (["export", "{run}", "--format", "tflite", "--out", "{tmp}/m.x"], "'tflite'.*valid formats: safetensors, onnx"),
        (["export", "{run}", "--format", "safetensors", "--dynamic", "--out", "{tmp}/m.st"], "--dynamic"),
        (["export", "{run}", "--format", "onnx", "--out", "{tmp}/exists.onnx"], "exists.onnx.*--overwrite"),
        (["predict", "{tmp}/corrupt.onnx", "{tmp}/photo.png", "--out", "{tmp}/p"], "corrupt.onnx"),
        (["predict", "{tmp}/foreign.onnx", "{tmp}/photo.png", "--out", "{tmp}/p"], "foreign.onnx.*mtdense export"),
    ],
    ids=["missing-run", "unknown-format", "dynamic-weights", "existing-out", "corrupt-onnx", "foreign-onnx"],
)
def test_bad_input_is_a_named_error(run_dir, photo, tmp_path, capsys, args, message):
    import onnx
    from onnx import TensorProto, helper

    (tmp_path / "exists.onnx").write_bytes(b"keep me")
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage, not a protobuf")
    (tmp_path / "photo.png").write_bytes(photo.read_bytes())
    identity = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    onnx.save(helper.make_model(identity), str(tmp_path / "foreign.onnx"))
    argv = [a.format(tmp=tmp_path, run=run_dir) for a in args]
    assert main(argv) == 2
    err = _err(capsys)
    assert err.startswith("error: ")
    assert re.search(message, err), err
    assert (tmp_path / "exists.onnx").read_bytes() == b"keep me"  # nothing is overwritten
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())
