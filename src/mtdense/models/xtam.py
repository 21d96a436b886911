"""Cross-task attention: the directional xTAM and the multi-task exchange block (mTEB).

Lopes, de Charette, et al., "Cross-task Attention Mechanism for Dense Multi-task Learning", WACV 2023
(seed 004; code "DenseMTL")::

    @inproceedings{lopes2023densemtl,
      title={Cross-task Attention Mechanism for Dense Multi-task Learning},
      author={Lopes, Ivan and Vu, Tuan-Hung and de Charette, Raoul},
      booktitle={WACV}, year={2023}}

This file holds the layers; the "3-ways" decoder that places them is :mod:`mtdense.models.threeways`
(registered as ``threeways``, ``exchange: xtam``).

:class:`DirectionalXTAM` is ``xTAM_{j->i}`` (Sec. 3.1.1), the features of source task ``j`` that help
target task ``i``; both ``f_i`` and ``f_j`` are ``(B, C, H, W)``:

* extractor: ``e_j = ReLU(conv3x3(f_j))`` (C -> C, with bias). Where the paper is silent we follow the
  authors' code: both attention branches read ``e_j``, not ``f_j``;
* correlation-guided attention, Eqs. (1)-(2) (:class:`CorrelationAttention`): the query
  ``Q = P_Q(down_s f_i)`` (nearest downscale by ``s``), the key and value ``K = P_K(maxpool_s e_j)``,
  ``V = P_V(maxpool_s e_j)``, each ``P`` a 1x1 conv (no bias) + BN + ReLU to ``d = C`` channels;
  ``A = softmax(Q^T K / sqrt(d))`` with the softmax over the *source* positions, so every target
  position takes a convex combination of the source's values; ``xtask = up_s(V A^T)`` (nearest
  upsampling to exactly ``(H, W)``);
* self-attention, Eq. (3) (:class:`SelfAttention`): ``self = F_f(e_j) * sigmoid(F_m(e_j))``, with
  ``F_f, F_m`` 3x3 convs C -> C/2 (no bias; the paper names no bias and a bias-free gate keeps the
  PAD-Net/MTI-Net form of :mod:`~mtdense.models.layers.distillation`);
* directional feature, Eq. (4): ``f_{j->i} = P_out([diag(alpha) xtask, self])``, ``alpha`` a learnable
  per-channel scale **initialised at 0** (so the block starts as self-attention only, Sec. 3.1.1),
  ``P_out`` a 1x1 conv (no bias) + BN + ReLU (3C/2 -> C), as the authors' code.

:class:`MTEB` is Eq. (5): for every target ``i``, ``f~_i = f_i (+) F_{->i}([f_{j->i}]_{j != i})`` with
``F_{->i}`` a 1x1 conv (no bias) + BN + ReLU ((T-1)C -> C). The fusion ``(+)`` (Table 4a):

* ``add`` (the paper's): ``f_i + F(...)``;
* ``prod``: ``f_i * F(...)``;
* ``concat``: ``F'([f_i, f_{j->i} ...])`` with ``F'`` a 1x1 conv + BN + ReLU (TC -> C) in place of
  ``F`` (the authors' code: the base features join the concatenation).

The source tasks enter the concatenation in a **fixed order**: the order of ``tasks`` given to the
block (the config's ``data.tasks`` then ``data.aux_tasks``), minus the target. The authors' code
iterates a Python ``set`` of task names, whose order changes with ``PYTHONHASHSEED``, so a checkpoint
reloaded in another process feeds ``F_{->i}`` permuted inputs; :meth:`MTEB.sources` is the order used.

Correlation type (Table 4b, ``attention``): ``spatial`` (Eqs. 1-2, the paper's); ``channel`` (choice:
the channel attention of DANet, Fu et al., CVPR 2019: ``A = softmax(Q K^T / sqrt(N))`` over the source
*channels*, ``N = hw/s^2`` the dot-product length, output ``A V``, with the same ``P_Q, P_K, P_V``);
``both`` (the sum of the two outputs, as DANet sums its two modules).

Memory: the spatial attention holds, per image and per directed pair, an ``(h w / s^2) x (h w / s^2)``
matrix (float32: ``4 (hw)^2 / s^4`` bytes); ``s`` is the paper's means to keep it small. At NYUD's
448x576 input and the paper's placement (decoder scale 1, 224x288, ``s = 4``) that is 4032^2 entries,
65 MB per image per pair, and an S-D-N-E mTEB has 12 directed pairs.

The block's parameter count (:meth:`MTEB.param_count`, Table 3's "Param." column, "#M added"): with
``C`` channels and ``T`` tasks, per directed pair ``9C^2 + C`` (extractor) ``+ 2 * 9C^2/2`` (F_f, F_m)
``+ 3 (C^2 + 2C)`` (P_Q, P_K, P_V with BN) ``+ C`` (alpha) ``+ 3C^2/2 + 2C`` (P_out), plus per target
``(T-1)C^2 + 2C`` (F_{->i}); at ``C = 128`` (decoder scale 1) that is 0.77 M for S-D and 2.32 M for
S-D-N, Table 3's values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtdense.errors import ConfigError, check_shape

__all__ = [
    "ATTENTION_KINDS",
    "FUSIONS",
    "MTEB",
    "CorrelationAttention",
    "DirectionalXTAM",
    "SelfAttention",
]

Fusion = Literal["add", "prod", "concat"]
AttentionKind = Literal["spatial", "channel", "both"]


def _spatial_attention(q: Tensor, k: Tensor) -> Tensor:
    """Eq. (1): ``softmax(Q^T K / sqrt(d))`` over the source positions; ``(B, d, N) x2 -> (B, N_t, N_s)``."""
    return torch.softmax(q.transpose(1, 2) @ k / math.sqrt(q.shape[1]), dim=-1)


def _spatial_out(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Eq. (2) before upsampling: ``V A^T``, ``(B, C, N_source) @ (B, N_source, N_target)``."""
    return v @ _spatial_attention(q, k).transpose(1, 2)


