"""load_pretrained: file formats, nesting, reports, and the errors a user sees."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mtdense.backbones import build_backbone, load_pretrained, read_state_dict
from mtdense.errors import CheckpointError


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))


def _random_state(module: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {
        k: (torch.rand(v.shape, generator=g) if v.is_floating_point() else v.clone())
        for k, v in module.state_dict().items()
    }


def _assert_loaded(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for k, v in module.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "module_prefix"])
def test_pth_formats(tmp_path, wrap):
    state = _random_state(_tiny())
    if wrap == "module_prefix":
        obj = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "raw":
        obj = state
    else:
        obj = {wrap: state, "epoch": 3}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    target = _tiny()
    report = load_pretrained(target, path)
    _assert_loaded(target, state)
    assert report.missing == report.unexpected == report.ignored == ()
    assert set(report.loaded) == set(state)


def test_safetensors_with_missing_and_unexpected_report(tmp_path):
    state = _random_state(_tiny())
    del state["1.bias"]
    state["2.weight"] = torch.ones(3)
    path = tmp_path / "ckpt.safetensors"
    save_file(state, str(path))
    target = _tiny()
    report = load_pretrained(target, path)
    assert report.missing == ("1.bias",)
    assert report.unexpected == ("2.weight",)
    assert report.ignored == ()
    torch.testing.assert_close(target[0].weight, state["0.weight"], rtol=0, atol=0)
    text = str(report)
    assert "missing 1 [1.bias]" in text and "unexpected 1 [2.weight]" in text and str(path) in text
    with pytest.raises(CheckpointError, match="strict loading failed"):
        load_pretrained(_tiny(), path, strict=True)


def test_old_checkpoint_without_num_batches_tracked_is_complete(tmp_path):
    state = {k: v for k, v in _random_state(_tiny()).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    assert load_pretrained(_tiny(), path, strict=True).missing == ()


def test_classifier_keys_are_loaded_when_the_module_has_them(tmp_path):
    model = nn.Module()
    model.fc = nn.Linear(2, 2)
    state = {"fc.weight": torch.ones(2, 2), "fc.bias": torch.ones(2)}
    path = tmp_path / "fc.pth"
    torch.save(state, path)
    report = load_pretrained(model, path)
    assert report.ignored == () and set(report.loaded) == set(state)
    assert torch.equal(model.fc.weight, torch.ones(2, 2))


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    state = _random_state(_tiny())
    state["0.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(
        CheckpointError, match=r"0\.weight: checkpoint \(8, 3, 3, 3\) vs model \(4, 3, 3, 3\)"
    ):
        load_pretrained(_tiny(), path)


def test_rgb_checkpoint_into_rgbd_backbone_names_conv1(tmp_path, cached_backbone):
    path = tmp_path / "r18.pth"
    torch.save(cached_backbone("resnet18").state_dict(), path)
    with pytest.raises(
        CheckpointError, match=r"conv1\.weight: checkpoint \(64, 3, 7, 7\) vs model \(64, 4, 7, 7\)"
    ):
        build_backbone("resnet18", in_channels=4, pretrained=path)


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(CheckpointError, match=f"not found: {path}"):
        load_pretrained(_tiny(), path)


def test_corrupt_file_names_path(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        read_state_dict(path)


def test_non_tensor_values_are_rejected(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="not tensors"):
        read_state_dict(path)
