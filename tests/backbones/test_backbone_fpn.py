"""FPN: the top-down equation on hand-set weights, names under ``body.``, torchvision loading."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtdense.backbones import FPN, Backbone, FeatureInfo, build_backbone


class _FixedBody(Backbone):
    """Returns two fixed one-channel maps: C2 (4x4, stride 4) and C3 (2x2, stride 8)."""

    def __init__(self, c2: Tensor, c3: Tensor) -> None:
        super().__init__()
        self.in_channels = 3
        self.maps = [c2, c3]
        self.feature_info = [FeatureInfo(1, 4, "a"), FeatureInfo(1, 8, "b")]

    def forward_levels(self, x: Tensor) -> list[Tensor]:
        return self.maps


def test_top_down_equation_by_hand():
    """With identity laterals (1x1 weight 1, bias 0) and identity 3x3 output convs (centre tap 1):
    P3 = C3 = [[1, 2], [3, 4]]; P2 = C2 + nearest_up(P3) with C2 = 10 * ones(4, 4):
    [[11, 11, 12, 12], [11, 11, 12, 12], [13, 13, 14, 14], [13, 13, 14, 14]]."""
    c3 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    c2 = torch.full((1, 1, 4, 4), 10.0)
    fpn = FPN(body=_FixedBody(c2, c3), out_channels=1)
    with torch.no_grad():
        for conv in fpn.lateral:
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        for conv in fpn.output:
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
            conv.bias.zero_()
        p2, p3 = fpn(torch.zeros(1, 3, 16, 16))
    torch.testing.assert_close(p3, c3)
    expected = torch.tensor([[11.0, 11, 12, 12], [11, 11, 12, 12], [13, 13, 14, 14], [13, 13, 14, 14]])
    torch.testing.assert_close(p2[0, 0], expected)


def test_odd_sizes_upsample_to_exact_lateral_size():
    """C3 of size 2x2 merged into a 3x3 C2 (odd input): nearest resize to 3x3, not x2 to 4x4."""
    fpn = FPN(body=_FixedBody(torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 2, 2)), out_channels=2)
    p2, p3 = fpn(torch.zeros(1, 3, 12, 12))
    assert p2.shape == (1, 2, 3, 3) and p3.shape == (1, 2, 2, 2)


def test_parameter_names_and_out_channels(cached_backbone):
    fpn = build_backbone("fpn_resnet18", out_channels=64)
    assert fpn.channels() == [64] * 4
    keys = set(fpn.state_dict())
    resnet_keys = {f"body.{k}" for k in cached_backbone("resnet18").state_dict()}
    fpn_keys = {
        f"{part}.{i}.{t}" for part in ("lateral", "output") for i in range(4) for t in ("weight", "bias")
    }
    assert keys == resnet_keys | fpn_keys
    assert fpn.lateral[3].weight.shape == (64, 512, 1, 1)
    assert fpn.output[0].weight.shape == (64, 64, 3, 3)
    assert fpn.pretrained_target() is fpn.body


def test_torchvision_checkpoint_loads_into_body(tmp_path):
    torch.manual_seed(0)
    resnet = build_backbone("resnet18")
    state = {k: v + 0.1 for k, v in resnet.state_dict().items() if v.is_floating_point()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    torch.manual_seed(1)
    fpn = build_backbone("fpn_resnet18", pretrained=path)
    body = fpn.body.state_dict()
    for k, v in state.items():
        if not k.startswith("fc."):
            torch.testing.assert_close(body[k], v, rtol=0, atol=0)
    # FPN layers keep their initialisation (zero bias)
    assert all(torch.equal(c.bias, torch.zeros_like(c.bias)) for c in (*fpn.lateral, *fpn.output))
    assert isinstance(fpn.body, nn.Module)
