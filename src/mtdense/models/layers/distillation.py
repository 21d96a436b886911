"""Multi-modal distillation: refine each target task's features with messages from the other tasks.

Four modules share one interface, ``module(features) -> refined``, where ``features`` maps every
*source* task to a ``(B, C_t, H, W)`` map (all at the same resolution) and ``refined`` maps every
*target* task (a subset of the sources; the main tasks) to a ``(B, out_channels[k], H, W)`` map:

| name | paper | refined target ``k`` |
|---|---|---|
| ``"concat"`` | PAD-Net module A (Sec. 3.4) | ``CONCAT(F^1, ..., F^T)`` (the same map for every target) |
| ``"message"`` | PAD-Net module B, Eq. (1) | ``F^k + sum_{t != k} W_{t,k} * F^t`` |
| ``"attention"`` | PAD-Net module C, Eqs. (2)-(3) | ``F^k + sum_{t != k} sigma(W_g^k * F^k) . (W_t * F^t)`` |
| ``"pairwise"`` | MTI-Net Eq. (1) | ``F^k + sum_{l != k} sigma(W_{k,l} * F^l) . (W'_{k,l} * F^l)`` |

(``*`` is a convolution, ``.`` the element-wise product, ``sigma`` the logistic sigmoid.) PAD-Net is
Xu, Ouyang, Wang, Sebe, "PAD-Net: Multi-Tasks Guided Prediction-and-Distillation Network for
Simultaneous Depth Estimation and Scene Parsing", CVPR 2018 (seed 001); MTI-Net is Vandenhende,
Georgoulis, Van Gool, "MTI-Net: Multi-Scale Task Interaction Networks for Multi-Task Learning",
ECCV 2020 (seed 002). The MTI-Net paper's re-implementation of PAD-Net (its HRNet experiments) uses
the ``"pairwise"`` form, so that is also :mod:`mtdense.models.padnet`'s ``mtinet_hrnet`` setting.

Choices where the papers are silent (all modules):

* every convolution is 3x3, stride 1, "same" padding and has no bias. MTI-Net's authors' code uses
  bias-free 3x3 convs for Eq. (1); PAD-Net's paper names no kernel size and we use the same one, so
  that zeroing a module's message convs makes it the identity on the targets (a bias would leak a
  constant into the residual);
* the sum over ``t != k`` runs over the sources other than ``k``; a target is always also a source
  (its own features are the residual's base).

Speed: instead of one convolution per (target, source) pair, every module runs **one convolution
per source** whose weight is the concatenation (along output channels) of that source's per-pair
kernels, e.g. ``[W_{k1,l}; W_{k2,l}; W'_{k1,l}; W'_{k2,l}]`` for Eq. (1). Concatenating the output
channels of convolutions of the same input is exactly the same computation, so the equations hold
bit-for-bit up to floating-point summation order; the per-pair kernels stay separate parameters
(``module.gate[k][l]``, ``module.message[k][l]``) so they can be inspected or zeroed, and
:meth:`reference_forward` evaluates the equations pair by pair for tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.errors import ConfigError, check_shape

__all__ = [
    "DISTILLATION_MODULES",
    "AttentionGuidedDistillation",
    "ConcatDistillation",
    "Distillation",
    "MessagePassingDistillation",
    "PairwiseGatedDistillation",
    "build_distillation",
]


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


def _fused_conv(x: Tensor, convs: Sequence[nn.Conv2d]) -> Tensor:
    """Apply several bias-free 3x3 convs of the same input as one conv (outputs concatenated in order)."""
    weight = convs[0].weight if len(convs) == 1 else torch.cat([c.weight for c in convs], dim=0)
    return F.conv2d(x, weight, padding=1)


class Distillation(nn.Module):
    """Base of the distillation modules: holds the task lists and checks the input.

    Args:
        channels: ``{source task: C_t}`` for every source task, in a fixed order (the concatenation
            order of module A).
        targets: the tasks to refine (main tasks); each must be a source.

    Attributes:
        sources: source task names, in ``channels`` order.
        targets: target task names.
        in_channels: ``channels`` as a dict.
        out_channels: ``{target: channels of its refined map}``.
    """

    def __init__(self, channels: Mapping[str, int], targets: Sequence[str]) -> None:
        super().__init__()
        self.in_channels = dict(channels)
        self.sources = tuple(self.in_channels)
        self.targets = tuple(targets)
        missing = [k for k in self.targets if k not in self.in_channels]
        if missing or not self.targets:
            raise ConfigError(
                f"{type(self).__name__}: every target must be a source task; targets {list(self.targets)}, "
                f"sources {list(self.sources)}"
            )
        self.out_channels = {k: self.in_channels[k] for k in self.targets}

    def _others(self, k: str) -> list[str]:
        return [t for t in self.sources if t != k]

    def _check(self, features: Mapping[str, Tensor]) -> None:
        size = None
        for t in self.sources:
            name = f"{type(self).__name__} input {t!r}"
            if t not in features:
                raise ConfigError(f"{name}: missing; expected features of tasks {list(self.sources)}")
            x = features[t]
            size = x.shape[-2:] if size is None else size
            ok = x.ndim == 4 and x.shape[1] == self.in_channels[t] and x.shape[-2:] == size
            check_shape(name, x.shape, f"(B, {self.in_channels[t]}, {tuple(size)[0]}, {tuple(size)[1]})", ok)

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Refined features of every target, ``{k: (B, out_channels[k], H, W)}``."""
        self._check(features)
        return self._forward(features)

    def _forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def reference_forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The module's equation evaluated term by term (one conv per pair); slow, for tests."""
        return self._forward(features)


