"""Convolutional building blocks shared by the decoders.

* :class:`ConvBNReLU`: conv (no bias) + BatchNorm + optional ReLU, "same" padding.
* :class:`BasicBlock` / :class:`Bottleneck`: torchvision's residual blocks (He et al., CVPR 2016),
  re-exported from :mod:`mtdense.backbones.resnet` so that decoders and backbones share one definition;
  :func:`residual_block` builds one between any two widths, adding the 1x1 conv + BN projection
  shortcut when the width or the stride changes (as MTI-Net's per-scale task blocks need, Sec. 2.3).
* :class:`SqueezeExcitation`: channel gating of Hu, Shen, Sun, "Squeeze-and-Excitation Networks",
  CVPR 2018, Eqs. (2)-(4); MTI-Net's FPM refines the shared representation per task with it (Sec. 2.4).
"""

from __future__ import annotations

from torch import Tensor, nn

from mtdense.backbones.resnet import BasicBlock, Bottleneck
from mtdense.errors import ConfigError, check_shape

__all__ = ["BasicBlock", "Bottleneck", "ConvBNReLU", "SqueezeExcitation", "residual_block"]


class ConvBNReLU(nn.Sequential):
    """``Conv2d(kernel_size, bias=False) -> BatchNorm2d -> ReLU`` (ReLU optional).

    Padding is ``dilation * (kernel_size - 1) // 2``, so for odd kernels the output is
    ``(B, out_channels, ceil(H / stride), ceil(W / stride))``. The conv has no bias because the
    BatchNorm that follows has its own.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: odd kernel size.
        stride: conv stride.
        dilation: conv dilation (atrous rate).
        relu: append a ReLU.
        bn_momentum: BatchNorm momentum.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        relu: bool = True,
        bn_momentum: float = 0.1,
    ) -> None:
        if kernel_size % 2 != 1:
            raise ConfigError(f"ConvBNReLU: kernel_size must be odd for 'same' padding, got {kernel_size}")
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=dilation * (kernel_size - 1) // 2,
                dilation=dilation,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels, momentum=bn_momentum),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def residual_block(
    block: type[BasicBlock] | type[Bottleneck],
    in_channels: int,
    out_channels: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    bn_momentum: float = 0.1,
) -> BasicBlock | Bottleneck:
    """A torchvision residual block mapping ``in_channels`` to ``out_channels``.

    The block's inner width is ``out_channels // block.expansion`` (Bottleneck expands by 4). When
    ``in_channels != out_channels`` or ``stride != 1`` the shortcut is a 1x1 conv (with the stride,
    no bias) + BatchNorm, exactly torchvision's ``downsample``; otherwise it is the identity.

    ``(B, in_channels, H, W) -> (B, out_channels, ceil(H / stride), ceil(W / stride))``.

    Raises:
        ConfigError: ``out_channels`` is not a multiple of ``block.expansion``.
    """
    if out_channels % block.expansion != 0:
        raise ConfigError(
            f"residual_block: out_channels of a {block.__name__} must be a multiple of {block.expansion}, "
            f"got {out_channels}"
        )
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels, momentum=bn_momentum),
        )
    return block(
        in_channels,
        out_channels // block.expansion,
        stride=stride,
        dilation=dilation,
        downsample=downsample,
        bn_momentum=bn_momentum,
    )


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation channel gating (Hu et al., CVPR 2018).

    ``z = mean_{h,w} x`` (squeeze, Eq. 2); ``s = sigmoid(W_2 relu(W_1 z))`` with
    ``W_1: C -> C / r`` and ``W_2: C / r -> C`` fully connected layers with bias (excitation, Eq. 3);
    output ``x * s`` broadcast over the spatial dimensions (Eq. 4). The hidden width is
    ``max(1, C // reduction)`` so that narrow test models still have a bottleneck of at least one unit.

    ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``.
        reduction: ``r`` (16 in the paper and in MTI-Net's FPM).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ConfigError(f"SqueezeExcitation: reduction must be >= 1, got {reduction}")
        hidden = max(1, channels // reduction)
        self.channels = channels
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def gate(self, x: Tensor) -> Tensor:
        """The per-channel gate ``s`` in (0, 1), shape ``(B, C, 1, 1)``."""
        check_shape(
            "SqueezeExcitation input",
            x.shape,
            f"(B, {self.channels}, H, W)",
            x.ndim == 4 and x.shape[1] == self.channels,
        )
        z = x.mean(dim=(2, 3))
        return (self.fc2(self.relu(self.fc1(z))).sigmoid())[:, :, None, None]

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)
