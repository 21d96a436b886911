"""Loss-level balancers: each turns the loss dict into one weighted total, ``total.backward()`` follows.

* :class:`FixedWeights`: hand-set task weights (MTI-Net, PAD-Net, DenseMTL grid-searched weights),
  with optional multipliers for intermediate outputs (PAD-Net's 0.8 on auxiliary predictions).
* :class:`UncertaintyWeights`: learned homoscedastic-uncertainty weights, TRL eq. (7), after Kendall
  et al., CVPR 2018.
* :class:`DynamicWeightAverage`: DWA, Liu, Johns & Davison, "End-to-End Multi-Task Learning with
  Attention", CVPR 2019, Sec. 3.3, eq. (7), temperature 2.
* :class:`RandomLossWeighting`: RLW, Lin et al., "Reasonable Effectiveness of Random Weighting: A
  Litmus Test for Multi-Task Learning", TMLR 2022 (weights = softmax of a standard normal draw).
* :class:`GradNorm`: Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in
  Deep Multitask Networks", ICML 2018, eqs. (1)-(2) and Algorithm 1, on the model's last shared layer.

``log`` maps ``"loss/<key>"`` to each unweighted loss, ``"loss/total"`` to the total, plus
balancer-specific entries (``"weight/<task>"``), as Python floats.

The balancers after :class:`UncertaintyWeights` act on task losses
``L_t = w_t · Σ_{key of t} m_key L_key`` (:func:`~mtdense.losses.balancing._base.task_losses`: the
deep-supervision terms of a task grouped, ``w_t`` the recipe's ``loss.weights`` as a fixed scale per
task — 1 when not given — and ``m_key`` from ``loss.tag_weights``) and weigh those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from mtdense.errors import ConfigError
from mtdense.losses.balancing._base import (
    BalancerArgs,
    GeneratorState,
    LossBalancer,
    PerTaskBalancer,
    check_losses,
    key_multiplier,
    loss_log,
    task_of,
)
from mtdense.losses.registry import lookup

__all__ = [
    "UNCERTAINTY_KINDS",
    "DynamicWeightAverage",
    "FixedWeights",
    "GradNorm",
    "RandomLossWeighting",
    "UncertaintyWeights",
]


class FixedWeights(LossBalancer):
    """``total = Σ_key w_{task(key)} · m_key · L_key`` with fixed task weights ``w``.

    ``m_key`` is given by :func:`key_multiplier` from ``aux_weight`` (1 for final outputs).
    MTI-Net (seed 002, Sec. 3) applies the task weights unchanged to the initial per-scale
    predictions (``aux_weight=1``); PAD-Net weights its intermediate predictions by 0.8
    (``aux_weight={"aux": 0.8}`` when they are keyed ``"aux/<task>"``).

    Args:
        weights: task name → weight, e.g. NYUD MTI-Net ``{"semseg": 1, "depth": 1, "normals": 10,
            "edge": 50}``.
        aux_weight: multiplier(s) for intermediate outputs (see :func:`key_multiplier`).

    Raises (in ``forward``):
        ConfigError: a loss key whose task has no weight (the message names the key and the task).
    """

    def __init__(self, weights: Mapping[str, float], aux_weight: float | Mapping[str, float] = 1.0):
        super().__init__()
        self.weights = {str(task): float(w) for task, w in weights.items()}
        self.aux_weight: float | dict[str, float] = (
            {str(k): float(v) for k, v in aux_weight.items()} if isinstance(aux_weight, Mapping) else float(aux_weight)
        )

    @classmethod
    def from_settings(
        cls,
        *,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        aux_weight: float | Mapping[str, float],
        args: Mapping[str, Any],
    ) -> FixedWeights:
        """``loss.weights`` must hold every task (the message names the missing ones)."""
        missing = [t for t in tasks if t not in weights]
        if missing:
            raise ConfigError(f"loss.weights: no weight for task(s) {missing}")
        return cls._construct({t: weights[t] for t in tasks}, aux_weight=aux_weight, **args)

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Weighted sum of ``losses`` (scalars keyed by output key) and the log dict."""
        check_losses(losses, "FixedWeights")
        terms = []
        for key, value in losses.items():
            task = task_of(key)
            if task not in self.weights:
                raise ConfigError(
                    f"FixedWeights: no weight for task {task!r} (loss key {key!r}); "
                    f"weights given for: {', '.join(sorted(self.weights)) or 'none'}"
                )
            terms.append(self.weights[task] * key_multiplier(key, self.aux_weight) * value)
        total = torch.stack(terms).sum()
        return total, loss_log(losses, total)