def _channel_out(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Channel attention (DANet): ``softmax(Q K^T / sqrt(N))`` over the source channels, times ``V``."""
    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v


#: Table 4b: attention type -> the terms summed into ``xtask`` (before upsampling).
ATTENTION_KINDS: dict[str, tuple[Callable[[Tensor, Tensor, Tensor], Tensor], ...]] = {
    "spatial": (_spatial_out,),
    "channel": (_channel_out,),
    "both": (_spatial_out, _channel_out),
}


def _project(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv (no bias) + BN + ReLU: the paper's "1x1 convolution followed by BN and ReLU"."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
    )


def _fuse_add(base: Tensor, directional: Sequence[Tensor], project: nn.Module) -> Tensor:
    return base + project(torch.cat(list(directional), dim=1))


def _fuse_prod(base: Tensor, directional: Sequence[Tensor], project: nn.Module) -> Tensor:
    return base * project(torch.cat(list(directional), dim=1))


def _fuse_concat(base: Tensor, directional: Sequence[Tensor], project: nn.Module) -> Tensor:
    return project(torch.cat([base, *directional], dim=1))


#: Table 4a: fusion -> (function ``(f_i, [f_{j->i}], F) -> f~_i``, whether ``f_i`` enters ``F``'s input).
FUSIONS: dict[str, tuple[Callable[[Tensor, Sequence[Tensor], nn.Module], Tensor], bool]] = {
    "add": (_fuse_add, False),
    "prod": (_fuse_prod, False),
    "concat": (_fuse_concat, True),
}


class CorrelationAttention(nn.Module):
    """Correlation-guided attention ``xtask_{j->i}``, Eqs. (1)-(2), without the ``alpha`` scale.

    ``forward(target (B, C, H, W), source (B, C, H, W)) -> (B, C, H, W)``.

    Args:
        channels: ``C`` (also ``d``, the width of the query/key/value projections).
        downscale: ``s``; the attention runs on ``(ceil(H/s), ceil(W/s))`` maps.
        kind: ``spatial`` (Eq. 1), ``channel`` or ``both`` (Table 4b, see the module docstring).
    """

    def __init__(self, channels: int, *, downscale: int, kind: AttentionKind = "spatial") -> None:
        super().__init__()
        if downscale < 1:
            raise ConfigError(f"xTAM: downscale s must be >= 1, got {downscale}")
        if kind not in ATTENTION_KINDS:
            raise ConfigError(f"xTAM: unknown attention {kind!r}; valid: {', '.join(ATTENTION_KINDS)}")
        self.channels = channels
        self.downscale = downscale
        self.kind = kind
        self.query = _project(channels, channels)
        self.key = _project(channels, channels)
        self.value = _project(channels, channels)

    def _qkv(self, target: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
        check_shape(
            "xTAM target features",
            target.shape,
            f"(B, {self.channels}, H, W)",
            target.ndim == 4 and target.shape[1] == self.channels,
        )
        check_shape(
            "xTAM source features", source.shape, f"{tuple(target.shape)} (as the target)", source.shape == target.shape
        )
        s = self.downscale
        small = (math.ceil(target.shape[-2] / s), math.ceil(target.shape[-1] / s))
        q = self.query(F.interpolate(target, size=small, mode="nearest") if s > 1 else target)
        pooled = F.max_pool2d(source, s, s, ceil_mode=True) if s > 1 else source
        return q.flatten(2), self.key(pooled).flatten(2), self.value(pooled).flatten(2), small

    def attention(self, target: Tensor, source: Tensor) -> Tensor:
        """The spatial correlation matrix of Eq. (1), ``(B, N_target, N_source)``, ``N = ceil(H/s) ceil(W/s)``.

        Row ``q`` is a softmax over the source positions: non-negative and summing to 1.
        """
        q, k, _, _ = self._qkv(target, source)
        return _spatial_attention(q, k)

    def forward(self, target: Tensor, source: Tensor) -> Tensor:
        q, k, v, small = self._qkv(target, source)
        first, *rest = (term(q, k, v) for term in ATTENTION_KINDS[self.kind])
        for extra in rest:  # "both": the sum of the two outputs
            first = first + extra
        out = first.view(v.shape[0], v.shape[1], *small)
        if self.downscale == 1:
            return out
        return F.interpolate(out, size=target.shape[-2:], mode="nearest")


class SelfAttention(nn.Module):
    """Eq. (3): ``F_f(x) * sigmoid(F_m(x))``, 3x3 convs ``C -> C/2`` without bias.

    ``(B, C, H, W) -> (B, C/2, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 2:
            raise ConfigError(f"xTAM: the self-attention halves the channels, so C must be even, got {channels}")
        self.features = nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False)
        self.mask = nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x) * torch.sigmoid(self.mask(x))


