"""The command line end to end (train → eval → predict → export → predict) and its bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from mtdense.cli.main import main


@pytest.fixture
def config_file(tiny_raw_config, tmp_path):
    def write(**overrides):
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(tiny_raw_config(**overrides)))
        return path

    return write


@pytest.fixture(scope="module")
def trained_run(tiny_raw_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config()))
    assert main(["train", str(cfg), "--out", str(tmp / "run"), "--max-steps", "2"]) == 0
    return tmp / "run"


def _err(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_train_eval_predict_export(trained_run, tmp_path, capsys):
    trained = (trained_run / "results.json").read_bytes()
    assert main(["eval", str(trained_run), "--device", "cpu"]) == 0
    results = json.loads((trained_run / "eval" / "val.json").read_text())
    assert set(results) == {"semseg", "depth", "normals", "edge"}
    assert "mIoU" in capsys.readouterr().out
    # a second evaluation writes a new file; the training's results.json is never rewritten
    assert main(["eval", str(trained_run)]) == 0
    assert json.loads((trained_run / "eval" / "val_2.json").read_text()) == results
    assert (trained_run / "results.json").read_bytes() == trained

    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(photo)
    assert main(["predict", str(trained_run), str(photo), "--out", str(tmp_path / "pred")]) == 0
    for task in ("semseg", "depth", "normals", "edge"):
        png = np.asarray(Image.open(tmp_path / "pred" / f"photo_{task}.png"))
        assert png.shape == (37, 53, 3)
        assert np.load(tmp_path / "pred" / f"photo_{task}.npy").shape[-2:] == (37, 53)
    assert (tmp_path / "pred" / "photo_all.png").is_file()

    weights = tmp_path / "model.safetensors"
    assert main(["export", str(trained_run), "--out", str(weights)]) == 0
    assert main(["predict", str(weights), str(photo), "--out", str(tmp_path / "pred2")]) == 0
    a = np.load(tmp_path / "pred" / "photo_depth.npy")
    b = np.load(tmp_path / "pred2" / "photo_depth.npy")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train.lrr": 0.1}, "train.lrr: unknown key"),
        ({"train.max_steps": "ten"}, "train.max_steps"),
        ({"model.bogus": 1}, "model.bogus: unknown key"),
        ({"model.name": "nonet"}, "unknown model 'nonet'"),
    ],
)
def test_bad_config_names_key_and_file(config_file, tmp_path, capsys, override, message):
    path = config_file(**override)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = _err(capsys)
    assert message in err and str(path) in err
    assert not (tmp_path / "run").exists()


def test_bad_override_type(config_file, tmp_path, capsys):
    assert main(["train", str(config_file()), "--out", str(tmp_path / "r"), "train.batch_size=1.5"]) == 2
    assert "train.batch_size" in _err(capsys)


def test_missing_config_and_dataset(config_file, tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "nope.yaml" in _err(capsys)
    path = config_file(**{"data.root": str(tmp_path / "no_data"), "data.dataset": "nyud_mt"})
    assert main(["train", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "no_data" in _err(capsys)


def test_missing_run_and_wrong_checkpoint(trained_run, config_file, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing_run")]) == 2
    assert "missing_run" in _err(capsys)
    # weights of another model (no depth head, one extra key) under the multi-task run's config
    import torch

    ckpt = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if ".depth." not in k}
    ckpt["model"]["other.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    assert main(["eval", str(bad)]) == 2
    err = _err(capsys)
    assert "does not match the model" in err and "bad.pt" in err and "other.weight" in err


def test_corrupt_image_is_named(trained_run, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    assert main(["predict", str(trained_run), str(bad), "--out", str(tmp_path / "p")]) == 2
    assert "broken.png" in _err(capsys)


def test_help_has_examples(capsys):
    for cmd in (["train"], ["eval"], ["predict"], ["export"], ["data", "synth"], ["demo"], ["complexity"], ["configs"]):
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        assert "Example" in capsys.readouterr().out


def test_exported_weights_load_as_pretrained_backbone(trained_run, tiny_raw_config, tmp_path, capsys):
    import torch

    from mtdense.config import validate_config
    from mtdense.engine.setup import build_model_for, build_tasks

    weights = tmp_path / "release.safetensors"
    assert main(["export", str(trained_run), "--out", str(weights)]) == 0
    raw = tiny_raw_config(**{"model.name": "stl", "data.tasks": ["depth"], "model.backbone.pretrained": str(weights)})
    cfg = validate_config(raw)
    model = build_model_for(cfg, build_tasks(cfg, {}))
    assert "loaded" in capsys.readouterr().out
    trained = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, trained[f"backbone.{key}"]), key


def test_configs_lists_packaged_names_with_descriptions(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = {line.split()[0]: line for line in lines}
    assert {"demo", "synthetic/mtinet_hrnet18s", "nyud/mtinet_hrnet18s"} <= set(by_name)
    assert "MTI-Net" in by_name["synthetic/mtinet_hrnet18s"]  # the file's first comment line
