"""PSD: pattern-structure diffusion for joint depth, segmentation and surface-normal prediction.

Zhou, Cui, Xu, Zhang, Wang, Zhang, Yang, "Pattern-Structure Diffusion for Multi-Task Learning",
CVPR 2020 (seed 000)::

    @inproceedings{zhou2020psd,
      title={Pattern-Structure Diffusion for Multi-Task Learning},
      author={Zhou, Ling and Cui, Zhen and Xu, Chunyan and Zhang, Zhenyu and Wang, Chaoqun and
              Zhang, Tong and Yang, Jian},
      booktitle={CVPR}, year={2020}}

No code was released with the paper; this file is our reading of it, and every choice the paper
leaves open is stated where it is made.

**Pattern structures** (Sec. 3.2). Around every pixel ``p`` an ``l x l`` window is a graphlet whose
edge weights are ``exp(-||x_j - x_k||^2 / sigma^2)`` (Eq. 1, ``sigma^2 = 2``). We implement the
practical variant of Sec. 4.2 ("we only concern on the connection of the center node with others ...
and aggregate all channels"): only the ``l^2`` centre-to-neighbour edges, the squared distance summed
over channels, so one ``l x l`` weight set per pixel; rows normalised to sum 1 (Eq. 4). The
channel-wise variant (``channelwise=True``: one weight set per pixel and channel) is an option.
:func:`graphlet_affinity` computes them without ever forming the ``|V| x |V|`` matrix of Eq. 3.

**Intra-task PSD** (Sec. 3.3): :func:`intra_task_diffusion` iterates Eq. 6,
``X(t+1)_p = X(t)_p + beta * sum_k A_pk X(t)_{p+k}`` (``beta = 0.05``, ``T = 9``), and
:class:`IntraTaskPSD` concatenates ``X(1..T)`` and applies a 1x1 conv + ReLU (Eq. 7).

**Inter-task PSD** (Sec. 3.4): the affinity transferred from task ``d`` into task ``s`` is
``A^{sd} = A^s (.) A^d / F^{sd}`` (Eqs. 9-10, :func:`inter_task_affinity`); the target's features
are diffused once with every other task's transferred affinity and its own ``beta_sd`` (Eq. 8), then
concatenated with the intra-task features and fused by a 1x1 conv + ReLU (:class:`InterTaskPSD`).

**Network** (Sec. 3.1, Fig. 2): shared encoder, one decoder per task, coarse to fine. At each decoder
scale (every backbone level but the last, coarse to fine; ResNet: 1/16, 1/8, 1/4) each task
decodes the previous features (3x3 conv + BN + ReLU, bilinear upsampling to the exact size of the
encoder level), concatenates the encoder feature of that scale, applies a residual block (a
BasicBlock with a 1x1 projection shortcut), then the interaction module of that scale (the PSD layer
by default) and a 1x1 prediction conv. Every scale is supervised (Sec. 3.1 "supervised under
multi-loss functions followed by a convolution prediction layer at each scale"): the output of scale
``1/r`` is ``"scale<r>/<task>"`` at its own resolution; the finest scale's prediction of a main task,
resized bilinearly to the input, is the final ``"<task>"`` (an auxiliary task keeps its finest
``"scale<r>/<task>"`` instead). The losses of Sec. 3.5 -- berHu for depth, cross-entropy for
segmentation, L1 for normals -- are config choices (``loss.depth: berhu``), not model code.

**Ablation switches** (Table 6 and Fig. 9 of the paper, all in :class:`PSDConfig`):

=======================  =====================================================================
Table 6 / Fig. 9 row     config
=======================  =====================================================================
baseline                 ``interaction: none`` (three decoders, no exchange)
naive fusion             ``interaction: naive_fusion`` (concatenate all tasks, 1x1 conv + ReLU)
cross-stitch             ``interaction: cross_stitch`` (a cross-stitch unit on the task features)
+ intra-task PSD         ``interaction: psd, inter: false``
+ inter-task PSD         ``interaction: psd, intra: false``
PSD on small/middle/big  ``psd_scales: [16]`` / ``[8]`` / ``[4]`` (the first five rows use ``[16]``)
PSD on all scales        ``psd_scales: null`` (the default)
graphlet size            ``graphlet_size: 3 | 5 | 7 | 9`` (9 / 25 / 49 / 81 nodes)
iterations               ``steps: 1 ... 9+``
=======================  =====================================================================

Choices where the paper is silent, and why:

* ``X(0)`` is the decoded feature, and ``intra_task_diffusion`` returns ``X(1..T)``, the results of
  ``T`` iterations, so ``steps`` is the number of diffusion iterations of Fig. 9.
* The affinities ``A^t`` are computed once per task and scale on the decoded features that enter the
  PSD layer and are used at every iteration (Eq. 6 has no ``t`` on ``A``) and by inter-task PSD
  ("cross-task correlations are defined on intra-task pattern structures", Fig. 4). Gradients flow
  through them.
* Inter-task PSD is one step of Eq. 8 (the equation has no iteration index), summed over all other
  tasks (the paper writes it for three tasks). ``beta_sd`` is ``inter_beta`` for every pair (the
  paper names one per pair without values; we take the intra-task 0.05 of PAP, ref. [55]).
* With ``inter`` off, the PSD layer is Eq. 7; with ``intra`` off, Eq. 8 acts on the decoded features
  directly.
* Decoder width: ``channels`` (128) at every scale; the 1x1 fusion convs of Eqs. 7-8 have a bias
  and no BatchNorm ("one 1x1 convolution layer followed by the ReLU").
* The finest decoder scale is the finest backbone level (1/4 for ResNet); the paper's figure does
  not say whether a 1/2 stage follows, and ``feature_info`` publishes no 1/2 level to skip from.
* Auxiliary tasks (``data.aux_tasks``) get a decoder and take part in the interaction like main
  tasks.

Cost (Sec. 3.3): the affinities take ``O(l^2 |V| C)`` time and ``O(l^2 |V|)`` memory (``O(l^2 |V| C)``
channel-wise); each diffusion step is ``l^2`` shifted multiply-adds, ``O(l^2 |V| C)``, so intra-task PSD is
``O(l^2 T |V| C)`` time. Both window operations have hand-written backward passes that keep only their
inputs (``x`` and ``A``) and accumulate gradients into one padded buffer, so training keeps
``O(T |V| C + l^2 |V|)`` per task and scale, never an ``l^2``-fold copy of the features and never a
``|V| x |V|`` matrix; ``benchmarks/bench_psd.py`` measures it against a dense ``|V| x |V|`` affinity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from mtdense.config.schema import ModelConfig
from mtdense.errors import ConfigError, ShapeError, check_shape
from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import register_model
from mtdense.models.cross_stitch import CrossStitchUnit
from mtdense.models.layers.blocks import BasicBlock, ConvBNReLU, residual_block
from mtdense.models.stl_mtl import backbone_from_config, check_task_heads

__all__ = [
    "INTERACTIONS",
    "CrossStitchInteraction",
    "InterTaskPSD",
    "IntraTaskPSD",
    "NaiveFusion",
    "NoInteraction",
    "PSDConfig",
    "PSDLayer",
    "PSDNet",
    "build_psd",
    "graphlet_affinity",
    "inter_task_affinity",
    "intra_task_diffusion",
]

InteractionName = Literal["none", "naive_fusion", "cross_stitch", "psd"]


# ----------------------------------------------------------------------------------------------
# The three equations, as functions
# ----------------------------------------------------------------------------------------------
def _window_offsets(size: int) -> list[tuple[int, int]]:
    """``(dy, dx)`` of the ``size x size`` window in raster order (row by row, Sec. 3.2's vec)."""
    r = size // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def _check_window(name: str, size: int) -> None:
    if not isinstance(size, int) or size < 1 or size % 2 != 1:
        raise ValueError(f"{name}: the graphlet size must be an odd integer >= 1, got {size!r}")


def _shifted(padded: Tensor, dy: int, dx: int, r: int, h: int, w: int) -> Tensor:
    """View of ``padded`` (padded by ``r`` on each side) whose pixel ``p`` holds pixel ``p + (dy, dx)``."""
    return padded[..., r + dy : r + dy + h, r + dx : r + dx + w]


def _a_k(a: Tensor, k: int) -> Tensor:
    """Weights of offset ``k``: ``(B, 1, H, W)`` (channel-summed affinity) or ``(B, C, H, W)`` (channel-wise)."""
    return a[:, k : k + 1] if a.ndim == 4 else a[:, k]


class _WindowSquaredDistance(torch.autograd.Function):
    """``d_pk = sum_c (x_cp - x_c,p+k)^2`` (or per channel) for every window offset ``k``; zero padding outside.

    ``(B, C, H, W) -> (B, l*l, H, W)`` or ``(B, l*l, C, H, W)``. A hand-written backward keeps only ``x``
    for the backward pass and accumulates into one padded buffer, instead of the ``l*l`` differences and
    ``l*l`` zero-filled slice gradients that autograd would keep and allocate.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, channelwise: bool) -> Tensor:
        r, (h, w) = size // 2, x.shape[-2:]
        padded = F.pad(x, (r, r, r, r))
        d2 = []
        for dy, dx in _window_offsets(size):
            diff = (x - _shifted(padded, dy, dx, r, h, w)).square_()
            d2.append(diff if channelwise else diff.sum(dim=1))
        ctx.save_for_backward(x)
        ctx.size = size
        return torch.stack(d2, dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        size = ctx.size
        r, (h, w) = size // 2, x.shape[-2:]
        padded = F.pad(x, (r, r, r, r))
        grad_padded = torch.zeros_like(padded)
        centre = _shifted(grad_padded, 0, 0, r, h, w)
        for k, (dy, dx) in enumerate(_window_offsets(size)):
            g_k = 2 * _a_k(grad, k) * (x - _shifted(padded, dy, dx, r, h, w))  # d d_pk / d x_p
            centre += g_k
            _shifted(grad_padded, dy, dx, r, h, w).sub_(g_k)  # d d_pk / d x_{p+k} = -d d_pk / d x_p
        return centre.contiguous(memory_format=_memory_format(x)), None, None


class _WindowPropagate(torch.autograd.Function):
    """``y_p = sum_k A_pk x_{p+k}`` (zero padding outside), ``(B, C, H, W), (B, l*l[, C], H, W) -> (B, C, H, W)``.

    The backward pass keeps only ``x`` and ``A`` (``O(|V| C + l^2 |V|)``) and scatters
    ``dL/dx_{p+k} += A_pk dL/dy_p`` into one padded buffer.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, a: Tensor, size: int) -> Tensor:
        r, (h, w) = size // 2, x.shape[-2:]
        padded = F.pad(x, (r, r, r, r))
        out = torch.zeros_like(x)
        for k, (dy, dx) in enumerate(_window_offsets(size)):
            out.addcmul_(_a_k(a, k), _shifted(padded, dy, dx, r, h, w))
        ctx.save_for_backward(x, a)
        ctx.size = size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, a = ctx.saved_tensors
        size = ctx.size
        r, (h, w) = size // 2, x.shape[-2:]
        offsets = _window_offsets(size)
        grad_x = grad_a = None
        if ctx.needs_input_grad[0]:
            grad_padded = F.pad(torch.zeros_like(grad), (r, r, r, r))
            for k, (dy, dx) in enumerate(offsets):
                _shifted(grad_padded, dy, dx, r, h, w).addcmul_(_a_k(a, k), grad)
            grad_x = _shifted(grad_padded, 0, 0, r, h, w).contiguous(memory_format=_memory_format(x))
        if ctx.needs_input_grad[1]:
            padded = F.pad(x, (r, r, r, r))
            terms = [grad * _shifted(padded, dy, dx, r, h, w) for dy, dx in offsets]
            grad_a = torch.stack(terms if a.ndim == 5 else [t.sum(dim=1) for t in terms], dim=1)
        return grad_x, grad_a, None


