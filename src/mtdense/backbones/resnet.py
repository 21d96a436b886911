"""ResNet-18/34/50/101 as a dense-prediction backbone, with torchvision's parameter names.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016::

    @inproceedings{he2016deep,
      title={Deep Residual Learning for Image Recognition},
      author={He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
      booktitle={CVPR}, year={2016}}

The module tree is torchvision's (``conv1, bn1, layer1..layer4``; blocks ``layerN.i.conv1/bn1/conv2/
bn2[/conv3/bn3]``, ``downsample.0/1``), so a torchvision ImageNet ``.pth`` loads unchanged; its ``fc``
is not part of the backbone and is reported as ignored by :func:`load_pretrained`. Bottleneck is
torchvision's "ResNet v1.5" (stride on the 3x3 conv).

Output stride 16/8 replaces the stride of layer4 (and layer3) by dilation exactly as torchvision's
``replace_stride_with_dilation``: the first block of a dilated layer keeps the dilation of the layer
before it and only later blocks use the doubled rate (DeepLab, Chen et al. 2017). torchvision refuses
dilation in BasicBlock; here BasicBlock dilates both of its 3x3 convs so that ResNet-18/34 also run at
output stride 8, as the DeepLab heads of the multi-task baselines need.
"""

from __future__ import annotations

from torch import Tensor, nn

from mtdense.backbones._base import Backbone, FeatureInfo, register_backbone
from mtdense.errors import ConfigError

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101"]

_OUTPUT_STRIDES = {32: (False, False), 16: (False, True), 8: (True, True)}  # dilate (layer3, layer4)


def _conv3x3(in_ch: int, out_ch: int, *, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    # padding = dilation keeps the size at stride 1 and gives ceil(H/2) at stride 2
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut; torchvision names.

    ``(B, inplanes, H, W) -> (B, planes, ceil(H/stride), ceil(W/stride))``.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride=stride, dilation=dilation)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, dilated), 1x1 expand by 4, with shortcut; torchvision names (v1.5).

    ``(B, inplanes, H, W) -> (B, 4 * planes, ceil(H/stride), ceil(W/stride))``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = _conv3x3(planes, planes, stride=stride, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """ResNet trunk returning layer1..layer4 (C2..C5).

    Output ``[C2, C3, C4, C5]`` with reductions 4, 8, 16, 32 at output stride 32; 4, 8, 16, 16 at 16;
    4, 8, 8, 8 at 8. Channels 64/128/256/512 (BasicBlock) or 256/512/1024/2048 (Bottleneck).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks in layer1..layer4.
        output_stride: 32, 16 or 8.
        in_channels: input channels (3 for RGB; conv1 of an RGB checkpoint will not fit otherwise).
        zero_init_residual: start the last BN of every block at zero (Goyal et al. 2017), as
            torchvision's option of the same name.
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        *,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        output_stride: int = 32,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if output_stride not in _OUTPUT_STRIDES:
            raise ConfigError(f"resnet output_stride: expected one of 32, 16, 8, got {output_stride}")
        dilate3, dilate4 = _OUTPUT_STRIDES[output_stride]
        self.in_channels = in_channels
        self._inplanes = 64
        self._dilation = 1

        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        # reduction after each layer: the stem (conv1 + maxpool) divides by 4, each undilated layer by 2
        reduction = 4
        self.feature_info = []
        for i, (planes, stride, dilate) in enumerate(
            zip((64, 128, 256, 512), (1, 2, 2, 2), (False, False, dilate3, dilate4), strict=True)
        ):
            name = f"layer{i + 1}"
            self.add_module(name, self._make_layer(block, planes, layers[i], stride=stride, dilate=dilate))
            reduction *= 1 if dilate else stride
            self.feature_info.append(
                FeatureInfo(channels=planes * block.expansion, reduction=reduction, module=name)
            )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        *,
        stride: int,
        dilate: bool,
    ) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [
            block(self._inplanes, planes, stride=stride, dilation=previous_dilation, downsample=downsample)
        ]
        self._inplanes = planes * block.expansion
        layers += [block(self._inplanes, planes, dilation=self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_levels(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


@register_backbone("resnet18")
def resnet18(*, output_stride: int = 32, in_channels: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2); channels 64/128/256/512."""
    return ResNet(
        block=BasicBlock,
        layers=(2, 2, 2, 2),
        output_stride=output_stride,
        in_channels=in_channels,
        zero_init_residual=zero_init_residual,
    )


@register_backbone("resnet34")
def resnet34(*, output_stride: int = 32, in_channels: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34 (BasicBlock, 3-4-6-3); channels 64/128/256/512."""
    return ResNet(
        block=BasicBlock,
        layers=(3, 4, 6, 3),
        output_stride=output_stride,
        in_channels=in_channels,
        zero_init_residual=zero_init_residual,
    )


@register_backbone("resnet50")
def resnet50(*, output_stride: int = 32, in_channels: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3); channels 256/512/1024/2048."""
    return ResNet(
        block=Bottleneck,
        layers=(3, 4, 6, 3),
        output_stride=output_stride,
        in_channels=in_channels,
        zero_init_residual=zero_init_residual,
    )


@register_backbone("resnet101")
def resnet101(*, output_stride: int = 32, in_channels: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-101 (Bottleneck, 3-4-23-3); channels 256/512/1024/2048."""
    return ResNet(
        block=Bottleneck,
        layers=(3, 4, 23, 3),
        output_stride=output_stride,
        in_channels=in_channels,
        zero_init_residual=zero_init_residual,
    )
