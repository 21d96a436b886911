"""Multi-task unsupervised domain adaptation, MTL-UDA (Lopes et al., "Cross-task Attention Mechanism for Dense
Multi-task Learning", WACV 2023, Sec. 4.5 and Table 6), as a trainer extension (:mod:`mtdense.engine.extensions`).

Output-level adversarial training (the paper's "Architecture adjustments", after ADVENT, Vu et al., CVPR 2019):
for each task output a small patch discriminator learns to tell whether a (processed) prediction map comes from
the source domain (labelled) or the target domain (unlabelled), while the multi-task model learns to fool every
discriminator on the target images. Each step mixes one source batch (the trainer's, supervised by the task
losses) and one target batch of as many images (Sec. 4.5: "mix batches containing two instances from either
domains").

* **Generator term** (:meth:`UdaExtension.extra_loss`): the model's forward on the *target* images only; for each
  aligned output ``k`` of ``K``, ``(λ_adv / K) · BCE(D_k(x_k^tgt), source)`` with ``λ_adv = 0.005``; the sum over
  ``k`` is the mean over the discriminators, as the authors' code takes it. The discriminators are frozen
  (``requires_grad=False``) for this term, so it moves only the model, and it involves no source output. The
  target forward runs after the source batch's backward (one graph in memory at a time) and in training mode,
  as the authors' (BatchNorm statistics see both domains; dropout draws from torch's checkpointed generator).
* **Discriminator step** (:meth:`UdaExtension.after_step`, after the model's optimiser step): on the *detached*
  outputs of that step, ``mean_k BCE(D_k(x_k^src), 1) + mean_k BCE(D_k(x_k^tgt), 0)`` (source = 1, target = 0),
  with the discriminators' own Adam (lr 1e-4, betas (0.9, 0.99), no weight decay) and poly decay
  ``(1 − step / max_steps)^0.9``. The model is not in that optimiser and receives no gradient from it.

Discriminator (:class:`PatchDiscriminator`, the paper's supplementary material and the authors' code): five 4×4
stride-2 convolutions (padding 1) with ``64 → 128 → 256 → 512 → 1`` channels, LeakyReLU(0.2) between them, each
weight under spectral normalisation (Miyato et al., ICLR 2018; ``torch.nn.utils.parametrizations.spectral_norm``).
An ``H × W`` input gives ``H/32 × W/32`` patch logits.

Discriminator inputs (:data:`DISCRIMINATOR_INPUTS`, one entry per task; every output is first resized bilinearly
to its own batch's image size, as the authors upsample each prediction to the crop size):

* ``semseg``: the weighted self-information map ``I = −p ⊙ log p`` of ``p = softmax(logits)`` (ADVENT eq. 3), one
  channel per class, divided by ``log C`` (as ADVENT's code) so that ``Σ_c I_c`` is the normalised entropy in
  [0, 1] whatever the number of classes.
* ``depth``: ``(relu(d) − lo) / (hi − lo)``, ``[lo, hi]`` the range of the valid (> 0) ground-truth depth of *this
  step's source batch* (the authors' choice); the same range serves the source and the target maps of the step,
  so the normalisation carries no information about the domain. *Choice* where the paper is silent: a source batch
  without valid depth uses [0, 1], and ``hi − lo`` is at least 1 mm.
* ``normals``: unit vectors, ``n / ‖n‖`` per pixel (the authors' code).
* ``edge`` (not in the paper's UDA experiments, which use 'S-D'): the binary counterpart of ``semseg``'s,
  ``[−p log p, −(1 − p) log(1 − p)] / log 2`` with ``p = σ(logit)``.

Which outputs: every output of the main tasks (``data.tasks``), including the deep-supervision side outputs
(``uda.side_outputs``, default on: the authors align both supervised scales of the 3-ways decoder); auxiliary-task
outputs are not aligned.

Exact resume: the target batch of step ``k`` depends only on ``(seed + 1, k)``
(:class:`~mtdense.engine.data.ResumableBatchSampler` and :class:`~mtdense.engine.data.Augmented` seeded with
``seed + 1``, so target and source orders differ even for datasets of one size); the discriminators' weights and
spectral-norm vectors, their optimiser and schedule are the extension's checkpoint state. The discriminators are
initialised from their own seeded generator, leaving torch's global one untouched: a UDA run's model starts from
the weights and dropout stream of the source-only run with the same seed.

Single process only: the discriminators are not wrapped for DistributedDataParallel (an error says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from mtdense.engine.extensions import Extension
from mtdense.errors import CheckpointError, ConfigError, ShapeError, TrainingError
from mtdense.losses import task_of

if TYPE_CHECKING:
    from mtdense.engine.trainer import Trainer

SOURCE_LABEL = 1.0
TARGET_LABEL = 0.0
#: five stride-2 convolutions: the smallest input side that leaves one patch
MIN_INPUT_SIZE = 32


class PatchDiscriminator(nn.Module):
    """Patch discriminator: five spectral-norm 4×4 stride-2 convs, LeakyReLU(0.2) between them (module docstring).

    Args:
        in_channels: channels of the discriminator input (:data:`DISCRIMINATOR_INPUTS`).
        width: channels of the first conv (64); the next ones have 2×, 4×, 8× that, the last one 1.
        negative_slope: LeakyReLU slope (0.2).

    Shapes: ``(B, in_channels, H, W)`` → ``(B, 1, H // 32, W // 32)`` logits (positive: "source").
    """

    def __init__(self, in_channels: int, *, width: int = 64, negative_slope: float = 0.2) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ConfigError(f"PatchDiscriminator: expected positive in_channels, width; got {in_channels}, {width}")
        self.in_channels = int(in_channels)
        widths = [self.in_channels, width, 2 * width, 4 * width, 8 * width, 1]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.utils.parametrizations.spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)))
            if i < len(widths) - 2:
                layers.append(nn.LeakyReLU(negative_slope))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"PatchDiscriminator: expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ShapeError(
                f"PatchDiscriminator: expected an input of at least {MIN_INPUT_SIZE}×{MIN_INPUT_SIZE} (five stride-2 "
                f"convolutions), got {tuple(x.shape[-2:])}"
            )
        return self.layers(x)


# -- discriminator inputs ------------------------------------------------------------------------------------


def self_information(logits: Tensor) -> Tensor:
    """Weighted self-information ``−p ⊙ log p / log C`` of ``p = softmax(logits)`` over dim 1 (ADVENT eq. 3).

    ``(B, C, H, W)`` logits → ``(B, C, H, W)`` in [0, 1/e / log C]; the channel sum is the normalised entropy in [0, 1]
    (1 for a uniform ``p``, 0 for a one-hot ``p``). ``C = 1`` is an error (no distribution).
    """
    c = logits.shape[1]
    if c < 2:
        raise ShapeError(f"self_information: expected at least 2 class channels, got {tuple(logits.shape)}")
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp) / math.log(c)


def binary_self_information(logits: Tensor) -> Tensor:
    """``[−p log p, −(1 − p) log(1 − p)] / log 2`` of ``p = σ(logits)``: ``(B, 1, H, W)`` → ``(B, 2, H, W)``."""
    if logits.shape[1] != 1:
        raise ShapeError(f"binary_self_information: expected (B, 1, H, W) logits, got {tuple(logits.shape)}")
    logp, log1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    return -torch.cat([logp.exp() * logp, log1mp.exp() * log1mp], dim=1) / math.log(2.0)


def depth_range(target: Tensor | None) -> tuple[float, float]:
    """``(lo, hi)`` of the valid (> 0, finite) depth of ``target``; ``(0, 1)`` without any; ``hi − lo ≥ 1e-3``."""
    if target is None:
        return 0.0, 1.0
    valid = target[(target > 0) & torch.isfinite(target)]
    if valid.numel() == 0:
        return 0.0, 1.0
    lo, hi = float(valid.min()), float(valid.max())
    return lo, max(hi, lo + 1e-3)


def normalised_depth(pred: Tensor, source_target: Tensor | None) -> Tensor:
    """``(relu(d) − lo) / (hi − lo)``, ``(lo, hi) = depth_range(source_target)`` (module docstring)."""
    lo, hi = depth_range(source_target)
    return (pred.relu() - lo) / (hi - lo)


def unit_normals(pred: Tensor) -> Tensor:
    """``n / max(‖n‖, 1e-12)`` per pixel over dim 1."""
    return F.normalize(pred, dim=1)


@dataclass(frozen=True)
class DiscriminatorInput:
    """How a task's raw output becomes its discriminator's input.

    ``channels(out_channels)``: the input's channel count; ``prepare(pred, source_target)``: the map, from the raw
    prediction ``(B, out_channels, H, W)`` (float32, at the image size) and the source batch's target of the task
    (what a normalisation may take its statistics from; ``None`` if the batch has none).
    """

    channels: Callable[[int], int]
    prepare: Callable[[Tensor, Tensor | None], Tensor]


#: task name → its discriminator input (module docstring); a task without an entry cannot be adapted
DISCRIMINATOR_INPUTS: dict[str, DiscriminatorInput] = {
    "semseg": DiscriminatorInput(channels=lambda c: c, prepare=lambda p, _: self_information(p)),
    "depth": DiscriminatorInput(channels=lambda c: 1, prepare=normalised_depth),
    "normals": DiscriminatorInput(channels=lambda c: 3, prepare=lambda p, _: unit_normals(p)),
    "edge": DiscriminatorInput(channels=lambda c: 2, prepare=lambda p, _: binary_self_information(p)),
}


def discriminator_input(task: str) -> DiscriminatorInput:
    """The entry of ``task`` in :data:`DISCRIMINATOR_INPUTS`; a :class:`ConfigError` listing them otherwise."""
    try:
        return DISCRIMINATOR_INPUTS[task]
    except KeyError:
        raise ConfigError(
            f"uda: no discriminator input is defined for task {task!r}; tasks that can be adapted: "
            f"{', '.join(DISCRIMINATOR_INPUTS)}"
        ) from None


def _module_name(key: str) -> str:
    return key.replace("/", "__")  # a module name cannot hold '.'; keep state-dict keys plain


def _poly(power: float, max_steps: int) -> Callable[[int], float]:
    return lambda step: max(0.0, 1.0 - step / max_steps) ** power


# -- the extension -------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    """What the discriminator step of the step in progress needs: detached outputs and the source targets."""

    source: dict[str, Tensor]
    target: dict[str, Tensor]
    source_targets: dict[str, Tensor | None]
    source_size: tuple[int, int]
    target_size: tuple[int, int]


class UdaExtension(Extension):
    """MTL-UDA (module docstring): owns the target loader, the discriminators, their optimiser and schedule.

    Args:
        target: the target-domain training set, augmented (:class:`~mtdense.engine.data.Augmented`); only its
            ``"image"`` is read.
        batch_size: target images per step.
        seed: seed of the target batch order (the run's seed + 1, see the module docstring).
        adv_weight: ``λ_adv`` of the generator term.
        lr, betas, poly_power: the discriminators' Adam and poly decay over ``max_steps``.
        max_steps: the run's length (end of the poly decay).
        disc_channels: width of the first discriminator conv.
        side_outputs: align the deep-supervision outputs too (else the final outputs only).
        num_workers: target loader workers.
        init_seed: seed of the discriminators' initialisation (own generator).
    """

    name = "uda"

    def __init__(
        self,
        target: Dataset,
        *,
        batch_size: int,
        seed: int,
        adv_weight: float,
        lr: float,
        betas: tuple[float, float],
        poly_power: float,
        max_steps: int,
        disc_channels: int = 64,
        side_outputs: bool = True,
        num_workers: int = 0,
        init_seed: int = 0,
    ) -> None:
        self.target, self.batch_size, self.seed = target, int(batch_size), int(seed)
        self.adv_weight, self.lr, self.betas = float(adv_weight), float(lr), (float(betas[0]), float(betas[1]))
        self.poly_power, self.max_steps = float(poly_power), int(max_steps)
        self.disc_channels, self.side_outputs = int(disc_channels), bool(side_outputs)
        self.num_workers, self.init_seed = int(num_workers), int(init_seed)
        self.keys: list[str] = []
        self.discriminators = nn.ModuleDict()
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self._iter: Any = None
        self._next_step: int | None = None
        self._pending: _Pending | None = None
        self._main_tasks: list[str] = []

    # -- setup ---------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer) -> None:
        """One discriminator per aligned output of ``trainer.model``, their Adam and poly schedule."""
        from mtdense.engine.data import dataset_meta
        from mtdense.engine.setup import check_label_space
        from mtdense.engine.trainer import _output_keys

        if trainer.dist.enabled:
            raise ConfigError("uda: domain adaptation trains in a single process (its discriminators are not DDP)")
        check_label_space(trainer.meta, dataset_meta(getattr(self.target, "base", self.target)), what="uda.target")
        self._main_tasks = list(trainer.cfg.data.tasks)
        keys = [
            k
            for k in _output_keys(trainer.model, trainer.device)
            if task_of(k) in self._main_tasks and (self.side_outputs or "/" not in k)
        ]
        if not keys:
            raise ConfigError(f"uda: the model has no output of the tasks {self._main_tasks} to align")
        self.keys = keys
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            self.discriminators = nn.ModuleDict(
                {
                    _module_name(k): PatchDiscriminator(
                        discriminator_input(task_of(k)).channels(trainer.tasks[task_of(k)].out_channels),
                        width=self.disc_channels,
                    )
                    for k in keys
                }
            ).to(trainer.device)
        groups = [{"params": list(self.discriminators[_module_name(k)].parameters()), "name": f"uda/{k}"} for k in keys]
        self.optimizer = torch.optim.Adam(groups, lr=self.lr, betas=self.betas, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _poly(self.poly_power, self.max_steps))

    # -- target batches ------------------------------------------------------------------------------------
    def _target_batch(self, trainer: Trainer, step: int) -> dict[str, Any]:
        if self._iter is None or self._next_step != step:
            from mtdense.engine.data import ResumableBatchSampler

            sampler = ResumableBatchSampler(
                len(self.target),  # type: ignore[arg-type]
                batch_size=self.batch_size,
                seed=self.seed,
                start_step=step,
            )
            self._iter = iter(
                DataLoader(
                    self.target,
                    batch_sampler=sampler,
                    num_workers=self.num_workers,
                    generator=torch.Generator().manual_seed(self.seed),  # not the global RNG (exact resume)
                )
            )
        batch = next(self._iter)
        self._next_step = step + 1
        return batch

    def _d_inputs(self, outputs: Mapping[str, Tensor], size: tuple[int, int], source_targets: Mapping) -> dict:
        """``{key: discriminator input}`` of the aligned outputs present in ``outputs``, resized to ``size``."""
        maps = {}
        for k in self.keys:
            if k not in outputs:
                continue
            pred = outputs[k].float()
            if tuple(pred.shape[-2:]) != tuple(size):
                pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
            maps[k] = discriminator_input(task_of(k)).prepare(pred, source_targets.get(task_of(k)))
        return maps

    def _discriminate(self, maps: Mapping[str, Tensor], label: float) -> dict[str, Tensor]:
        out = {}
        for k, x in maps.items():
            logits = self.discriminators[_module_name(k)](x)
            out[k] = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))
        return out

    # -- hooks ---------------------------------------------------------------------------------------------
    def extra_loss(
        self, trainer: Trainer, batch: dict[str, Any], outputs: dict[str, Tensor], step: int
    ) -> dict[str, Tensor]:
        """``uda/adv/<key>``: ``(λ_adv / K) · BCE(D_k(target output k), source)`` (module docstring)."""
        image = self._target_batch(trainer, step)["image"].to(trainer.device, non_blocking=True)
        target_out = trainer.forward(image)
        source_targets: dict[str, Tensor | None] = {}
        for t in self._main_tasks:
            value = batch.get(trainer.tasks[t].target_key)
            source_targets[t] = value.detach() if isinstance(value, Tensor) else None
        self.discriminators.requires_grad_(False)  # the generator term moves only the model
        maps = self._d_inputs(target_out, tuple(image.shape[-2:]), source_targets)
        bce = self._discriminate(maps, SOURCE_LABEL)
        self._pending = _Pending(
            source={k: v.detach() for k, v in outputs.items() if k in self.keys},
            target={k: v.detach() for k, v in target_out.items() if k in self.keys},
            source_targets=source_targets,
            source_size=tuple(batch["image"].shape[-2:]),
            target_size=tuple(image.shape[-2:]),
        )
        scale = self.adv_weight / max(len(bce), 1)
        return {f"uda/adv/{k}": scale * v for k, v in bce.items()}

    def after_step(self, trainer: Trainer, step: int) -> dict[str, float]:
        """One discriminator step on the detached source (label 1) and target (label 0) outputs of ``step``."""
        pending, self._pending = self._pending, None
        if pending is None or self.optimizer is None or self.scheduler is None:
            return {}
        self.discriminators.requires_grad_(True)
        self.optimizer.zero_grad(set_to_none=True)
        src_maps = self._d_inputs(pending.source, pending.source_size, pending.source_targets)
        tgt_maps = self._d_inputs(pending.target, pending.target_size, pending.source_targets)
        src = self._discriminate(src_maps, SOURCE_LABEL)
        tgt = self._discriminate(tgt_maps, TARGET_LABEL)
        if not src or not tgt:
            return {}
        total = torch.stack(list(src.values())).mean() + torch.stack(list(tgt.values())).mean()
        if not bool(torch.isfinite(total)):
            raise TrainingError(f"non-finite discriminator loss at step {step + 1} (uda); stopping before its update")
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        log = {f"uda/disc/{k}": float(src[k].detach()) + float(tgt[k].detach()) for k in src if k in tgt}
        log["uda/disc"] = float(total.detach())
        log["uda/lr_disc"] = float(self.optimizer.param_groups[0]["lr"])
        return log

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "discriminators": self.discriminators.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state.get("keys", [])) != self.keys:
            raise CheckpointError(
                f"uda: the checkpoint's discriminators are for {state.get('keys')}, the model's outputs {self.keys}"
            )
        self.discriminators.load_state_dict(state["discriminators"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def close(self) -> None:
        self._iter, self._next_step, self._pending = None, None, None