def _memory_format(x: Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)
        else (torch.contiguous_format)
    )


def graphlet_affinity(x: Tensor, size: int = 3, sigma2: float = 2.0, *, channelwise: bool = False) -> Tensor:
    """Row-normalised centre-to-neighbour graphlet affinities (Eqs. 1 and 4; Sec. 4.2's variant).

    For every pixel ``p`` and every offset ``k`` of the ``size x size`` window (raster order, the
    centre included), ``w_pk = exp(-||x_p - x_{p+k}||^2 / sigma2)`` with the squared distance summed
    over channels, ``w_pk = 0`` when ``p + k`` lies outside the image, and
    ``A_pk = w_pk / sum_k' w_pk'``. The centre has ``w = exp(0) = 1``, so a row never sums to 0.

    Args:
        x: features ``(B, C, H, W)``.
        size: ``l``, odd window size (3 in the paper's main results, 5 its best).
        sigma2: ``sigma^2`` of Eq. 1 (2 in the paper).
        channelwise: one weight set per channel (``w`` from the channel's own squared difference)
            instead of the channel-summed one.

    Returns:
        ``(B, l*l, H, W)``, or ``(B, l*l, C, H, W)`` with ``channelwise``; non-negative, summing to
        1 over dim 1, zero for neighbours outside the image; dtype of ``x`` (computed in float32 for half types).
    """
    check_shape("graphlet_affinity: x", x.shape, "(B, C, H, W)", x.ndim == 4)
    _check_window("graphlet_affinity", size)
    if not sigma2 > 0:
        raise ValueError(f"graphlet_affinity: sigma2 must be > 0, got {sigma2}")
    r, (h, w) = size // 2, x.shape[-2:]
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    d2 = _WindowSquaredDistance.apply(xf, size, channelwise)  # (B, l*l, H, W) or (B, l*l, C, H, W)
    inside = F.pad(xf.new_ones(1, 1, h, w), (r, r, r, r))
    mask = torch.stack([_shifted(inside, dy, dx, r, h, w)[:, 0] for dy, dx in _window_offsets(size)], dim=1)
    a = torch.exp(d2 / -sigma2) * (mask if not channelwise else mask[:, :, None])
    a = a / a.sum(dim=1, keepdim=True)
    return a.to(x.dtype)


