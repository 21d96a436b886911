"""ResNet: torchvision parameter names and counts, output stride by dilation, torchvision checkpoints."""

from __future__ import annotations

import pytest
import torch

from mtdense.backbones import build_backbone, load_pretrained

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _expected_resnet18_keys() -> list[str]:
    """torchvision ``resnet18().state_dict()`` keys minus ``fc.weight``/``fc.bias``, written out by hand.

    Stem: ``conv1`` (7x7, no bias) + ``bn1``. Each BasicBlock: ``conv1, bn1, conv2, bn2``. The first
    block of layer2/3/4 changes width and stride, so it has ``downsample.0`` (1x1 conv) and
    ``downsample.1`` (BN). 1 + 5 + 8 * 12 + 3 * 6 = 120 keys.
    """
    keys = ["conv1.weight", *(f"bn1.{b}" for b in _BN)]
    blocks = ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    for block in blocks:
        keys += [f"{block}.conv1.weight", *(f"{block}.bn1.{b}" for b in _BN)]
        keys += [f"{block}.conv2.weight", *(f"{block}.bn2.{b}" for b in _BN)]
        if block in ("layer2.0", "layer3.0", "layer4.0"):
            keys += [f"{block}.downsample.0.weight", *(f"{block}.downsample.1.{b}" for b in _BN)]
    assert len(keys) == 120
    return keys


def test_resnet18_keys_equal_torchvision(cached_backbone):
    assert sorted(cached_backbone("resnet18").state_dict()) == sorted(_expected_resnet18_keys())


def test_resnet50_block_keys(cached_backbone):
    keys = set(cached_backbone("resnet50").state_dict())
    assert {"layer1.0.conv3.weight", "layer1.0.bn3.running_var", "layer1.0.downsample.0.weight"} <= keys
    assert "layer1.1.downsample.0.weight" not in keys
    assert max(int(k.split(".")[1]) for k in keys if k.startswith("layer3.")) == 5  # 6 blocks in layer3


# torchvision's documented parameter counts (ResNet18_Weights.IMAGENET1K_V1.meta["num_params"], ...)
# minus the classifier fc: 512 * 1000 + 1000 for BasicBlock nets, 2048 * 1000 + 1000 for Bottleneck nets.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", 11_689_512 - 513_000),
        ("resnet34", 21_797_672 - 513_000),
        ("resnet50", 25_557_032 - 2_049_000),
        ("resnet101", 44_549_160 - 2_049_000),
    ],
)
def test_parameter_count_equals_torchvision_without_fc(name, expected, cached_backbone):
    assert sum(p.numel() for p in cached_backbone(name).parameters()) == expected


@pytest.mark.parametrize(
    ("output_stride", "reductions", "size"),
    [
        (32, [4, 8, 16, 32], [16, 8, 4, 2]),
        (16, [4, 8, 16, 16], [16, 8, 4, 4]),
        (8, [4, 8, 8, 8], [16, 8, 8, 8]),
    ],
)
def test_output_stride_reductions_and_sizes(output_stride, reductions, size):
    model = build_backbone("resnet18", output_stride=output_stride).eval()
    assert model.reductions() == reductions
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == size


def test_dilation_pattern_follows_torchvision():
    """torchvision ``replace_stride_with_dilation``: a dilated layer's first block keeps the previous
    dilation (and loses its stride); later blocks use the new one. OS 8 dilates layer3 by 2 and layer4
    by 4 (cumulative), OS 16 only layer4 by 2."""
    os8 = build_backbone("resnet50", output_stride=8)
    assert (os8.layer3[0].conv2.stride, os8.layer3[0].conv2.dilation) == ((1, 1), (1, 1))
    assert os8.layer3[0].downsample[0].stride == (1, 1)
    assert (os8.layer3[1].conv2.dilation, os8.layer3[5].conv2.dilation) == ((2, 2), (2, 2))
    assert (os8.layer4[0].conv2.stride, os8.layer4[0].conv2.dilation) == ((1, 1), (2, 2))
    assert os8.layer4[1].conv2.dilation == os8.layer4[1].conv2.padding == (4, 4)
    assert os8.layer2[0].conv2.stride == (2, 2)

    os16 = build_backbone("resnet50", output_stride=16)
    assert os16.layer3[0].conv2.stride == (2, 2) and os16.layer3[1].conv2.dilation == (1, 1)
    assert (os16.layer4[0].conv2.stride, os16.layer4[0].conv2.dilation) == ((1, 1), (1, 1))
    assert os16.layer4[2].conv2.dilation == (2, 2)

    # BasicBlock (an extension over torchvision): both 3x3 convs of later blocks dilated
    r18 = build_backbone("resnet18", output_stride=8)
    assert (r18.layer4[0].conv1.dilation, r18.layer4[0].conv2.dilation) == ((2, 2), (2, 2))
    assert (r18.layer4[1].conv1.dilation, r18.layer4[1].conv2.dilation) == ((4, 4), (4, 4))


def test_dilation_keeps_parameter_names_and_shapes(cached_backbone):
    base = cached_backbone("resnet50").state_dict()
    os8 = build_backbone("resnet50", output_stride=8).state_dict()
    assert {k: v.shape for k, v in os8.items()} == {k: v.shape for k, v in base.items()}


def test_torchvision_checkpoint_with_fc_loads_and_reports_fc(tmp_path, cached_backbone):
    source = cached_backbone("resnet18")
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)

    torch.manual_seed(5)
    target = build_backbone("resnet18")
    report = load_pretrained(target, path)
    assert report.ignored == ("fc.bias", "fc.weight")
    assert report.missing == () and report.unexpected == ()
    assert len(report.loaded) == 120
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_zero_init_residual_zeroes_last_bn():
    model = build_backbone("resnet18", zero_init_residual=True)
    assert model.layer1[0].bn2.weight.abs().sum() == 0
    assert model.layer1[0].bn1.weight.abs().sum() > 0