# Coefficients (a, b) of  a·exp(−δ)·ΣL + b·δ  per kind of task, with δ = log σ².
# "trl": TRL eq. (7), the same form for depth and segmentation.
# "regression" / "classification": Kendall et al. 2018 eqs. (7) and (10),
#   1/(2σ²)·L + log σ = ½e^{−δ}L + ½δ  and  1/σ²·L + log σ = e^{−δ}L + ½δ.
UNCERTAINTY_KINDS: dict[str, tuple[float, float]] = {
    "trl": (1.0, 1.0),
    "regression": (0.5, 0.5),
    "classification": (1.0, 0.5),
}


class UncertaintyWeights(LossBalancer):
    """Learned homoscedastic-uncertainty weighting, Eq. (7) of TRL (seed 003) / Kendall et al. 2018.

    TRL eq. (7), with ``δ_t = log σ_t²`` learnable and the sum over the N scales of each task::

        L = exp(−δ_1) Σ_n L_n^D + exp(−δ_2) Σ_n L_n^S + δ_1 + δ_2

    Here for any set of tasks: ``total = Σ_t [a_t · exp(−δ_t) · Σ_{key of t} m_key L_key + b_t δ_t]``
    where all keys of one task (final and intermediate) share its ``δ_t``, ``m_key`` comes from
    ``aux_weight`` (default 1, as in TRL) and ``(a_t, b_t)`` from the task's kind in
    :data:`UNCERTAINTY_KINDS`: ``"trl"`` (default, ``(1, 1)``: TRL eq. 7 exactly), or Kendall's
    ``"regression"`` ``(½, ½)`` / ``"classification"`` ``(1, ½)``. Only the tasks present in the
    loss dict contribute their ``b_t δ_t`` term: a task without a loss this step has no force
    balancing its regulariser, which would otherwise drive ``δ_t`` down without bound.

    At the optimum in ``δ_t``, ``∂total/∂δ_t = −a_t e^{−δ_t} S_t + b_t = 0``, i.e.
    ``δ_t = log(a_t S_t / b_t)``: the learned weight ``e^{−δ_t}`` tracks the inverse loss scale.

    TRL initialises ``δ = 0.5`` for both tasks (Sec. 4.1, "for the parameters of training loss").
    The ``δ`` parameters should be excluded from weight decay, which would pull them towards 0.

    Args:
        tasks: the task names that get a ``δ``.
        kinds: optional task → kind (a key of :data:`UNCERTAINTY_KINDS`); missing tasks use ``"trl"``.
        init: initial ``δ`` for every task (TRL: 0.5).
        aux_weight: multiplier(s) for intermediate outputs, as in :class:`FixedWeights`.

    Raises:
        ConfigError: an unknown kind, a kind for a task not in ``tasks``, no tasks, or (in
            ``forward``) a loss key whose task has no ``δ``.
    """

    class Args(BalancerArgs):
        init: float = 0.5
        kinds: dict[str, str] = Field(default_factory=dict)

    def __init__(
        self,
        tasks: Sequence[str],
        kinds: Mapping[str, str] | None = None,
        *,
        init: float = 0.5,
        aux_weight: float | Mapping[str, float] = 1.0,
    ):
        super().__init__()
        tasks = [str(t) for t in tasks]
        if not tasks:
            raise ConfigError("UncertaintyWeights: tasks must not be empty")
        kinds = dict(kinds or {})
        stray = sorted(set(kinds) - set(tasks))
        if stray:
            raise ConfigError(f"UncertaintyWeights: kinds given for unknown tasks {stray}; tasks: {tasks}")
        self.coefficients: dict[str, tuple[float, float]] = {
            t: lookup(UNCERTAINTY_KINDS, kinds.get(t, "trl"), f"uncertainty kind for task {t!r}") for t in tasks
        }
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(float(init), dtype=torch.float32)) for t in tasks}
        )
        self.aux_weight = aux_weight

    @classmethod
    def from_settings(
        cls,
        *,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        aux_weight: float | Mapping[str, float],
        args: Mapping[str, Any],
    ) -> UncertaintyWeights:
        """The weights are learned: ``loss.weights`` is not used (the config refuses it)."""
        return cls._construct(tasks, aux_weight=aux_weight, **args)

    @property
    def tasks(self) -> list[str]:
        """The task names, in construction order."""
        return list(self.log_vars.keys())

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Uncertainty-weighted total of ``losses`` (scalars keyed by output key) and the log dict.

        ``log`` also has ``"delta/<task>"`` (``δ_t``) and ``"weight/<task>"`` (``a_t e^{−δ_t}``).
        """
        check_losses(losses, "UncertaintyWeights")
        per_task: dict[str, list[Tensor]] = {}
        for key, value in losses.items():
            task = task_of(key)
            if task not in self.log_vars:
                raise ConfigError(
                    f"UncertaintyWeights: no uncertainty parameter for task {task!r} (loss key {key!r}); "
                    f"tasks: {', '.join(self.tasks)}"
                )
            per_task.setdefault(task, []).append(key_multiplier(key, self.aux_weight) * value.float())
        terms, extra = [], {}
        for task, values in per_task.items():
            a, b = self.coefficients[task]
            delta = self.log_vars[task]
            weight = a * torch.exp(-delta)
            terms.append(weight * torch.stack(values).sum() + b * delta)
            extra[f"delta/{task}"] = delta
            extra[f"weight/{task}"] = weight
        total = torch.stack(terms).sum()
        return total, loss_log(losses, total, extra)


class _TaskWeighted(PerTaskBalancer):
    """The balancers that weigh the task losses ``L_t`` (see the module docstring) with weights ``λ_t``."""

    def _weighted(
        self, losses: Mapping[str, Tensor], per_task: Mapping[str, Tensor], lam: Mapping[str, Tensor | float]
    ) -> tuple[Tensor, dict[str, float]]:
        total = torch.stack([lam[t] * value for t, value in per_task.items()]).sum()
        return total, loss_log(losses, total, {f"weight/{t}": lam[t] for t in per_task})


class DynamicWeightAverage(_TaskWeighted):
    """Dynamic weight average (DWA), Liu, Johns & Davison, CVPR 2019, Sec. 3.3, eq. (7)::

        λ_k(t) = K · exp(w_k(t−1) / T) / Σ_i exp(w_i(t−1) / T),    w_k(t−1) = L_k(t−1) / L_k(t−2)

    with ``K`` tasks, temperature ``T`` (2 in the paper) and ``L_k(t)`` the mean loss of task ``k``
    over period ``t``; ``w_k = 1`` (so ``λ_k = 1``) until two periods have been seen. The total is
    ``Σ_k λ_k L_k``.

    The paper's period is an epoch. Here it is ``window`` training steps (a balancer does not see
    epochs; set ``window`` to the steps of one epoch to match the paper). The period means are
    accumulated in ``forward``, one call per training step; a task without a loss in a step (no
    labelled sample) is left out of that step's mean, and a task without any loss in a period keeps
    ``w_k = 1``. The running sums and the last two period means are in ``state_dict`` (exact resume).

    Args:
        tasks, weights, aux_weight: as :class:`_TaskWeighted`.
        temperature: ``T`` (> 0).
        window: steps per period (≥ 1).
    """

    class Args(BalancerArgs):
        temperature: float = Field(2.0, gt=0)
        window: int = Field(100, ge=1)

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        weights: Mapping[str, float] | None = None,
        aux_weight: float | Mapping[str, float] = 1.0,
        temperature: float = 2.0,
        window: int = 100,
    ) -> None:
        super().__init__(tasks, weights=weights, aux_weight=aux_weight)
        if temperature <= 0 or window < 1:
            raise ConfigError(f"DWA: expected temperature > 0 and window >= 1, got {temperature} and {window}")
        self.temperature, self.window = float(temperature), int(window)
        self._reset_history()

    def _reset_history(self) -> None:
        self.steps = 0
        self.sums = dict.fromkeys(self.tasks, 0.0)
        self.counts = dict.fromkeys(self.tasks, 0)
        self.history: list[dict[str, float | None]] = []  # the last two period means, oldest first

    def current_weights(self) -> dict[str, float]:
        """``λ_k`` for the next step, from the last two period means (eq. 7)."""
        ratios = {}
        for t in self.tasks:
            if len(self.history) < 2 or self.history[0][t] is None or self.history[1][t] is None:
                ratios[t] = 1.0
            else:
                ratios[t] = self.history[1][t] / max(self.history[0][t], 1e-12)  # type: ignore[operator]
        top = max(r / self.temperature for r in ratios.values())
        exps = {t: math.exp(r / self.temperature - top) for t, r in ratios.items()}
        norm = sum(exps.values())
        return {t: len(self.tasks) * e / norm for t, e in exps.items()}

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``Σ_k λ_k L_k`` and the log (``weight/<task>`` = ``λ_k``); records this step's task losses."""
        per_task = self.task_losses(losses)
        total, log = self._weighted(losses, per_task, self.current_weights())
        if self.training:
            self.record({t: float(v.detach()) for t, v in per_task.items()})
        return total, log

    def record(self, values: Mapping[str, float]) -> None:
        """Add one step's task losses to the current period; close the period after ``window`` steps."""
        for t, v in values.items():
            self.sums[t] += v
            self.counts[t] += 1
        self.steps += 1
        if self.steps % self.window == 0:
            means = {t: (self.sums[t] / self.counts[t] if self.counts[t] else None) for t in self.tasks}
            self.history = [*self.history, means][-2:]
            self.sums = dict.fromkeys(self.tasks, 0.0)
            self.counts = dict.fromkeys(self.tasks, 0)

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "sums": dict(self.sums), "counts": dict(self.counts), "history": self.history}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])
        self.history = [dict(h) for h in state["history"]]