def _window_of(name: str, x: Tensor, affinity: Tensor) -> int:
    """Check ``affinity`` against ``x`` and return the window size ``l``."""
    b, c, h, w = x.shape if x.ndim == 4 else (None,) * 4
    l2 = affinity.shape[1] if affinity.ndim >= 2 else 0
    size = math.isqrt(l2)
    ok = (
        x.ndim == 4
        and size * size == l2
        and size % 2 == 1
        and (
            (affinity.ndim == 4 and affinity.shape[0] == b and affinity.shape[2:] == (h, w))
            or (affinity.ndim == 5 and affinity.shape[0] == b and affinity.shape[2:] == (c, h, w))
        )
    )
    if not ok:
        raise ShapeError(
            f"{name}: expected x (B, C, H, W) and affinity (B, l*l, H, W) or (B, l*l, C, H, W) with the same "
            f"B, C, H, W and odd l, got x {tuple(x.shape)} and affinity {tuple(affinity.shape)}"
        )
    return size


def _propagate(x: Tensor, affinity: Tensor, size: int) -> Tensor:
    """``sum_k A_pk x_{p+k}`` over the window: ``l*l`` shifted multiply-adds, no ``|V| x |V|`` matrix.

    Neighbours outside the image read zero padding (their weight is zero anyway).
    """
    return _WindowPropagate.apply(x, affinity.to(x.dtype), size)