class ConcatDistillation(Distillation):
    """PAD-Net distillation module A (Sec. 3.4): ``F^o = CONCAT(F^1, ..., F^T)``.

    One fused map, ``(B, sum_t C_t, H, W)`` in source order, is given to every target's decoder.
    No parameters.
    """

    def __init__(self, channels: Mapping[str, int], targets: Sequence[str]) -> None:
        super().__init__(channels, targets)
        total = sum(self.in_channels.values())
        self.out_channels = {k: total for k in self.targets}

    def _forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        fused = torch.cat([features[t] for t in self.sources], dim=1)
        return {k: fused for k in self.targets}


class MessagePassingDistillation(Distillation):
    """PAD-Net distillation module B, Eq. (1): ``F^{o,k} = F^k + sum_{t != k} W_{t,k} * F^t``.

    ``W_{t,k}`` is ``message[k][t]``, a 3x3 conv ``C_t -> C_k``. Output ``(B, C_k, H, W)`` per target.
    """

    def __init__(self, channels: Mapping[str, int], targets: Sequence[str]) -> None:
        super().__init__(channels, targets)
        c = self.in_channels
        self.message = nn.ModuleDict(
            {k: nn.ModuleDict({t: _conv3x3(c[t], c[k]) for t in self._others(k)}) for k in self.targets}
        )
        # per source: the targets it sends to, in a fixed order (the fused conv's output blocks)
        self._receivers = {t: [k for k in self.targets if k != t] for t in self.sources}

    def _forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        terms: dict[str, list[Tensor]] = {k: [features[k]] for k in self.targets}
        for t, receivers in self._receivers.items():
            if not receivers:
                continue
            y = _fused_conv(features[t], [self.message[k][t] for k in receivers])
            for k, m in zip(receivers, y.split([self.in_channels[k] for k in receivers], dim=1), strict=True):
                terms[k].append(m)
        return {k: _sum(v) for k, v in terms.items()}

    def reference_forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: features[k] + sum(self.message[k][t](features[t]) for t in self._others(k)) for k in self.targets}


class AttentionGuidedDistillation(Distillation):
    """PAD-Net distillation module C, Eqs. (2)-(3).

    Eq. (2): the attention map of target ``k`` comes from the target's own features,
    ``G^k = sigma(W_g^k * F^k)`` (``gate[k]``, 3x3 conv ``C_k -> C_k``). Eq. (3):
    ``F^{o,k} = F^k + sum_{t != k} G^k . (W_t * F^t)``, so ``F^{o,k} = F^k + G^k . sum_{t != k} M_t``
    with ``M_t = W_t * F^t``.

    Eq. (3) indexes the message kernel by the source only (``W_t``, unlike ``W_{t,k}`` of Eq. (1)), so
    one message conv per source (``message[t]``, ``C_t -> C``) is shared by all targets; this needs
    every target to have the same width ``C``. (MTI-Net's Eq. (1), module ``"pairwise"``, instead
    gates each message by the *source* features with a kernel per pair.)

    Raises:
        ConfigError: targets of different widths.
    """

    def __init__(self, channels: Mapping[str, int], targets: Sequence[str]) -> None:
        super().__init__(channels, targets)
        widths = {self.in_channels[k] for k in self.targets}
        if len(widths) != 1:
            raise ConfigError(
                "AttentionGuidedDistillation: PAD-Net Eq. (3) shares W_t across targets, so all targets need "
                f"the same number of channels; got {self.out_channels}"
            )
        (width,) = widths
        senders = [t for t in self.sources if any(k != t for k in self.targets)]
        receivers = [k for k in self.targets if self._others(k)]
        self.gate = nn.ModuleDict({k: _conv3x3(width, width) for k in receivers})
        self.message = nn.ModuleDict({t: _conv3x3(self.in_channels[t], width) for t in senders})

    def _forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        messages = {t: conv(features[t]) for t, conv in self.message.items()}
        out = {}
        for k in self.targets:
            others = [messages[t] for t in self._others(k)]
            if not others:
                out[k] = features[k]
                continue
            gate = torch.sigmoid(self.gate[k](features[k]))
            out[k] = torch.addcmul(features[k], gate, _sum(others))
        return out

    def reference_forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for k in self.targets:
            total = features[k]
            for t in self._others(k):
                total = total + torch.sigmoid(self.gate[k](features[k])) * self.message[t](features[t])
            out[k] = total
        return out


