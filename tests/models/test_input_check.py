"""The model input boundary: ``MultiTaskModel.forward`` takes only a floating ``(B, 3, H, W)`` image.

Anything else raises :class:`ShapeError` "model input: expected (B, 3, H, W) float image, got ..."
before the ImageNet normalisation (today a ``(B, 4, H, W)`` batch is a raw broadcasting
``RuntimeError`` and a ``(3, H, W)`` image is silently broadcast into a batch of one). The check reads
only metadata, so ``torch.compile(fullgraph=True)`` and ``torch.export`` trace through it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import Tensor, nn

from mtdense.cli.main import main
from mtdense.errors import ShapeError
from mtdense.models import list_models
from mtdense.models._base import MultiTaskModel, check_image

BAD_INPUTS = {
    "4 channels": lambda: torch.rand(1, 4, 32, 32),
    "no batch dim": lambda: torch.rand(3, 32, 32),
    "uint8": lambda: torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8),
    "int64": lambda: torch.zeros(1, 3, 32, 32, dtype=torch.long),
    "5-d": lambda: torch.rand(1, 1, 3, 32, 32),
    "1 channel": lambda: torch.rand(2, 1, 32, 32),
}


class _Probe(MultiTaskModel):
    """Smallest architecture: a 1x1 conv; records whether the normalised branch was reached."""

    def __init__(self) -> None:
        super().__init__({"depth": 1})
        self.conv = nn.Conv2d(3, 1, 1)
        self.reached = False

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:
        self.reached = True
        return {"depth": self.conv(x)}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_rejected_before_normalisation(name: str) -> None:
    model = _Probe()
    x = BAD_INPUTS[name]()
    with pytest.raises(ShapeError, match=r"model input: expected \(B, 3, H, W\) float image, got shape") as info:
        model(x)
    assert str(tuple(x.shape)) in str(info.value) and str(x.dtype) in str(info.value)
    assert not model.reached


def test_non_tensor_input() -> None:
    with pytest.raises(ShapeError, match="expected .* float image, got ndarray"):
        _Probe()(np.zeros((1, 3, 8, 8), dtype=np.float32))


def test_good_inputs_pass_in_any_float_dtype() -> None:
    """float32 and float64 images (also channels-last) reach the network, normalised by
    ``(x - mean) / std`` with the ImageNet statistics."""
    check_image(torch.rand(2, 3, 5, 7, dtype=torch.bfloat16))
    model = _Probe().eval()
    x = torch.rand(2, 3, 5, 7)
    with torch.no_grad():
        nn.init.ones_(model.conv.weight)
        nn.init.zeros_(model.conv.bias)
        out = model(x.to(memory_format=torch.channels_last))["depth"]
        out64 = model.double()(x.double())["depth"]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = ((x - mean) / std).sum(1, keepdim=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out64, ((x.double() - mean.double()) / std.double()).sum(1, keepdim=True))


@pytest.mark.parametrize("model_name", list_models())
def test_every_registered_model_checks_its_input(model_name: str, tiny, case) -> None:
    """Through each architecture's own ``forward`` (its tiny case of ``tests/models/conftest.py``)."""
    model = tiny(model_name, case(model_name).backbones[0]).eval()
    for name in ("4 channels", "no batch dim", "uint8"):
        with pytest.raises(ShapeError, match=r"expected \(B, 3, H, W\) float image"):
            model(BAD_INPUTS[name]())


def test_compile_and_export_trace_through_the_check() -> None:
    """A good input traces without a graph break (``fullgraph=True``); a compiled model (default
    ``fullgraph=False``) still raises the ShapeError on a 4-channel batch; ``torch.export`` of the
    model works with a dynamic batch size."""
    model = _Probe().eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="eager", fullgraph=True)(x)["depth"], model(x)["depth"])
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager")
        torch.testing.assert_close(compiled(x)["depth"], model(x)["depth"])
        with pytest.raises(ShapeError, match=r"expected \(B, 3, H, W\) float image, got shape \(2, 4, 8, 8\)"):
            compiled(torch.rand(2, 4, 8, 8))
        torch._dynamo.reset()
        batch = torch.export.Dim("batch", min=1, max=64)
        exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        torch.testing.assert_close(exported.module()(torch.rand(5, 3, 8, 8))["depth"].shape, torch.Size([5, 1, 8, 8]))


# ------------------------------------------------------------------------------------------------
# The user's path: `mtdense predict`
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tiny_raw_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("input_check")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config(**{"data.tasks": ["semseg", "depth"]})))
    assert main(["train", str(cfg), "--out", str(tmp / "run"), "--max-steps", "1"]) == 0
    return tmp / "run"


def test_predict_converts_rgba_and_grey_files_to_rgb(trained_run, tmp_path, capsys):
    """An RGBA or a greyscale file is converted to RGB before it reaches the model."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    out = tmp_path / "pred"
    assert (
        main(["predict", str(trained_run), str(tmp_path / "rgba.png"), str(tmp_path / "grey.png"), "--out", str(out)])
        == 0
    )
    for stem in ("rgba", "grey"):
        assert np.load(out / f"{stem}_depth.npy").shape[-2:] == (20, 24)


def test_predict_reports_a_bad_image_tensor_as_one_error_line(trained_run, tmp_path, capsys, monkeypatch):
    """Should a reader ever hand the model 4 channels, `mtdense predict` prints the named error and exits
    2, with no traceback and no prediction file written."""
    import mtdense.engine.inference as inference

    monkeypatch.setattr(inference, "read_rgb", lambda path: np.zeros((20, 24, 4), dtype=np.uint8))
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "pred"
    assert main(["predict", str(trained_run), str(photo), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: model input: expected (B, 3, H, W) float image, got shape (1, 4, 20, 24)" in err
    assert not out.exists() or not list(out.glob("photo_*"))