def intra_task_diffusion(x: Tensor, affinity: Tensor, beta: float = 0.05, steps: int = 9) -> list[Tensor]:
    """Recursive intra-task diffusion, Eq. 6: ``X(t+1)_p = X(t)_p + beta * sum_k A_pk X(t)_{p+k}``.

    ``X(0) = x``; the affinity (from :func:`graphlet_affinity`) is the same at every step.

    Args:
        x: features ``(B, C, H, W)``.
        affinity: ``(B, l*l, H, W)`` (channel-summed) or ``(B, l*l, C, H, W)`` (channel-wise).
        beta: balance factor (0.05 in the paper, after PAP).
        steps: ``T >= 1``, the number of iterations.

    Returns:
        ``[X(1), ..., X(T)]``, each ``(B, C, H, W)``.
    """
    size = _window_of("intra_task_diffusion", x, affinity)
    if steps < 1:
        raise ValueError(f"intra_task_diffusion: steps must be >= 1, got {steps}")
    out = []
    for _ in range(steps):
        x = x + beta * _propagate(x, affinity, size)
        out.append(x)
    return out


def inter_task_affinity(a_s: Tensor, a_d: Tensor) -> Tensor:
    """Affinity transferred from task ``d`` into task ``s``, Eqs. 9-10: ``A^s (.) A^d / F^{sd}``.

    ``F^{sd}`` is the per-pixel sum of the product over the window, so every row sums to 1.

    Args:
        a_s, a_d: affinities of the same shape, ``(B, l*l, H, W)`` or ``(B, l*l, C, H, W)``.

    Returns:
        the normalised element-wise product, same shape.
    """
    if a_s.shape != a_d.shape or a_s.ndim not in (4, 5):
        raise ShapeError(
            "inter_task_affinity: expected two affinities of the same shape (B, l*l, H, W) or "
            f"(B, l*l, C, H, W), got {tuple(a_s.shape)} and {tuple(a_d.shape)}"
        )
    prod = a_s * a_d
    # the centre weights are positive in both, so the sum is > 0 for affinities of graphlet_affinity
    return prod / prod.sum(dim=1, keepdim=True).clamp_min(torch.finfo(prod.dtype).tiny)


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------
class IntraTaskPSD(nn.Module):
    """Intra-task PSD of one task: Eq. 6 for ``steps`` iterations, then Eq. 7.

    ``(x (B, C, H, W), affinity) -> ReLU(conv1x1([X(1), ..., X(T)]))`` of shape ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, *, steps: int = 9, beta: float = 0.05) -> None:
        super().__init__()
        self.steps, self.beta = steps, beta
        self.fuse = nn.Conv2d(steps * channels, channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, affinity: Tensor) -> Tensor:
        states = intra_task_diffusion(x, affinity, beta=self.beta, steps=self.steps)
        return self.relu(self.fuse(torch.cat(states, dim=1)))


class InterTaskPSD(nn.Module):
    """Inter-task PSD into one target task ``s``: Eq. 8 with the affinities of Eqs. 9-10, then fusion.

    ``D = X + sum_d beta_sd * sum_k A^{sd}_pk X_{p+k}`` over the source tasks ``d``; output
    ``ReLU(conv1x1([X, D]))`` (Sec. 3.4: "concatenate the diffused feature and the original feature
    (i.e. the intra-task feature) ... one 1x1 convolution ... followed by ... ReLU").
    """

    def __init__(self, channels: int, *, beta: float = 0.05) -> None:
        super().__init__()
        self.beta = beta
        self.fuse = nn.Conv2d(2 * channels, channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, affinity: Tensor, sources: Sequence[Tensor]) -> Tensor:
        if not sources:
            raise ShapeError("InterTaskPSD: expected at least one source-task affinity, got none")
        size = _window_of("InterTaskPSD", x, affinity)
        # sum_d beta_sd A^{sd}: Eq. 8's two sums share the window, so they are one propagation
        combined = sum(self.beta * inter_task_affinity(affinity, a_d) for a_d in sources)
        diffused = x + _propagate(x, combined, size)
        return self.relu(self.fuse(torch.cat([x, diffused], dim=1)))


Record = dict[str, Tensor]


def _response(x: Tensor) -> Tensor:
    """A response map for display (Fig. 8): the channel mean, ``(B, 1, h, w)``, float32, detached."""
    return x.detach().float().mean(dim=1, keepdim=True)


class PSDLayer(nn.Module):
    """The PSD layer of one scale (Fig. 2): intra-task then inter-task PSD for every task.

    ``{task: (B, C, H, W)} -> {task: (B, C, H, W)}``.

    Args:
        tasks: task names (fixed order).
        channels: ``C``.
        intra, inter: enable intra-task (Sec. 3.3) / inter-task (Sec. 3.4) diffusion.
        graphlet_size: ``l``. sigma2: ``sigma^2``. beta: intra-task ``beta``. steps: ``T``.
        inter_beta: ``beta_sd`` of every pair. channelwise: channel-wise affinities.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        channels: int,
        *,
        intra: bool = True,
        inter: bool = True,
        graphlet_size: int = 3,
        sigma2: float = 2.0,
        beta: float = 0.05,
        steps: int = 9,
        inter_beta: float = 0.05,
        channelwise: bool = False,
    ) -> None:
        super().__init__()
        if not (intra or inter):
            raise ConfigError("model psd: interaction psd needs intra or inter (or both); use interaction: none")
        if inter and len(tasks) < 2:
            raise ConfigError(f"model psd: inter-task diffusion needs at least two tasks, got {list(tasks)}")
        _check_window("model psd", graphlet_size)
        self.tasks = list(tasks)
        self.graphlet_size, self.sigma2, self.channelwise = graphlet_size, sigma2, channelwise
        self.intra = (
            nn.ModuleDict({t: IntraTaskPSD(channels, steps=steps, beta=beta) for t in self.tasks}) if intra else None
        )
        self.inter = nn.ModuleDict({t: InterTaskPSD(channels, beta=inter_beta) for t in self.tasks}) if inter else None

    def forward(self, feats: Mapping[str, Tensor], record: Record | None = None, prefix: str = "") -> dict[str, Tensor]:
        aff = {
            t: graphlet_affinity(feats[t], self.graphlet_size, self.sigma2, channelwise=self.channelwise)
            for t in self.tasks
        }
        x = {t: self.intra[t](feats[t], aff[t]) for t in self.tasks} if self.intra is not None else dict(feats)
        if self.inter is not None:
            if record is not None and self.intra is not None:
                record.update({prefix.format(task=t, stage="after_intra"): _response(x[t]) for t in self.tasks})
            x = {s: self.inter[s](x[s], aff[s], [aff[d] for d in self.tasks if d != s]) for s in self.tasks}
        return x