class PairwiseGatedDistillation(Distillation):
    """MTI-Net Eq. (1): ``F^o_k = F^i_k + sum_{l != k} sigma(W_{k,l} F^i_l) . (W'_{k,l} F^i_l)``.

    The spatial attention mask of each (target ``k``, source ``l``) pair comes from the source's
    features. ``W_{k,l}`` is ``gate[k][l]`` and ``W'_{k,l}`` is ``message[k][l]``, both 3x3 convs
    ``C_l -> C_k`` without bias (as in the MTI-Net authors' ``SABlock``). Targets are the main tasks,
    sources all tasks including auxiliary ones. Output ``(B, C_k, H, W)`` per target.

    Implementation: per source ``l`` one conv computes the gate logits of all its receivers followed by
    all their messages; one sigmoid and one product then give every pair's term at once.
    """

    def __init__(self, channels: Mapping[str, int], targets: Sequence[str]) -> None:
        super().__init__(channels, targets)
        c = self.in_channels
        self.gate = nn.ModuleDict(
            {k: nn.ModuleDict({t: _conv3x3(c[t], c[k]) for t in self._others(k)}) for k in self.targets}
        )
        self.message = nn.ModuleDict(
            {k: nn.ModuleDict({t: _conv3x3(c[t], c[k]) for t in self._others(k)}) for k in self.targets}
        )
        self._receivers = {t: [k for k in self.targets if k != t] for t in self.sources}

    def _forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        terms: dict[str, list[Tensor]] = {k: [features[k]] for k in self.targets}
        for t, receivers in self._receivers.items():
            if not receivers:
                continue
            convs = [self.gate[k][t] for k in receivers] + [self.message[k][t] for k in receivers]
            y = _fused_conv(features[t], convs)
            width = sum(self.in_channels[k] for k in receivers)
            gated = torch.sigmoid(y[:, :width]) * y[:, width:]
            for k, m in zip(receivers, gated.split([self.in_channels[k] for k in receivers], dim=1), strict=True):
                terms[k].append(m)
        return {k: _sum(v) for k, v in terms.items()}

    def reference_forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for k in self.targets:
            total = features[k]
            for t in self._others(k):
                total = total + torch.sigmoid(self.gate[k][t](features[t])) * self.message[k][t](features[t])
            out[k] = total
        return out


def _sum(tensors: Sequence[Tensor]) -> Tensor:
    out = tensors[0]
    for x in tensors[1:]:
        out = out + x
    return out


#: name -> distillation module class (the ``distillation`` option of PAD-Net's config).
DISTILLATION_MODULES: dict[str, type[Distillation]] = {
    "concat": ConcatDistillation,
    "message": MessagePassingDistillation,
    "attention": AttentionGuidedDistillation,
    "pairwise": PairwiseGatedDistillation,
}


def build_distillation(kind: str, *, channels: Mapping[str, int], targets: Sequence[str]) -> Distillation:
    """The distillation module ``kind`` (a key of :data:`DISTILLATION_MODULES`).

    Raises:
        ConfigError: unknown ``kind`` (the message lists the valid ones) or inconsistent tasks.
    """
    if kind not in DISTILLATION_MODULES:
        raise ConfigError(f"unknown distillation {kind!r}; valid: {', '.join(DISTILLATION_MODULES)}")
    return DISTILLATION_MODULES[kind](channels, targets)