class DirectionalXTAM(nn.Module):
    """``xTAM_{j->i}`` (Sec. 3.1.1): the directional feature ``f_{j->i}`` of Eq. (4).

    ``forward(target f_i (B, C, H, W), source f_j (B, C, H, W)) -> (B, C, H, W)``.

    Args:
        channels: ``C``, even.
        downscale: ``s`` of the correlation-guided attention.
        attention: ``spatial`` | ``channel`` | ``both`` (Table 4b).
    """

    def __init__(self, channels: int, *, downscale: int, attention: AttentionKind = "spatial") -> None:
        super().__init__()
        self.extractor = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.correlation = CorrelationAttention(channels, downscale=downscale, kind=attention)
        self.self_attention = SelfAttention(channels)
        # Eq. (4): alpha_1..c initialised at 0, so xTAM starts as self-attention only
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.project = _project(channels + channels // 2, channels)

    def forward(self, target: Tensor, source: Tensor) -> Tensor:
        e = self.extractor(source)
        xtask = self.alpha * self.correlation(target, e)
        return self.project(torch.cat([xtask, self.self_attention(e)], dim=1))


class MTEB(nn.Module):
    """Multi-task exchange block, Eq. (5): every task's features refined by every other task's.

    ``forward({task: (B, C, H, W)}) -> {task: (B, C, H, W)}`` for every task of ``tasks``.

    Args:
        tasks: the tasks, in the fixed order in which sources are concatenated (at least two, unique).
        channels: ``C`` of every task's features (even).
        downscale: ``s`` of the correlation-guided attention.
        fusion: ``add`` (Eq. 5) | ``prod`` | ``concat`` (Table 4a).
        attention: ``spatial`` | ``channel`` | ``both`` (Table 4b).

    Submodules: ``pairs["<source>_to_<target>"]`` (:class:`DirectionalXTAM`), ``fuse[<target>]``
    (``F_{->i}``).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        channels: int,
        *,
        downscale: int,
        fusion: Fusion = "add",
        attention: AttentionKind = "spatial",
    ) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        if len(self.tasks) < 2 or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"mTEB: expected at least two distinct tasks, got {list(self.tasks)}")
        if fusion not in FUSIONS:
            raise ConfigError(f"mTEB: unknown fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
        self.channels = channels
        self.fusion = fusion
        self.pairs = nn.ModuleDict(
            {
                f"{j}_to_{i}": DirectionalXTAM(channels, downscale=downscale, attention=attention)
                for i in self.tasks
                for j in self.sources(i)
            }
        )
        self._fuse_fn, with_base = FUSIONS[fusion]
        n_in = len(self.tasks) if with_base else len(self.tasks) - 1
        self.fuse = nn.ModuleDict({i: _project(n_in * channels, channels) for i in self.tasks})

    def sources(self, target: str) -> list[str]:
        """The source tasks of ``target`` in the order their directional features are concatenated."""
        return [t for t in self.tasks if t != target]

    def directional(self, features: Mapping[str, Tensor]) -> dict[str, list[Tensor]]:
        """``{target i: [f_{j->i} for j in sources(i)]}`` (Eq. 4)."""
        if set(features) != set(self.tasks):
            raise ConfigError(f"mTEB: expected features of tasks {sorted(self.tasks)}, got {sorted(features)}")
        first = features[self.tasks[0]]
        for t in self.tasks:
            x = features[t]
            ok = x.ndim == 4 and x.shape[1] == self.channels and x.shape == first.shape
            check_shape(f"mTEB input {t!r}", x.shape, f"(B, {self.channels}, H, W) as every task's", ok)
        return {i: [self.pairs[f"{j}_to_{i}"](features[i], features[j]) for j in self.sources(i)] for i in self.tasks}

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        directional = self.directional(features)
        return {i: self._fuse_fn(features[i], directional[i], self.fuse[i]) for i in self.tasks}

    def param_count(self) -> int:
        """Trainable parameters the block adds (Table 3's "Param." column, in units, not millions)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