class NoInteraction(nn.Module):
    """Table 6 "baseline": the task features pass unchanged (no exchange between decoders)."""

    def __init__(self, tasks: Sequence[str], channels: int) -> None:
        super().__init__()

    def forward(self, feats: Mapping[str, Tensor], record: Record | None = None, prefix: str = "") -> dict[str, Tensor]:
        return dict(feats)


class NaiveFusion(nn.Module):
    """Table 6 "naive fusion" ("directly concatenates cross-task features"): per target task,
    ``ReLU(conv1x1([x_t1, ..., x_tN]))`` over all tasks in a fixed order, ``N*C -> C``."""

    def __init__(self, tasks: Sequence[str], channels: int) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.fuse = nn.ModuleDict(
            {t: nn.Sequential(nn.Conv2d(len(self.tasks) * channels, channels, 1), nn.ReLU(inplace=True)) for t in tasks}
        )

    def forward(self, feats: Mapping[str, Tensor], record: Record | None = None, prefix: str = "") -> dict[str, Tensor]:
        stacked = torch.cat([feats[t] for t in self.tasks], dim=1)
        return {t: self.fuse[t](stacked) for t in self.tasks}


class CrossStitchInteraction(nn.Module):
    """Table 6 "cross-stitch" (Misra et al., ref. [22]): a :class:`CrossStitchUnit` (per-channel
    ``alpha``, ``alpha_S = 0.9``) on the task features of the scale."""

    def __init__(self, tasks: Sequence[str], channels: int) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.unit = CrossStitchUnit(len(self.tasks), channels)

    def forward(self, feats: Mapping[str, Tensor], record: Record | None = None, prefix: str = "") -> dict[str, Tensor]:
        return dict(zip(self.tasks, self.unit([feats[t] for t in self.tasks]), strict=True))


