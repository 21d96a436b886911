"""What every architecture shares: input normalisation and the output-key contract."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.errors import MtdenseError, ShapeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MultiTaskModel(nn.Module):
    """Base class of every architecture.

    ``forward(image)`` takes RGB in [0, 1] ``(B, 3, H, W)`` of a floating dtype (anything else raises
    :class:`~mtdense.errors.ShapeError`, see :func:`check_image`), normalises it with the ImageNet mean
    and standard deviation (so that ImageNet checkpoints apply and callers never normalise) and returns
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
        self.lr_mults: dict[str, float] = {}  # learning-rate multiplier per extra param group, see param_groups
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def all_heads(self) -> dict[str, int]:
        """Main and auxiliary tasks with their output channels."""
        return {**self.heads, **self.aux_heads}

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        return self.forward_normalized(self.normalize(image))

    def normalize(self, image: Tensor) -> Tensor:
        """Check ``image`` (:func:`check_image`) and normalise it with the ImageNet mean and std.

        ``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B, 3, H, W)`` of the same dtype.
        """
        check_image(image)
        return (image - self.pixel_mean.to(image.dtype)) / self.pixel_std.to(image.dtype)

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def explain(self, image: Tensor) -> dict[str, Tensor]:
        """Named internal maps that explain a prediction (``mtdense explain`` draws them).

        Contract: ``image`` is RGB in [0, 1] ``(B, 3, H, W)``, exactly as for :meth:`forward`; it
        is normalised here and passed to :meth:`explain_normalized`, which architectures override.
        The result maps a name to a ``(B, k, h, w)`` float tensor at the map's own resolution
        (``k >= 1`` channels; callers resize for display). One name is one figure ("map group");
        names use letters, digits, ``_``, ``-`` and ``/`` (``/`` groups related maps, e.g.
        ``"tam5/depth"``, ``"psd/semseg/before"``) and are stable across images, in a fixed order.
        Call it in eval mode under ``torch.no_grad()`` for inference; it does not change the model.

        Implemented by TRL (the attention map ``M`` of every task-attentional module, Fig. 4 of
        Zhang et al., ECCV 2018) and PSD (response maps before / after diffusion).

        Raises:
            MtdenseError: the architecture exposes no explanation maps (the default).
        """
        return self.explain_normalized(self.normalize(image))

    def explain_normalized(self, x: Tensor) -> dict[str, Tensor]:
        """:meth:`explain` on an ImageNet-normalised image; the default raises :class:`MtdenseError`."""
        raise MtdenseError(
            f"model {type(self).__name__} exposes no explanation maps (it does not implement explain_normalized)"
        )

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split into ``"backbone"`` (pre-trainable encoder) and ``"new"`` (everything else).

        The engine gives each group its own learning rate, as every seed paper does
        (:func:`mtdense.engine.setup.build_optimizer`): ``"backbone"`` at ``train.lr ×
        train.backbone_lr_mult``, ``"new"`` at ``train.lr``. An override may return further named
        groups; each such group ``g`` trains at ``train.lr × self.lr_mults[g]`` (the model attribute
        ``lr_mults: dict[str, float]``, default ``{}``; a group without an entry is an error), e.g.
        cross-stitch's α at its own multiplier. Every trainable parameter must be in exactly one
        group. A model whose encoder is not an attribute named ``backbone`` overrides this.
        """
        backbone = getattr(self, "backbone", None)
        ids = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "new": []}
        for p in self.parameters():
            groups["backbone" if id(p) in ids else "new"].append(p)
        return groups

    # -- what the tasks share (used by the loss balancers, mtdense.losses.balancing) ------------------
    def shared_encoder(self) -> nn.Module:
        """The module every task reads from: its output is the shared representation ``Z`` (MGDA-UB).

        Default: ``self.backbone`` when it is one :class:`~mtdense.backbones.Backbone`. An architecture
        without one shared encoder (cross-stitch keeps one backbone per task) overrides this or, by
        default, raises :class:`~mtdense.errors.MtdenseError` naming the architecture.
        """
        from mtdense.backbones import Backbone

        backbone = getattr(self, "backbone", None)
        if not isinstance(backbone, Backbone):
            raise MtdenseError(
                f"model {type(self).__name__} has no single shared encoder (self.backbone is "
                f"{type(backbone).__name__}); it must override shared_encoder() to use this loss balancer"
            )
        return backbone

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters shared by every task, on which gradient-level balancers (PCGrad, MGDA, CAGrad)
        combine the per-task gradients. Default: those of :meth:`shared_encoder`."""
        return list(self.shared_encoder().parameters())

    def shared_layer(self) -> nn.Module:
        """The last shared layer ``W`` on which GradNorm (Chen et al. 2018, Sec. 3) measures gradient norms.

        Default: the last direct child of :meth:`shared_encoder` that holds parameters, i.e. the
        backbone's last stage (ResNet ``layer4``, HRNet ``stage4``, FPN ``output``).
        """
        encoder = self.shared_encoder()
        stages = [m for m in encoder.children() if any(True for _ in m.parameters())]
        return stages[-1] if stages else encoder


def check_image(image: Tensor) -> None:
    """Raise :class:`ShapeError` unless ``image`` is a floating-point ``(B, 3, H, W)`` tensor.

    The message reads ``"model input: expected (B, 3, H, W) float image, got shape (...) of dtype ..."``.
    Without this check a ``(B, 4, H, W)`` batch fails deep inside broadcasting with a raw
    ``RuntimeError``, a ``(3, H, W)`` image is silently broadcast against the ``(1, 3, 1, 1)`` mean
    into a batch of one, and an integer (e.g. uint8, 0..255) image is normalised with the mean and std
    cast to that dtype (both 0): a division by zero.

    Only tensor metadata (``ndim``, ``shape``, ``dtype``) is read: no device synchronisation, and
    ``torch.compile``/``torch.export`` trace it as a guard on the input's rank, channels and dtype (no
    graph break). Under ``torch.compile(fullgraph=True)`` a bad input surfaces as dynamo's
    ``Unsupported`` error wrapping this ShapeError; the default ``fullgraph=False`` raises it as is.
    Values are not checked (that would need a host sync); a float image in [0, 255] passes.
    """
    if not isinstance(image, Tensor):
        raise ShapeError(f"model input: expected (B, 3, H, W) float image, got {type(image).__name__}")
    if image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ShapeError(
            f"model input: expected (B, 3, H, W) float image, got shape {tuple(image.shape)} of dtype {image.dtype}"
        )


def upsample_to(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resize of ``x`` to ``size`` (no-op when already that size); ``align_corners=False``."""
    if x.shape[-2:] == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