class RandomLossWeighting(GeneratorState, _TaskWeighted):
    """Random loss weighting (RLW), Lin et al., TMLR 2022, Sec. 3: at every step
    ``λ = softmax(z)``, ``z ~ N(0, I_K)``, and the total is ``Σ_k λ_k L_k``.

    The draws come from the balancer's own generator (seeded by ``seed``), not torch's global one, so
    that RLW does not shift the random stream of the rest of training; its state is in
    ``state_dict`` (exact resume). A new draw is made at every training-mode ``forward``; in eval mode
    the weights are the mean ``1/K``.

    Args:
        tasks, weights, aux_weight: as :class:`_TaskWeighted`.
        seed: seed of the balancer's generator.
    """

    def draw(self) -> dict[str, float]:
        """One draw of ``λ = softmax(z)``, ``z ~ N(0, I)`` (advances the generator)."""
        lam = torch.softmax(torch.randn(len(self.tasks), generator=self.generator, dtype=torch.float64), 0)
        return dict(zip(self.tasks, lam.tolist(), strict=True))

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``Σ_k λ_k L_k`` with a fresh draw of ``λ`` and the log (``weight/<task>`` = ``λ_k``)."""
        per_task = self.task_losses(losses)
        lam = self.draw() if self.training else dict.fromkeys(self.tasks, 1.0 / len(self.tasks))
        return self._weighted(losses, per_task, lam)


class GradNorm(_TaskWeighted):
    """GradNorm, Chen et al., ICML 2018: learned task weights ``w_i`` that equalise the gradient norms
    of the weighted task losses on the last shared layer ``W``. With ``L_i`` the task losses::

        G_W^(i) = ‖∇_W w_i L_i‖ = w_i ‖∇_W L_i‖,    Ḡ_W = mean_i G_W^(i)
        L̃_i = L_i / L_i(0),    r_i = L̃_i / mean_j L̃_j
        L_grad = Σ_i | G_W^(i) − Ḡ_W · r_i^α |                      (eq. 2, the target is a constant)

    The network is trained on ``Σ_i w_i L_i`` (eq. 1); the weights receive only ``∇_w L_grad``
    (``∂L_grad/∂w_i = sign(G_W^(i) − Ḡ_W r_i^α) · ‖∇_W L_i‖``) and are stepped by the trainer's
    optimiser (param group ``"balancer"``, no weight decay); before each use they are renormalised to
    ``Σ_i w_i = K`` (Algorithm 1, last line) and clipped at 1e-6 to stay positive.

    ``W`` is ``model.shared_layer()`` (:meth:`mtdense.models.MultiTaskModel.shared_layer`, by default
    the last stage of the shared backbone). ``L_i(0)`` is the loss of task ``i`` at the first step it
    appears; it is a buffer (exact resume). A task absent in a step (no labelled sample) takes no part
    in that step's ``Ḡ``, ``r`` and ``L_grad``.

    Args:
        tasks, weights, aux_weight: as :class:`_TaskWeighted`.
        alpha: the restoring-force strength ``α`` (the paper uses 1.5 on NYUv2, 0.12 on the synthetic task).
    """

    class Args(BalancerArgs):
        alpha: float = Field(1.5, ge=0)

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        weights: Mapping[str, float] | None = None,
        aux_weight: float | Mapping[str, float] = 1.0,
        alpha: float = 1.5,
    ) -> None:
        super().__init__(tasks, weights=weights, aux_weight=aux_weight)
        self.alpha = float(alpha)
        self.task_weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.full((len(self.tasks),), float("nan")))
        self.index = {t: i for i, t in enumerate(self.tasks)}

    @torch.no_grad()
    def renormalize(self) -> None:
        """``w ← K · w / Σ w`` after clipping at 1e-6 (Algorithm 1)."""
        w = self.task_weights
        w.clamp_(min=1e-6)
        w.mul_(len(self.tasks) / w.sum())

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``Σ_i w_i L_i`` (eq. 1) and the log (``weight/<task>`` = ``w_i``); records ``L_i(0)``."""
        per_task = self.task_losses(losses)
        if self.training:
            self.renormalize()
            with torch.no_grad():
                for t, value in per_task.items():
                    i = self.index[t]
                    if torch.isnan(self.initial_losses[i]):
                        self.initial_losses[i] = value.detach().float()
        lam = {t: self.task_weights[self.index[t]] for t in per_task}
        return self._weighted(losses, per_task, lam)

    def gradnorm_grad(self, per_task: Mapping[str, Tensor], norms: Tensor) -> tuple[Tensor, Tensor]:
        """``∇_w L_grad`` (shape ``(K,)``, 0 for absent tasks) and ``L_grad``, given ``‖∇_W L_i‖`` of the
        present tasks (``norms``, in the order of ``per_task``)."""
        idx = torch.tensor([self.index[t] for t in per_task], device=norms.device)
        w = self.task_weights.detach()[idx]
        g = w * norms
        current = torch.stack([v.detach().float() for v in per_task.values()])
        ratio = current / self.initial_losses[idx].clamp_min(1e-12)
        r = ratio / ratio.mean()
        target = g.mean() * r**self.alpha
        grad = torch.zeros_like(self.task_weights)
        grad[idx] = torch.sign(g - target) * norms
        return grad, (g - target).abs().sum()

    @staticmethod
    def _shared_layer_parameters(model: nn.Module) -> list[nn.Parameter]:
        layer = getattr(model, "shared_layer", None)
        if layer is None:
            raise ConfigError(f"GradNorm: model {type(model).__name__} names no shared layer (shared_layer())")
        params = [p for p in layer().parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"GradNorm: {type(model).__name__}.shared_layer() holds no trainable parameter")
        return params

    def attach(self, model: nn.Module) -> None:
        """Check, before training, that ``model`` names its last shared layer (else an error naming it)."""
        self._shared_layer_parameters(model)

    def backward(self, total: Tensor, losses: Mapping[str, Tensor], *, model: nn.Module) -> dict[str, float]:
        """``Σ w_i L_i`` into the network, ``∇_w L_grad`` into the weights (see the class docstring)."""
        params = self._shared_layer_parameters(model)
        per_task = self.task_losses(losses)
        norms = []
        for value in per_task.values():
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            sq = [g.float().pow(2).sum() for g in grads if g is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else value.new_zeros((), dtype=torch.float32))
        grad, l_grad = self.gradnorm_grad(per_task, torch.stack(norms))
        total.backward()
        self.task_weights.grad = grad
        return {"gradnorm/loss": float(l_grad)}