# ----------------------------------------------------------------------------------------------
# Config and network
# ----------------------------------------------------------------------------------------------
class PSDConfig(ModelConfig):
    """Options of ``psd`` (see the module docstring for the Table 6 / Fig. 9 rows they give).

    Attributes:
        channels: decoder width at every scale.
        interaction: module after the residual block of each interaction scale: ``psd`` (the PSD
            layer), ``none`` (baseline), ``naive_fusion`` or ``cross_stitch``.
        psd_scales: backbone reductions (e.g. ``[16]``) whose decoder scale gets the interaction
            module; ``null`` = every decoder scale.
        intra, inter: intra-task (Sec. 3.3) and inter-task (Sec. 3.4) PSD (``interaction: psd``).
        graphlet_size: ``l`` of the ``l x l`` graphlet (odd; the paper's 9/25/49/81 nodes = 3/5/7/9).
        sigma2: ``sigma^2`` of Eq. 1.
        beta: intra-task ``beta`` of Eq. 6.
        steps: ``T``, diffusion iterations of Eq. 6.
        inter_beta: ``beta_sd`` of Eq. 8, the same for every (target, source) pair.
        channelwise: channel-wise affinities instead of the channel-summed ones of Sec. 4.2.
    """

    name: str = "psd"
    channels: int = Field(128, ge=1)
    interaction: InteractionName = "psd"
    psd_scales: list[int] | None = None
    intra: bool = True
    inter: bool = True
    graphlet_size: int = Field(3, ge=1)
    sigma2: float = Field(2.0, gt=0)
    beta: float = Field(0.05, ge=0)
    steps: int = Field(9, ge=1)
    inter_beta: float = Field(0.05, ge=0)
    channelwise: bool = False

    @field_validator("graphlet_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 != 1:
            raise ValueError(f"graphlet_size must be odd (a window centred on the pixel), got {v}")
        return v


def _psd_layer(tasks: Sequence[str], channels: int, cfg: PSDConfig) -> nn.Module:
    return PSDLayer(
        tasks,
        channels,
        intra=cfg.intra,
        inter=cfg.inter,
        graphlet_size=cfg.graphlet_size,
        sigma2=cfg.sigma2,
        beta=cfg.beta,
        steps=cfg.steps,
        inter_beta=cfg.inter_beta,
        channelwise=cfg.channelwise,
    )


#: ``interaction`` -> builder ``(tasks, channels, cfg) -> module`` mapping ``{task: features}`` to same.
INTERACTIONS: dict[str, Callable[[Sequence[str], int, PSDConfig], nn.Module]] = {
    "none": lambda tasks, c, cfg: NoInteraction(tasks, c),
    "naive_fusion": lambda tasks, c, cfg: NaiveFusion(tasks, c),
    "cross_stitch": lambda tasks, c, cfg: CrossStitchInteraction(tasks, c),
    "psd": _psd_layer,
}


class _DecoderStage(nn.Module):
    """One task, one scale (Sec. 3.1): decode, upsample, concatenate the encoder skip, residual block.

    ``(x (B, C_in, h, w), skip (B, C_skip, H, W)) -> (B, C, H, W)``.
    """

    def __init__(self, in_channels: int, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.decode = ConvBNReLU(in_channels, channels, 3)
        self.block = residual_block(BasicBlock, channels + skip_channels, channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.block(torch.cat([upsample_to(self.decode(x), skip.shape[-2:]), skip], dim=1))


class PSDNet(MultiTaskModel):
    """The PSD network (Fig. 2); see the module docstring.

    ``forward(image (B, 3, H, W) in [0, 1])`` returns ``{"<task>": (B, K, H, W)}`` for the main tasks
    and ``{"scale<r>/<task>": (B, K, ceil(H/r), ceil(W/r))}`` for every other scale (and every scale of
    an auxiliary task).

    Attributes:
        scales: the decoder scales' backbone reductions, coarse to fine (ResNet: ``[16, 8, 4]``).
        decoders: task -> one :class:`_DecoderStage` per scale.
        interactions: ``"scale<r>"`` -> the interaction module of that scale (only where placed).
        predict: task -> one 1x1 prediction conv per scale.

    Raises:
        ConfigError: a backbone with fewer than two levels or two levels at one reduction, a
            ``psd_scales`` entry that is not a decoder scale, or a PSD option the tasks cannot take.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        cfg: PSDConfig,
        heads: Mapping[str, int],
        aux_heads: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(heads, aux_heads)
        check_task_heads(self.heads, self.aux_heads)
        self.backbone = backbone
        self.tasks = [*self.heads, *self.aux_heads]
        info = backbone.feature_info
        reductions = [f.reduction for f in info]
        if len(info) < 2 or len(set(reductions[:-1])) != len(reductions) - 1 or reductions[-1] in reductions[:-1]:
            raise ConfigError(
                "model psd: the decoder needs a backbone with at least two levels at distinct reductions, got "
                f"reductions {reductions} from model.backbone {type(backbone).__name__} (a dilated "
                "model.backbone.output_stride of 8 puts three levels at 1/8; use null or 16)"
            )
        self.scales = reductions[:-1][::-1]
        placed = self.scales if cfg.psd_scales is None else list(cfg.psd_scales)
        unknown = [r for r in placed if r not in self.scales]
        if unknown:
            raise ConfigError(
                f"model.psd_scales: {unknown} are not decoder scales of this backbone; expected a subset of "
                f"{self.scales} (or null for all)"
            )
        c = cfg.channels
        skips = [f.channels for f in info[:-1]][::-1]
        ins = [info[-1].channels] + [c] * (len(self.scales) - 1)
        self.decoders = nn.ModuleDict(
            {t: nn.ModuleList(_DecoderStage(i, s, c) for i, s in zip(ins, skips, strict=True)) for t in self.tasks}
        )
        self.interactions = nn.ModuleDict(
            {f"scale{r}": INTERACTIONS[cfg.interaction](self.tasks, c, cfg) for r in self.scales if r in placed}
        )
        self.predict = nn.ModuleDict(
            {t: nn.ModuleList(nn.Conv2d(c, k, 1) for _ in self.scales) for t, k in self.all_heads.items()}
        )

    def _decode(self, x: Tensor, record: Record | None = None) -> dict[str, Tensor]:
        check_shape("image", x.shape, f"(B, {self.backbone.in_channels}, H, W)", x.ndim == 4)
        levels = self.backbone(x)
        skips = levels[:-1][::-1]
        feats = {t: levels[-1] for t in self.tasks}
        out: dict[str, Tensor] = {}
        last = len(self.scales) - 1
        for i, (r, skip) in enumerate(zip(self.scales, skips, strict=True)):
            feats = {t: self.decoders[t][i](feats[t], skip) for t in self.tasks}
            tag = f"scale{r}"
            if tag in self.interactions:
                prefix = "psd/{task}/" + tag + "/{stage}"
                if record is not None:
                    record.update({prefix.format(task=t, stage="before"): _response(feats[t]) for t in self.tasks})
                feats = self.interactions[tag](feats, record, prefix)
                if record is not None:
                    record.update({prefix.format(task=t, stage="after"): _response(feats[t]) for t in self.tasks})
            for t in self.tasks:
                pred = self.predict[t][i](feats[t])
                if i == last and t in self.heads:
                    out[t] = upsample_to(pred, x.shape[-2:])
                else:
                    out[f"{tag}/{t}"] = pred
        return out

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:
        return self._decode(x)

    def explain_normalized(self, x: Tensor) -> dict[str, Tensor]:
        """Response maps around every interaction module (Fig. 8), per task and scale.

        Names ``"psd/<task>/scale<r>/before"`` (the decoded features entering the module),
        ``".../after_intra"`` (after intra-task PSD, when both intra and inter are on) and
        ``".../after"`` (the module's output); each the channel mean of the features,
        ``(B, 1, ceil(H/r), ceil(W/r))``. For ``interaction: none`` before and after are equal.
        """
        record: Record = {}
        self._decode(x, record)
        return record


@register_model("psd", PSDConfig)
def build_psd(cfg: PSDConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> PSDNet:
    """Build the PSD network from its config (backbone from ``cfg.backbone``)."""
    return PSDNet(backbone_from_config(cfg.backbone), cfg=cfg, heads=heads, aux_heads=aux_heads)
