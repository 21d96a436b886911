"""TRL: joint task-recursive learning for semantic segmentation and depth estimation.

Zhang, Cui, Xu, Jie, Li, Yang, "Joint Task-Recursive Learning for Semantic Segmentation and Depth
Estimation", ECCV 2018 (seed 003)::

    @inproceedings{zhang2018trl,
      title={Joint Task-Recursive Learning for Semantic Segmentation and Depth Estimation},
      author={Zhang, Zhenyu and Cui, Zhen and Xu, Chunyan and Jie, Zequn and Li, Xiang and Yang, Jian},
      booktitle={ECCV}, year={2018}}

No code was released with the paper; this file is written from its text and figures, and every
choice the paper leaves open is stated below and in the docstring of the class it concerns.

Architecture (Sec. 3.2, Fig. 2). An encoder (any backbone publishing four levels in its
``feature_info``, the paper's ResNet-18/50/101 ``Res-2..Res-5``) feeds a *task-recursive decoder*:
eight states ``Res-d1 .. Res-d8`` alternate between the two tasks (``Res-d1, d3, d5, d7``: the first
task of ``task_order``, depth in the paper; ``d2, d4, d6, d8``: the second) over four coarse-to-fine
scales, two states per scale. Eq. (1) with ``k = 1``::

    D^p = Φ_D^p(T(f_D^{p-1}, f_S^{p-1}))        S^p = Φ_S^p(T(f_D^p, f_S^{p-1}))

i.e. each state's residual block ``Φ`` reads the output of a task-attentional module ``T``
(:class:`TaskAttentionalModule`, eqs. 2-3) that takes the latest state of each task ("experience"),
upsampled to the current scale by an upsampling block (:class:`UpsamplingBlock`, Fig. 3b, eq. 4)
when it was computed at the previous scale. Each residual block also reads the encoder level of
its scale (the green skip arrows of Fig. 2), concatenated to the TAM output, and every state
predicts its task (supervision at every scale, Sec. 3.3).

Choices where the paper is silent:

* **Scales and widths.** The upsampling block of Fig. 3b maps ``H x W x C`` to ``2H x 2W x C/2``;
  starting from the last encoder level (stride 32, ``C_5`` channels) the four decoder scales are at
  strides 16, 8, 4, 2 with ``C_5/2, C_5/4, C_5/8, C_5/16`` channels. This reproduces "the mirror type of
  the corresponding [encoder blocks]" (ResNet-18: 256/128/64/32, ResNet-50: 1024/512/256/128) and the
  paper's "the largest outputs are half size of the input images". ``width`` overrides ``C_5/2``.
* **Residual blocks.** "Only two bottlenecks in each residual block": two residual blocks of the
  encoder's own block type (``block: auto`` finds the type of the backbone's deepest residual block:
  ``BasicBlock`` for ResNet-18/34, ``Bottleneck`` for ResNet-50/101), the first with a 1x1
  projection shortcut because its input is the TAM output concatenated with the skip.
* **Skips.** An encoder level whose stride equals a decoder scale's stride is concatenated at that
  scale (Res-4, Res-3, Res-2 at strides 16, 8, 4); the stride-2 scale has no encoder level in
  ``feature_info`` (the ResNet stem is not an output level), so it has no skip.
* **Sizes.** The decoder map at stride ``s`` has the encoder's size ``ceil(H/s) x ceil(W/s)``
  (``ceil(H/2)`` at stride 2). A pixel shuffle doubles a size exactly, which for odd inputs can be one
  row or column more; the extra trailing row/column is cropped (never interpolated).
* **The first states.** No task state exists before ``Res-d1``: both experience slots of the first
  TAMs hold the upsampled last encoder level ``e = Up(Res-5)``, i.e. ``f_D^0 = f_S^0 = e``, so that,
  as Fig. 2 draws it, every residual block is preceded by a TAM (eight TAMs in all).
* **Upsampling between scales.** At each scale change the latest state of each task goes through its
  own upsampling block once; the TAMs at the next scale share the upsampled map.
* **Predictions.** One 3x3 conv (with bias, no BN/ReLU: "except for the final convolutional layers
  before the predictions", Sec. 4.1) per state. The state of scale ``n < output_scale`` is output
  as ``"scale<n>/<task>"`` at its own resolution; the state at ``output_scale`` (4 by default, the
  paper's final prediction) is the final output ``"<task>"``, bilinearly upsampled to the input size
  ("we upsample the predicted segmentation results and depth maps to the original size"); states at
  finer scales than ``output_scale`` are still computed and supervised, keyed ``"scale<n>/<task>"``.
  ``output_scale: 1 .. 3`` are the rows "TRL scale-1 .. scale-3" of Table 2.
* **BN and ReLU** follow every convolution (Sec. 4.1), except before a sigmoid (the balance logits and
  the attention logits get BN but no ReLU, which would confine the sigmoid to [0.5, 1)) and in the
  prediction convs.

Table 2 rows as switches (:class:`TRLConfig`):

* ``decoder: parallel`` — **Baseline-I**: two parallel decoders (one per task), each an upsampling
  block and one residual block (the same two-block type) per scale with the same skips, and a
  cross-stitch unit (Misra et al., CVPR 2016, :class:`~mtdense.models.cross_stitch.CrossStitchUnit`)
  fusing the two tasks' features after the residual block of every scale; predictions at every scale.
* ``tam: false`` — **TRL w/o TAM**: the residual block reads the concatenation of the two experience
  states (and the skip) directly; no TAM parameters.
* ``tam: false, experience: false`` — **TRL w/o exp-TAM** ("without any earlier experience, i.e. not
  considering the TAMs and the features from previous residual blocks"): a plain alternating chain in
  which each residual block reads only the state immediately before it (and the skip).
* ``balance: false`` — **TRL w/o gate unit**: the TAM without its balance unit (eq. 2): the attention
  branch reads the plain concatenation ``[f_d, f_s]``; no ``Ψ1``/``Ψ2`` parameters.
* ``output_scale: 1 | 2 | 3`` — **TRL scale-1 .. scale-3**.
* ResNet-18/50/101: ``backbone.name``; channels always come from ``feature_info``.

Losses (Sec. 3.3) are configuration, not model code: berHu for depth (eq. 5, ``loss.depth: berhu``),
cross-entropy for segmentation, every scale supervised against the full-resolution target, the two
tasks balanced by learned uncertainties (eq. 7, ``loss.balancer: uncertainty``, ``δ`` initialised at 0.5).

:meth:`TRL.explain` returns the attention map ``M`` of every TAM (Fig. 4), keyed ``"tam<p>/<task>"``
for the TAM before ``Res-d<p>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from mtdense.backbones import Backbone, FeatureInfo
from mtdense.config.schema import ModelConfig
from mtdense.errors import ConfigError, MtdenseError, check_shape
from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import register_model
from mtdense.models.cross_stitch import CrossStitchUnit
from mtdense.models.layers.blocks import BasicBlock, Bottleneck, ConvBNReLU, residual_block
from mtdense.models.stl_mtl import backbone_from_config, check_task_heads

__all__ = [
    "BLOCKS",
    "BalanceUnit",
    "ParallelDecoder",
    "RecursiveDecoder",
    "TRL",
    "TRLConfig",
    "TaskAttentionalModule",
    "UpsamplingBlock",
    "build_trl",
]

#: ``block`` option -> residual block class of the decoder (``auto``: the backbone's own type).
BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}

NUM_SCALES = 4
_RECURSIVE_SWITCHES = ("tam", "experience", "balance", "attention_depth")


class TRLConfig(ModelConfig):
    """Options of ``trl`` (see the module docstring for the Table 2 rows they select).

    Attributes:
        decoder: ``"recursive"`` (TRL, Fig. 2) or ``"parallel"`` (Baseline-I of Table 2).
        tam: task-attentional modules before the residual blocks (``false``: "TRL w/o TAM").
        experience: the k = 1 experience of both tasks (``false`` with ``tam: false``: "TRL w/o exp-TAM").
        balance: the balance unit of eq. (2) in every TAM (``false``: "TRL w/o gate unit").
        attention_depth: number of stride-2 conv / deconv pairs of the TAM attention branch.
        block: decoder residual block type; ``auto`` mirrors the encoder's.
        width: channels at the coarsest decoder scale (default: half the last encoder level's).
        output_scale: the scale (1 coarsest .. 4 finest) whose prediction is the final output.
        task_order: the two main tasks, the first one taking the odd states ``Res-d1, d3, ...``
            (the paper: ``[depth, semseg]``); default: the order of ``data.tasks``.
        alpha_self: Baseline-I only: initial self weight of the cross-stitch units.
    """

    name: str = "trl"
    decoder: Literal["recursive", "parallel"] = "recursive"
    tam: bool = True
    experience: bool = True
    balance: bool = True
    attention_depth: int = Field(2, ge=1, le=4)
    block: Literal["auto", "basic", "bottleneck"] = "auto"
    width: int | None = Field(None, ge=8)
    output_scale: int = Field(NUM_SCALES, ge=1, le=NUM_SCALES)
    task_order: list[str] | None = Field(None, min_length=2, max_length=2)
    alpha_self: float = Field(0.9, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_switches(self) -> TRLConfig:
        if self.decoder == "parallel":
            # A switch at its default value is harmless (a resolved config written back to YAML lists every
            # field); only a non-default value asks for something Baseline-I does not have.
            fields = type(self).model_fields
            given = [k for k in _RECURSIVE_SWITCHES if getattr(self, k) != fields[k].default]
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply to decoder: recursive; Baseline-I (decoder: parallel) has no TAMs"
                )
            return self
        if not self.experience and self.tam:
            raise ValueError("experience: false is Table 2's 'TRL w/o exp-TAM', which has no TAMs: also set tam: false")
        if not self.balance and not self.tam:
            raise ValueError("balance: false removes the balance unit of the TAMs, but tam: false has no TAMs")
        return self


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
class UpsamplingBlock(nn.Module):
    """The upsampling block of Fig. 3b: four parallel convs, concatenation, sub-pixel shuffle (eq. 4).

    ``conv-1 .. conv-4`` are 1x1, 3x3, 5x5 and 3x3 with dilation 2 (a 7x7 receptive field, Sec. 4.1),
    each followed by BN + ReLU and each giving ``out_channels`` maps; their concatenation
    (``4 * out_channels``) is rearranged by a pixel shuffle with ``r = 2`` into
    ``(B, out_channels, 2H, 2W)``. With the default ``out_channels = C/2`` this is the paper's
    ``H x W x C -> H x W x 2C -> 2H x 2W x C/2``.

    Choice: PyTorch's ``pixel_shuffle`` order (output channel ``c`` at sub-pixel ``(i, j)`` reads input
    channel ``4c + 2i + j``). Eq. (4) as printed orders the sub-pixel channels differently; any order is
    a fixed permutation of the preceding convolutions' output channels, so the two are the same
    function class.

    ``(B, in_channels, H, W) -> (B, out_channels, 2H, 2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        if out_channels is None:
            if in_channels % 2:
                raise ConfigError(f"UpsamplingBlock: in_channels must be even to halve it, got {in_channels}")
            out_channels = in_channels // 2
        self.in_channels, self.out_channels = in_channels, out_channels
        self.branches = nn.ModuleList(
            [
                ConvBNReLU(in_channels, out_channels, 1),
                ConvBNReLU(in_channels, out_channels, 3),
                ConvBNReLU(in_channels, out_channels, 5),
                ConvBNReLU(in_channels, out_channels, 3, dilation=2),
            ]
        )

    def concatenated(self, x: Tensor) -> Tensor:
        """The ``(B, 4 * out_channels, H, W)`` concatenation of the four branches, before the shuffle."""
        check_shape(
            "UpsamplingBlock input",
            x.shape,
            f"(B, {self.in_channels}, H, W)",
            x.ndim == 4 and x.shape[1] == self.in_channels,
        )
        return torch.cat([branch(x) for branch in self.branches], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.concatenated(x), 2)


class BalanceUnit(nn.Module):
    """The balance unit of the TAM, eq. (2) of TRL.

    ``B = sigmoid(Ψ1([f_d, f_s]))``, ``f_b = Ψ2([B · f_d, (1 − B) · f_s])`` with ``B`` and ``f_b`` of
    shape ``(B, C, H, W)`` like ``f_d`` and ``f_s``. Choices: ``Ψ1`` is a 1x1 conv ``2C -> C`` + BN
    (no ReLU before the sigmoid); ``Ψ2`` a 1x1 conv ``2C -> C`` + BN + ReLU. 1x1 because eq. (2) is a
    per-position weighting of the two sources (spatial context comes from the attention branch that
    follows), and because a 3x3 pair would cost ``36 C^2`` weights per TAM (about 75M parameters
    per TAM at the 1024-channel coarsest scale of a ResNet-50 TRL).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.psi1 = ConvBNReLU(2 * channels, channels, 1, relu=False)
        self.psi2 = ConvBNReLU(2 * channels, channels, 1)

    def balance(self, f_d: Tensor, f_s: Tensor) -> Tensor:
        """The balancing tensor ``B`` in (0, 1), ``(B, C, H, W)``."""
        return torch.sigmoid(self.psi1(torch.cat([f_d, f_s], dim=1)))

    def forward(self, f_d: Tensor, f_s: Tensor) -> Tensor:
        b = self.balance(f_d, f_s)
        return self.psi2(torch.cat([b * f_d, (1 - b) * f_s], dim=1))


class _AttentionBranch(nn.Module):
    """The conv-deconv layers of Fig. 3a (yellow cubes) and the sigmoid: ``(B, C_in, H, W) -> M (B, C, H, W)``.

    Choice (after residual attention, Wang et al. CVPR 2017, which the paper cites for it): ``depth``
    3x3 stride-2 convs (+ BN + ReLU) shrink the map, then ``depth`` 3x3 stride-2 transposed convs grow it
    back to exactly the sizes on the way down (``output_size``, so odd sizes round-trip), BN + ReLU
    after each but the last, which has BN only before the sigmoid.
    """

    def __init__(self, in_channels: int, channels: int, depth: int) -> None:
        super().__init__()
        self.down = nn.ModuleList(
            ConvBNReLU(in_channels if i == 0 else channels, channels, 3, stride=2) for i in range(depth)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, bias=False) for _ in range(depth)
        )
        self.up_bn = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        sizes = []
        for conv in self.down:
            sizes.append(x.shape[-2:])
            x = conv(x)
        for i, (deconv, bn) in enumerate(zip(self.up, self.up_bn, strict=True)):
            x = bn(deconv(x, output_size=list(sizes[-1 - i])))
            if i < len(self.up) - 1:
                x = F.relu(x)
        return torch.sigmoid(x)


class TaskAttentionalModule(nn.Module):
    """The task-attentional module (TAM) of Fig. 3a, eqs. (2)-(3) of TRL.

    1. balance unit (eq. 2, :class:`BalanceUnit`): ``f_b = Ψ2([B · f_d, (1 − B) · f_s])``;
    2. conv-deconv layers on ``f_b`` and a sigmoid: the attention map ``M`` ``(B, C, H, W)``;
    3. gates (eq. 3): ``f_d^g = (1 + M) · f_d``, ``f_s^g = (1 + M) · f_s``;
    4. concatenation and one conv (3x3 + BN + ReLU, ``2C -> C``): ``f_TAM``.

    ``balance=False`` ("TRL w/o gate unit", Table 2) drops step 1: the attention branch reads the
    plain concatenation ``[f_d, f_s]`` (``2C`` channels).

    ``forward(f_d, f_s)``: two ``(B, C, H, W)`` maps -> ``(f_TAM, M)``, both ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, *, balance: bool = True, attention_depth: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.balance = BalanceUnit(channels) if balance else None
        self.attention = _AttentionBranch(channels if balance else 2 * channels, channels, attention_depth)
        self.fuse = ConvBNReLU(2 * channels, channels, 3)

    def attention_map(self, f_d: Tensor, f_s: Tensor) -> Tensor:
        """``M`` in (0, 1), ``(B, C, H, W)``."""
        for name, f in (("f_d", f_d), ("f_s", f_s)):
            check_shape(
                f"TaskAttentionalModule {name}",
                f.shape,
                f"(B, {self.channels}, H, W) matching f_d {tuple(f_d.shape)}",
                f.ndim == 4 and f.shape[1] == self.channels and f.shape == f_d.shape,
            )
        f_b = self.balance(f_d, f_s) if self.balance is not None else torch.cat([f_d, f_s], dim=1)
        return self.attention(f_b)

    def forward(self, f_d: Tensor, f_s: Tensor) -> tuple[Tensor, Tensor]:
        m = self.attention_map(f_d, f_s)
        return self.fuse(torch.cat([(1 + m) * f_d, (1 + m) * f_s], dim=1)), m


def _residual_stage(block: type[BasicBlock] | type[Bottleneck], in_channels: int, channels: int) -> nn.Sequential:
    """Two residual blocks ("only two bottlenecks"), the first projecting ``in_channels`` to ``channels``."""
    return nn.Sequential(residual_block(block, in_channels, channels), residual_block(block, channels, channels))


def _crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The top-left ``size`` of ``x`` (a pixel shuffle may overshoot an odd size by one)."""
    return x if x.shape[-2:] == size else x[..., : size[0], : size[1]]


def _deepest_block(backbone: nn.Module) -> type[BasicBlock] | type[Bottleneck]:
    """The residual block type of the backbone's deepest stage (``BasicBlock`` when it has none)."""
    found: type[BasicBlock] | type[Bottleneck] = BasicBlock
    for module in backbone.modules():
        for cls in BLOCKS.values():
            if isinstance(module, cls):
                found = cls
    return found


class _Geometry:
    """Decoder scales derived from ``feature_info``: widths, strides and skip levels."""

    def __init__(self, feature_info: Sequence[FeatureInfo], width: int | None, block: type[nn.Module]) -> None:
        if len(feature_info) < 2:
            raise ConfigError(f"model trl: the backbone must publish at least 2 levels, got {len(feature_info)}")
        last = feature_info[-1]
        self.top_channels = last.channels
        w1 = width if width is not None else last.channels // 2
        multiple = 2 ** (NUM_SCALES - 1) * (block.expansion if block is Bottleneck else 1)
        if w1 < multiple or w1 % multiple:
            raise ConfigError(
                f"model trl: the coarsest decoder width (model.width, default half of the last encoder level's "
                f"{last.channels} channels) must be a positive multiple of {multiple} for {block.__name__} "
                f"decoder blocks, got {w1}"
            )
        self.widths = [w1 // 2**n for n in range(NUM_SCALES)]
        self.strides = [last.reduction // 2 ** (n + 1) for n in range(NUM_SCALES)]
        if self.strides[-1] < 1:
            raise ConfigError(f"model trl: the last encoder level's stride {last.reduction} is below 16")
        by_stride = {f.reduction: i for i, f in enumerate(feature_info)}
        self.skip_index = [by_stride.get(s) for s in self.strides]
        self.skip_channels = [0 if i is None else feature_info[i].channels for i in self.skip_index]

    def sizes(self, features: Sequence[Tensor], image_size: Sequence[int]) -> list[tuple[int, int]]:
        out = []
        for stride, idx in zip(self.strides, self.skip_index, strict=True):
            if idx is not None:
                out.append(tuple(features[idx].shape[-2:]))
            else:
                out.append((-(-image_size[0] // stride), -(-image_size[1] // stride)))
        return out

    def skip(self, features: Sequence[Tensor], n: int) -> list[Tensor]:
        idx = self.skip_index[n]
        return [] if idx is None else [features[idx]]


# ----------------------------------------------------------------------------------------------
# Decoders
# ----------------------------------------------------------------------------------------------
class RecursiveDecoder(nn.Module):
    """The task-alternating recursive decoder of Fig. 2 / eq. (1) (see the module docstring).

    ``forward(features, image_size)`` -> ``(predictions, attention)``: ``predictions[p - 1]`` is the
    raw prediction of state ``Res-d<p>`` ``(B, K_task, h_n, w_n)`` and ``attention`` maps
    ``"tam<p>/<task>"`` to the TAM's ``M`` (empty without TAMs).

    Args:
        feature_info: the backbone's levels.
        heads: the two tasks in state order (first: odd states) -> output channels.
        block: residual block type.
        width: coarsest decoder width (default: half the last level's channels).
        tam: TAMs before the residual blocks.
        experience: k = 1 experience of both tasks (else: a chain over the previous state only).
        balance: balance units in the TAMs.
        attention_depth: conv/deconv pairs of the TAM attention branch.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        heads: Mapping[str, int],
        *,
        block: type[BasicBlock] | type[Bottleneck],
        width: int | None = None,
        tam: bool = True,
        experience: bool = True,
        balance: bool = True,
        attention_depth: int = 2,
    ) -> None:
        super().__init__()
        if len(heads) != 2:
            raise ConfigError(f"RecursiveDecoder: expected two tasks, got {list(heads)}")
        if tam and not experience:
            raise ConfigError("RecursiveDecoder: TAMs need the experience of both tasks (experience=True)")
        self.tasks = list(heads)
        self.geometry = g = _Geometry(feature_info, width, block)
        self.use_tam, self.experience = tam, experience
        self.stem = UpsamplingBlock(g.top_channels, g.widths[0])
        # which tasks' latest state is read at the next scale (the chain only reads the last state)
        self.carried = self.tasks if experience else self.tasks[-1:]
        self.upsample = nn.ModuleList(
            nn.ModuleDict({t: UpsamplingBlock(g.widths[n], g.widths[n + 1]) for t in self.carried})
            for n in range(NUM_SCALES - 1)
        )
        self.tams = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.predict = nn.ModuleList()
        for p in range(2 * NUM_SCALES):
            n, task = p // 2, self.tasks[p % 2]
            w = g.widths[n]
            if tam:
                self.tams.append(TaskAttentionalModule(w, balance=balance, attention_depth=attention_depth))
            reads = 2 if experience and not tam else 1
            self.blocks.append(_residual_stage(block, reads * w + g.skip_channels[n], w))
            self.predict.append(nn.Conv2d(w, heads[task], 3, padding=1))

    def state_task(self, p: int) -> str:
        """The task of state ``Res-d<p>`` (``p`` from 1)."""
        return self.tasks[(p - 1) % 2]

    def forward(self, features: Sequence[Tensor], image_size: Sequence[int]) -> tuple[list[Tensor], dict[str, Tensor]]:
        g = self.geometry
        sizes = g.sizes(features, image_size)
        e = _crop(self.stem(features[-1]), sizes[0])
        latest = {t: e for t in self.tasks}  # f_D^0 = f_S^0 = Up(Res-5)
        previous = e  # the chain's single state
        preds: list[Tensor] = []
        attention: dict[str, Tensor] = {}
        for p in range(2 * NUM_SCALES):
            n, task = p // 2, self.tasks[p % 2]
            if p and p % 2 == 0:  # entering scale n: upsample the carried states once
                ups = self.upsample[n - 1]
                latest = {t: _crop(ups[t](latest[t]), sizes[n]) for t in self.carried}
                previous = latest[self.tasks[-1]]
            if self.use_tam:
                x, m = self.tams[p](latest[self.tasks[0]], latest[self.tasks[1]])
                attention[f"tam{p + 1}/{task}"] = m
                inputs = [x]
            elif self.experience:
                inputs = [latest[self.tasks[0]], latest[self.tasks[1]]]
            else:
                inputs = [previous]
            state = self.blocks[p](torch.cat([*inputs, *g.skip(features, n)], dim=1))
            latest = {**latest, task: state}
            previous = state
            preds.append(self.predict[p](state))
        return preds, attention


class ParallelDecoder(nn.Module):
    """Baseline-I of Table 2: one decoder per task, cross-stitched at every scale.

    Per task and scale: an upsampling block (Fig. 3b), the encoder skip concatenated, the same two-block
    residual stage as TRL; then a cross-stitch unit mixes the two tasks' maps (one alpha per channel,
    initial self weight ``alpha_self``) and each task predicts from its stitched map.

    ``forward(features, image_size)`` -> ``(predictions, {})`` with ``predictions[2n + i]`` the prediction
    of task ``i`` at scale ``n``, in the same order as :class:`RecursiveDecoder`.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        heads: Mapping[str, int],
        *,
        block: type[BasicBlock] | type[Bottleneck],
        width: int | None = None,
        alpha_self: float = 0.9,
    ) -> None:
        super().__init__()
        self.tasks = list(heads)
        self.geometry = g = _Geometry(feature_info, width, block)
        ins = [g.top_channels, *g.widths[:-1]]
        self.upsample = nn.ModuleList(
            nn.ModuleDict({t: UpsamplingBlock(ins[n], g.widths[n]) for t in self.tasks}) for n in range(NUM_SCALES)
        )
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {t: _residual_stage(block, g.widths[n] + g.skip_channels[n], g.widths[n]) for t in self.tasks}
            )
            for n in range(NUM_SCALES)
        )
        self.cross_stitch = nn.ModuleList(
            CrossStitchUnit(len(self.tasks), g.widths[n], alpha_self=alpha_self) for n in range(NUM_SCALES)
        )
        self.predict = nn.ModuleList(
            nn.ModuleDict({t: nn.Conv2d(g.widths[n], heads[t], 3, padding=1) for t in self.tasks})
            for n in range(NUM_SCALES)
        )

    def forward(self, features: Sequence[Tensor], image_size: Sequence[int]) -> tuple[list[Tensor], dict[str, Tensor]]:
        g = self.geometry
        sizes = g.sizes(features, image_size)
        xs = [features[-1] for _ in self.tasks]
        preds: list[Tensor] = []
        for n in range(NUM_SCALES):
            skip = g.skip(features, n)
            xs = [
                self.blocks[n][t](torch.cat([_crop(self.upsample[n][t](x), sizes[n]), *skip], dim=1))
                for t, x in zip(self.tasks, xs, strict=True)
            ]
            xs = self.cross_stitch[n](xs)
            preds += [self.predict[n][t](x) for t, x in zip(self.tasks, xs, strict=True)]
        return preds, {}


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------
class TRL(MultiTaskModel):
    """TRL (or its Baseline-I) on any backbone with a four-level ``feature_info``.

    ``forward(image (B, 3, H, W) in [0, 1])`` returns ``{"<task>": (B, K, H, W)}`` for both tasks from
    the state at ``output_scale`` and ``{"scale<n>/<task>": (B, K, ceil(H/s_n), ceil(W/s_n))}`` for the
    other scales (strides ``s_n`` = 16, 8, 4, 2 for a stride-32 encoder).

    Args:
        backbone: the encoder.
        heads: exactly two main tasks -> output channels.
        aux_heads: must be empty (TRL is a dual-task network, Sec. 3.1).
        cfg: the validated :class:`TRLConfig`.

    Raises:
        ConfigError: not exactly two main tasks, auxiliary tasks, a ``task_order`` that is not a
            permutation of the tasks, or decoder widths the blocks cannot take.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        cfg: TRLConfig,
        heads: Mapping[str, int],
        aux_heads: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(heads, aux_heads)
        check_task_heads(self.heads, self.aux_heads)
        if len(self.heads) != 2:
            raise ConfigError(
                f"model trl: expected exactly two main tasks (data.tasks), e.g. [depth, semseg], got {list(self.heads)}"
            )
        if self.aux_heads:
            raise ConfigError(f"model trl: takes no auxiliary tasks (data.aux_tasks), got {list(self.aux_heads)}")
        order = list(cfg.task_order) if cfg.task_order is not None else list(self.heads)
        if sorted(order) != sorted(self.heads):
            raise ConfigError(f"model.task_order: expected a permutation of data.tasks {list(self.heads)}, got {order}")
        self.task_order = order
        self.output_scale = cfg.output_scale
        self.backbone = backbone
        block = _deepest_block(backbone) if cfg.block == "auto" else BLOCKS[cfg.block]
        ordered = {t: self.heads[t] for t in order}
        self.decoder: RecursiveDecoder | ParallelDecoder
        if cfg.decoder == "parallel":
            self.decoder = ParallelDecoder(
                backbone.feature_info, ordered, block=block, width=cfg.width, alpha_self=cfg.alpha_self
            )
        else:
            self.decoder = RecursiveDecoder(
                backbone.feature_info,
                ordered,
                block=block,
                width=cfg.width,
                tam=cfg.tam,
                experience=cfg.experience,
                balance=cfg.balance,
                attention_depth=cfg.attention_depth,
            )

    def _decode(self, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        size = x.shape[-2:]
        preds, attention = self.decoder(self.backbone(x), size)
        out: dict[str, Tensor] = {}
        for p, pred in enumerate(preds):
            scale, task = p // 2 + 1, self.task_order[p % 2]
            if scale == self.output_scale:
                out[task] = upsample_to(pred, size)
            else:
                out[f"scale{scale}/{task}"] = pred
        return out, attention

    def forward_normalized(self, x: Tensor) -> dict[str, Tensor]:
        return self._decode(x)[0]

    def explain_normalized(self, x: Tensor) -> dict[str, Tensor]:
        """The attention map ``M`` of every TAM (Fig. 4): ``{"tam<p>/<task>": (B, C_n, h_n, w_n)}``.

        ``p`` is the index of the residual block ``Res-d<p>`` the TAM precedes and ``task`` its task.

        Raises:
            MtdenseError: the model has no TAMs (Baseline-I, "w/o TAM", "w/o exp-TAM").
        """
        if not isinstance(self.decoder, RecursiveDecoder) or not self.decoder.use_tam:
            raise MtdenseError(
                "model trl: this variant has no task-attentional modules, so no attention maps to explain "
                "(model.decoder: parallel or model.tam: false)"
            )
        return self._decode(x)[1]


@register_model("trl", TRLConfig)
def build_trl(cfg: TRLConfig, *, heads: dict[str, int], aux_heads: dict[str, int]) -> TRL:
    """TRL on ``cfg.backbone`` for exactly two main tasks (see :class:`TRL`)."""
    return TRL(backbone_from_config(cfg.backbone), cfg=cfg, heads=heads, aux_heads=aux_heads)
