"""``mtdense explain RUN IMAGE --out DIR`` end to end: train a tiny TRL through the CLI, draw its attention maps
(TRL Fig. 4) for a photo, and refuse, with one ``error:`` line and exit code 2, a model without the hook."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from mtdense.cli.main import main


def _train(raw: dict, tmp, name: str) -> str:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp / name
    assert main(["train", str(cfg), "--out", str(run), "--max-steps", "2"]) == 0
    return str(run)


@pytest.fixture(scope="module")
def trl_run(tiny_raw_config, tmp_path_factory) -> str:
    raw = tiny_raw_config(
        **{
            "data.tasks": ["semseg", "depth"],
            "model": {"name": "trl", "width": 16, "task_order": ["depth", "semseg"], "backbone": {"name": "resnet18"}},
            "loss.balancer": "uncertainty",
            "loss.depth": "berhu",
        }
    )
    return _train(raw, tmp_path_factory.mktemp("explain"), "trl")


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 61, 3), dtype=np.uint8)).save(path)
    return path


def test_explain_writes_a_titled_figure_and_raw_map_per_tam(trl_run, photo, tmp_path, capsys):
    """Per TAM a ``.npy`` equal to the hook's map ``M`` for the photo and a figure; 8 TAMs, 16 files."""
    import torch

    from mtdense.engine.inference import load_run, read_rgb

    out = tmp_path / "explain"
    assert main(["explain", trl_run, str(photo), "--out", str(out)]) == 0
    assert "wrote 16 file(s)" in capsys.readouterr().out
    run = load_run(trl_run)
    x = torch.from_numpy(read_rgb(photo).copy()).permute(2, 0, 1).float().div(255)[None]
    with torch.no_grad():
        maps = run.model.explain(x)
    widths = [16, 16, 8, 8, 4, 4, 2, 2]
    strides = [16, 16, 8, 8, 4, 4, 2, 2]
    tasks = ["depth", "semseg"] * 4
    assert list(maps) == [f"tam{p}/{tasks[p - 1]}" for p in range(1, 9)]
    for p in range(1, 9):
        stem = f"photo_tam{p}_{tasks[p - 1]}"
        m = np.load(out / f"{stem}.npy")
        s = strides[p - 1]
        assert m.shape == (widths[p - 1], -(-45 // s), -(-61 // s)) and m.dtype == np.float32
        assert ((m > 0) & (m < 1)).all()  # M is a sigmoid output
        np.testing.assert_allclose(m, maps[f"tam{p}/{tasks[p - 1]}"][0].numpy(), atol=1e-6)
        fig = np.asarray(Image.open(out / f"{stem}.png"))
        assert fig.ndim == 3 and fig.shape[0] > 100 and fig.shape[1] > 300  # image + 4 panels with colour bars
    assert len(list(out.iterdir())) == 16


def test_model_without_the_hook_is_an_error(tiny_raw_config, tmp_path, photo, capsys):
    run = _train(tiny_raw_config(**{"data.tasks": ["semseg", "depth"]}), tmp_path, "mtl")
    capsys.readouterr()
    out = tmp_path / "explain"
    assert main(["explain", run, str(photo), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "exposes no explanation maps" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing written


def test_trl_variant_without_tams_is_an_error(tiny_raw_config, tmp_path, photo, capsys):
    raw = tiny_raw_config(
        **{
            "data.tasks": ["semseg", "depth"],
            "model": {"name": "trl", "width": 16, "tam": False, "backbone": {"name": "resnet18"}},
            "train.max_steps": 1,
        }
    )
    run = _train(raw, tmp_path, "notam")
    capsys.readouterr()
    assert main(["explain", run, str(photo), "--out", str(tmp_path / "x")]) == 2
    assert "no task-attentional modules" in capsys.readouterr().err


def test_missing_image_is_an_error(trl_run, tmp_path, capsys):
    assert main(["explain", trl_run, str(tmp_path / "nope.png"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.png" in err


def test_figure_panels_show_channels_or_their_mean():
    """k <= 4 channels: one panel per channel; more: the channel mean, then the 3 channels of highest variance."""
    from mtdense.engine.explain import _panels, map_file_stem

    rng = np.random.default_rng(0)
    few = rng.random((3, 4, 5)).astype(np.float32)
    assert [t for t, _ in _panels(few, (4, 5), 4)] == ["channel 0", "channel 1", "channel 2"]
    np.testing.assert_allclose(_panels(few, (4, 5), 4)[2][1], few[2], atol=1e-6)
    many = rng.random((6, 4, 5)).astype(np.float32) * np.array([1, 5, 2, 9, 3, 0.5], np.float32)[:, None, None]
    panels = _panels(many, (4, 5), 4)
    assert [t for t, _ in panels] == ["mean of 6 channels", "channel 3", "channel 1", "channel 4"]
    np.testing.assert_allclose(panels[0][1], many.mean(axis=0), atol=1e-6)
    assert _panels(few, (8, 10), 4)[0][1].shape == (8, 10)  # resized to the image
    assert map_file_stem("psd/semseg/before") == "psd_semseg_before"
    with pytest.raises(ValueError, match="expected letters"):
        map_file_stem("../evil")
