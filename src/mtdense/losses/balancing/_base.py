"""The balancer interface and the output-key helpers every balancer shares.

A balancer has two documented forms, one interface (:class:`LossBalancer`):

1. ``total, log = balancer(losses)``: the loss dict (scalars keyed by output key) → the scalar that is
   logged and checked for finiteness, plus a log dict of Python floats.
2. ``log = balancer.backward(total, losses, model=model)``: writes the gradients of one training step
   into ``.grad``. Loss-level balancers (the default) run ``total.backward()``; gradient-level
   balancers (:class:`~mtdense.losses.balancing.gradient_level.GradientBalancer`) take one gradient
   per task on the model's shared parameters and combine them into one update. The trainer calls
   ``backward`` the same way for every balancer and never looks at the balancer's name.

Output keys: the final prediction of task ``t`` is keyed ``t``, an intermediate (deep-supervision)
output ``"<tag>/<t>"``; the task of a key is ``key.rsplit("/", 1)[-1]``. Balancers that act per task
group every key of a task into one task loss (:func:`task_losses`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from mtdense.errors import ConfigError, ShapeError

__all__ = [
    "BalancerArgs",
    "GeneratorState",
    "LossBalancer",
    "PerTaskBalancer",
    "check_tag_weights",
    "loss_log",
    "key_multiplier",
    "task_losses",
    "task_of",
]


def task_of(key: str) -> str:
    """The task of an output key: ``"initial/s8/depth"`` → ``"depth"``, ``"semseg"`` → ``"semseg"``.

    The one definition of the output-key contract's task part (the engine imports it from here).
    """
    return key.rsplit("/", 1)[-1]


def _candidates(key: str) -> list[str]:
    """``tag_weights`` keys that could apply to output ``key``, most specific first.

    For ``"initial/s8/depth"``: ``"initial/s8/depth"``, ``"initial/s8"``, ``"initial/depth"``,
    ``"initial"`` — the longest tag prefix first; at equal prefix, the task-specific entry first.
    """
    *tag, task = key.split("/")
    out = []
    for end in range(len(tag), 0, -1):
        prefix = "/".join(tag[:end])
        out += [f"{prefix}/{task}", prefix]
    return out


def key_multiplier(key: str, aux_weight: float | Mapping[str, float]) -> float:
    """The extra factor applied to the loss of output ``key`` on top of its task weight.

    * A final output (no ``/`` in its key) always gets 1.
    * ``aux_weight`` a number: every intermediate output gets that number.
    * ``aux_weight`` a mapping (``loss.tag_weights``): its keys are tag prefixes (``"initial"``: every
      task under that tag) or a tag prefix and a task (``"initial/edge"``: "tag × task"). The most
      specific entry wins (see :func:`_candidates`); 1 when none matches. E.g. PAD-Net (Sec. 4.1):
      ``{"initial/edge": 0.8, "initial/normals": 0.8}``.
    """
    if "/" not in key:
        return 1.0
    if not isinstance(aux_weight, Mapping):
        return float(aux_weight)
    for candidate in _candidates(key):
        if candidate in aux_weight:
            return float(aux_weight[candidate])
    return 1.0


def check_tag_weights(tag_weights: Mapping[str, float], output_keys: Iterable[str]) -> None:
    """Raise if a ``loss.tag_weights`` key applies to none of ``output_keys`` (a model's outputs).

    Raises:
        ConfigError: naming the unknown key(s) and the keys that would be valid.
    """
    valid = {c for key in output_keys if "/" in key for c in _candidates(key)}
    unknown = sorted(set(tag_weights) - valid)
    if unknown:
        raise ConfigError(
            f"loss.tag_weights: key(s) {unknown} match no intermediate output of the model; "
            f"valid keys (tag, tag prefix or tag/task): {', '.join(sorted(valid)) or 'none (no intermediate outputs)'}"
        )


def check_losses(losses: Mapping[str, Tensor], balancer: str) -> None:
    """Raise unless ``losses`` is a non-empty dict of scalar tensors (the message names the key)."""
    if not losses:
        raise ConfigError(f"{balancer}: received an empty loss dict")
    for key, value in losses.items():
        if not isinstance(value, Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ShapeError(f"{balancer}: loss {key!r}: expected a scalar tensor, got {shape}")


def to_log(entries: Mapping[str, Tensor | float]) -> dict[str, float]:
    """Tensors and numbers → Python floats with one host synchronisation for all the tensors."""
    tensors = {k: v for k, v in entries.items() if isinstance(v, Tensor)}
    values = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist() if tensors else []
    out = dict(zip(tensors, values, strict=True))
    return {k: out[k] if k in out else float(v) for k, v in entries.items()}


def loss_log(
    losses: Mapping[str, Tensor], total: Tensor, extra: Mapping[str, Tensor | float] | None = None
) -> dict[str, float]:
    """The log every balancer returns: ``"loss/<key>"`` per unweighted loss, ``"loss/total"``, then ``extra``."""
    return to_log({**{f"loss/{k}": v for k, v in losses.items()}, "loss/total": total, **(extra or {})})


def task_losses(
    losses: Mapping[str, Tensor],
    *,
    weights: Mapping[str, float] | None,
    aux_weight: float | Mapping[str, float],
    balancer: str,
) -> dict[str, Tensor]:
    """Group deep-supervision terms by task: ``L_t = w_t · Σ_{key of t} m_key · L_key``.

    ``m_key`` from :func:`key_multiplier`; ``w_t`` from ``weights`` (``None``: 1 for every task). The
    order is the order in which tasks first appear in ``losses``.

    Raises:
        ConfigError: ``weights`` given and a key's task has none (the message names the key).
    """
    check_losses(losses, balancer)
    grouped: dict[str, list[Tensor]] = {}
    for key, value in losses.items():
        task = task_of(key)
        if weights is not None and task not in weights:
            raise ConfigError(
                f"{balancer}: no weight for task {task!r} (loss key {key!r}); "
                f"weights given for: {', '.join(sorted(weights)) or 'none'}"
            )
        grouped.setdefault(task, []).append(key_multiplier(key, aux_weight) * value)
    scale = weights or {}
    return {t: float(scale.get(t, 1.0)) * torch.stack(v).sum() for t, v in grouped.items()}


class BalancerArgs(BaseModel):
    """The ``loss.balancer_args`` of a balancer without options: none allowed."""

    model_config = ConfigDict(extra="forbid", strict=True)


class LossBalancer(nn.Module, ABC):
    """Interface of every balancer (see the module docstring for the two forms).

    Class attributes:
        Args: the pydantic model that validates ``loss.balancer_args`` for this balancer (its fields
            become keyword arguments of the constructor).
        supports_ddp: whether :meth:`backward` works under DistributedDataParallel (a balancer that
            takes per-task gradients with :func:`torch.autograd.grad` bypasses DDP's reducer: False).
    """

    Args: ClassVar[type[BalancerArgs]] = BalancerArgs
    supports_ddp: ClassVar[bool] = True

    @abstractmethod
    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Combine scalar losses keyed by output key into ``(total, log)``."""

    @classmethod
    def from_settings(
        cls,
        *,
        tasks: Sequence[str],
        weights: Mapping[str, float],
        aux_weight: float | Mapping[str, float],
        args: Mapping[str, Any],
    ) -> LossBalancer:
        """The balancer from the config's settings (``mtdense.engine.setup.build_balancer`` calls it).

        Default: ``cls(tasks, weights={t: weights.get(t, 1)}, aux_weight=..., **args)`` — the
        ``loss.weights`` as a fixed scale per task. Balancers with another constructor override this.
        """
        scales = {t: float(weights.get(t, 1.0)) for t in tasks}
        return cls._construct(tasks, weights=scales, aux_weight=aux_weight, **args)

    @classmethod
    def _construct(cls, *args: Any, **kwargs: Any) -> LossBalancer:
        try:
            return cls(*args, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"loss balancer {cls.__name__}: bad arguments {sorted(kwargs)}: {exc}") from exc

    def attach(self, model: nn.Module) -> None:
        """Called once by the trainer with the model before training (default: nothing to do)."""

    def backward(self, total: Tensor, losses: Mapping[str, Tensor], *, model: nn.Module) -> dict[str, float]:
        """Write this step's gradients into ``.grad``; returns extra log entries.

        The loss-level form: ``total.backward()`` (``total`` from :meth:`forward`).
        """
        total.backward()
        return {}


class PerTaskBalancer(LossBalancer):
    """Shared plumbing of the balancers that act on the task losses ``L_t`` (:func:`task_losses`): the
    loss-weighting ones (DWA, RLW, GradNorm) and the gradient-level ones (PCGrad, MGDA, CAGrad).

    Args:
        tasks: the task names, in a fixed order (the order of any per-task vector in the state).
        weights: fixed scale ``w_t`` per task (``loss.weights``); ``None``: 1 for every task.
        aux_weight: multiplier(s) for intermediate outputs (see :func:`key_multiplier`).

    Raises:
        ConfigError: no tasks; (in :meth:`task_losses`) a loss key of a task not in ``tasks``.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        weights: Mapping[str, float] | None = None,
        aux_weight: float | Mapping[str, float] = 1.0,
    ) -> None:
        super().__init__()
        self.tasks = [str(t) for t in tasks]
        if not self.tasks:
            raise ConfigError(f"{type(self).__name__}: tasks must not be empty")
        self.scales = None if weights is None else {str(t): float(w) for t, w in weights.items()}
        self.aux_weight = aux_weight

    def task_losses(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``L_t`` per task present in ``losses`` (an unknown task is an error naming the key)."""
        name = type(self).__name__
        for key in losses:
            if task_of(key) not in self.tasks:
                raise ConfigError(
                    f"{name}: loss key {key!r} belongs to task {task_of(key)!r}, not one of {', '.join(self.tasks)}"
                )
        return task_losses(losses, weights=self.scales, aux_weight=self.aux_weight, balancer=name)


class GeneratorState(PerTaskBalancer):
    """Base of a per-task balancer that draws from its own ``self.generator`` (a :class:`torch.Generator`
    seeded by ``seed``, not torch's global one): the generator's state goes into the balancer's
    ``state_dict``, so a resumed run draws the same numbers. List it before the other base
    (:class:`PerTaskBalancer` subclass) of the balancer."""

    class Args(BalancerArgs):
        seed: int = 0

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        weights: Mapping[str, float] | None = None,
        aux_weight: float | Mapping[str, float] = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(tasks, weights=weights, aux_weight=aux_weight)
        self.generator = torch.Generator().manual_seed(int(seed))

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
