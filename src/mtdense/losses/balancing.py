"""Loss balancers: turn the dict of per-output losses into the one scalar that is back-propagated.

Every balancer is an :class:`torch.nn.Module` with the same interface::

    total, log = balancer({"semseg": l0, "depth": l1, "initial/s8/depth": l2, ...})

The keys follow the output-key contract: the final prediction of task ``t`` is keyed ``t``, an
intermediate (deep-supervision) output ``"<tag>/<t>"``; the task of a key is
``key.rsplit("/", 1)[-1]`` and its tag is everything before the last ``/``. ``log`` maps
``"loss/<key>"`` to each unweighted loss, ``"loss/total"`` to the total, plus balancer-specific
entries, as Python floats (one host synchronisation per call, however many keys).

Implementations:

* :class:`FixedWeights`: hand-set task weights (MTI-Net, PAD-Net, DenseMTL grid-searched weights),
  with optional multipliers for intermediate outputs (PAD-Net's 0.8 on auxiliary predictions).
* :class:`UncertaintyWeights`: learned homoscedastic-uncertainty weights, TRL eq. (7) (seed 003),
  after Kendall et al., CVPR 2018.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtdense.errors import ConfigError, ShapeError
from mtdense.losses.registry import lookup

__all__ = [
    "BALANCERS",
    "UNCERTAINTY_KINDS",
    "FixedWeights",
    "LossBalancer",
    "UncertaintyWeights",
    "build_balancer",
    "key_multiplier",
    "task_of",
]


def task_of(key: str) -> str:
    """The task of an output key: ``"initial/s8/depth"`` → ``"depth"``, ``"semseg"`` → ``"semseg"``."""
    return key.rsplit("/", 1)[-1]


def key_multiplier(key: str, aux_weight: float | Mapping[str, float]) -> float:
    """The extra factor applied to the loss of output ``key`` on top of its task weight.

    * A final output (no ``/`` in its key) always gets 1.
    * ``aux_weight`` a number: every intermediate output gets that number.
    * ``aux_weight`` a mapping: the most specific entry wins, trying the full key, then the tag and
      its ever shorter ``/``-prefixes (for ``"initial/s8/depth"``: ``"initial/s8/depth"``,
      ``"initial/s8"``, ``"initial"``); 1 when none matches. E.g. PAD-Net: ``{"aux": 0.8}``.
    """
    if "/" not in key:
        return 1.0
    if not isinstance(aux_weight, Mapping):
        return float(aux_weight)
    if key in aux_weight:
        return float(aux_weight[key])
    parts = key.split("/")[:-1]
    for end in range(len(parts), 0, -1):
        prefix = "/".join(parts[:end])
        if prefix in aux_weight:
            return float(aux_weight[prefix])
    return 1.0


def _check_losses(losses: Mapping[str, Tensor], balancer: str) -> None:
    if not losses:
        raise ConfigError(f"{balancer}: received an empty loss dict")
    for key, value in losses.items():
        if not isinstance(value, Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ShapeError(f"{balancer}: loss {key!r}: expected a scalar tensor, got {shape}")


def _to_log(entries: Mapping[str, Tensor]) -> dict[str, float]:
    values = torch.stack([v.detach().float().reshape(()) for v in entries.values()]).tolist()
    return dict(zip(entries, values, strict=True))


class LossBalancer(nn.Module, ABC):
    """Interface: ``forward(losses: dict[str, Tensor]) -> (total, log)``; see the module docstring."""

    @abstractmethod
    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Combine scalar losses keyed by output key into ``(total, log)``."""


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
            {str(k): float(v) for k, v in aux_weight.items()}
            if isinstance(aux_weight, Mapping)
            else float(aux_weight)
        )

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Weighted sum of ``losses`` (scalars keyed by output key) and the log dict."""
        _check_losses(losses, "FixedWeights")
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
        log = _to_log({**{f"loss/{k}": v for k, v in losses.items()}, "loss/total": total})
        return total, log


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
            t: lookup(UNCERTAINTY_KINDS, kinds.get(t, "trl"), f"uncertainty kind for task {t!r}")
            for t in tasks
        }
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(float(init), dtype=torch.float32)) for t in tasks}
        )
        self.aux_weight = aux_weight

    @property
    def tasks(self) -> list[str]:
        """The task names, in construction order."""
        return list(self.log_vars.keys())

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Uncertainty-weighted total of ``losses`` (scalars keyed by output key) and the log dict.

        ``log`` also has ``"delta/<task>"`` (``δ_t``) and ``"weight/<task>"`` (``a_t e^{−δ_t}``).
        """
        _check_losses(losses, "UncertaintyWeights")
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
        log = _to_log({**{f"loss/{k}": v for k, v in losses.items()}, "loss/total": total, **extra})
        return total, log


BALANCERS: dict[str, type[LossBalancer]] = {
    "fixed": FixedWeights,
    "uncertainty": UncertaintyWeights,
}


def build_balancer(name: str, **kwargs: Any) -> LossBalancer:
    """Instantiate the balancer registered as ``name`` (``"fixed"``, ``"uncertainty"``).

    Raises:
        UnknownNameError: unknown ``name`` (lists the valid ones).
        ConfigError: arguments that do not fit the constructor.
    """
    cls = lookup(BALANCERS, name, "loss balancer")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"loss balancer {name!r}: bad arguments {sorted(kwargs)}: {exc}") from exc
