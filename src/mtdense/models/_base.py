"""What every architecture shares: input normalisation and the output-key contract."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MultiTaskModel(nn.Module):
    """Base class of every architecture.

    ``forward(image)`` takes RGB in [0, 1] ``(B, 3, H, W)``, normalises it with the ImageNet mean and
    standard deviation (so that ImageNet checkpoints apply and callers never normalise) and returns
    ``dict[str, Tensor]``: the final raw prediction of each main task keyed by the task name at the
    input resolution, and intermediate outputs for deep supervision keyed ``"<tag>/<task>"``
    (e.g. ``"initial/s8/depth"``, ``"aux/normals"``) at their own resolution. Subclasses implement
    :meth:`forward_normalized`.

    ``heads``: output channels of the main tasks; ``aux_heads``: of the auxiliary tasks (supervised
    only through intermediate outputs).
    """

    def __init__(self, heads: Mapping[str, int], aux_heads: Mapping[str, int] | None = None) -> None:
        super().__init__()
        self.heads = dict(heads)
        self.aux_heads = dict(aux_heads or {})
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def all_heads(self) -> dict[str, int]:
        """Main and auxiliary tasks with their output channels."""
        return {**self.heads, **self.aux_heads}

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        x = (image - self.pixel_mean.to(image.dtype)) / self.pixel_std.to(image.dtype)
        return self.forward_normalized(x)

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split into ``"backbone"`` (pre-trainable encoder) and ``"new"`` (everything else).

        The engine gives each group its own learning rate (``train.backbone_lr_mult``), as every
        seed paper does. A model whose encoder is not an attribute named ``backbone`` overrides this.
        """
        backbone = getattr(self, "backbone", None)
        ids = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "new": []}
        for p in self.parameters():
            groups["backbone" if id(p) in ids else "new"].append(p)
        return groups


def upsample_to(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resize of ``x`` to ``size`` (no-op when already that size); ``align_corners=False``."""
    if x.shape[-2:] == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
