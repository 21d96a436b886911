"""Loss balancers: turn the dict of per-output losses into the training step's gradients.

Two forms of one interface (:class:`LossBalancer`, see :mod:`mtdense.losses.balancing._base`):
``total, log = balancer(losses)`` and ``balancer.backward(total, losses, model=model)``.

* loss-level (:mod:`~mtdense.losses.balancing.loss_level`): ``fixed``, ``uncertainty`` (TRL eq. 7),
  ``dwa`` (Liu et al. 2019), ``rlw`` (Lin et al. 2022), ``gradnorm`` (Chen et al. 2018);
* gradient-level (:mod:`~mtdense.losses.balancing.gradient_level`): ``pcgrad`` (Yu et al. 2020),
  ``mgda`` (MGDA-UB, Sener & Koltun 2018), ``cagrad`` (Liu et al. 2021).

Adding a balancer: one class (with an ``Args`` pydantic model for its ``loss.balancer_args``) and one
entry in :data:`BALANCERS`.
"""

from __future__ import annotations

from typing import Any

from mtdense.errors import ConfigError
from mtdense.losses.balancing._base import (
    BalancerArgs,
    LossBalancer,
    check_tag_weights,
    key_multiplier,
    task_losses,
    task_of,
)
from mtdense.losses.balancing.gradient_level import (
    MGDA,
    CAGrad,
    GradientBalancer,
    PCGrad,
    cagrad_direction,
    min_norm_weights,
    pcgrad_project,
)
from mtdense.losses.balancing.loss_level import (
    UNCERTAINTY_KINDS,
    DynamicWeightAverage,
    FixedWeights,
    GradNorm,
    RandomLossWeighting,
    UncertaintyWeights,
)
from mtdense.losses.registry import lookup

__all__ = [
    "BALANCERS",
    "MGDA",
    "UNCERTAINTY_KINDS",
    "BalancerArgs",
    "CAGrad",
    "DynamicWeightAverage",
    "FixedWeights",
    "GradNorm",
    "GradientBalancer",
    "LossBalancer",
    "PCGrad",
    "RandomLossWeighting",
    "UncertaintyWeights",
    "balancer_args",
    "build_balancer",
    "cagrad_direction",
    "check_tag_weights",
    "key_multiplier",
    "min_norm_weights",
    "pcgrad_project",
    "task_losses",
    "task_of",
]

BALANCERS: dict[str, type[LossBalancer]] = {
    "fixed": FixedWeights,
    "uncertainty": UncertaintyWeights,
    "dwa": DynamicWeightAverage,
    "rlw": RandomLossWeighting,
    "gradnorm": GradNorm,
    "pcgrad": PCGrad,
    "mgda": MGDA,
    "cagrad": CAGrad,
}


def balancer_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` (``loss.balancer_args``) validated by the ``Args`` model of balancer ``name``, defaults filled.

    Raises:
        UnknownNameError: unknown ``name``.
        ConfigError: an unknown key or a wrong type (names the key and the balancer's valid keys).
    """
    from pydantic import ValidationError

    cls = lookup(BALANCERS, name, "loss balancer")
    try:
        return cls.Args(**args).model_dump()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors())
        valid = ", ".join(cls.Args.model_fields) or "none"
        raise ConfigError(f"loss.balancer_args for {name!r}: {problems} (valid keys: {valid})") from None


def build_balancer(name: str, **kwargs: Any) -> LossBalancer:
    """Instantiate the balancer registered as ``name`` (a key of :data:`BALANCERS`).

    Raises:
        UnknownNameError: unknown ``name`` (lists the valid ones).
        ConfigError: arguments that do not fit the constructor.
    """
    cls = lookup(BALANCERS, name, "loss balancer")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"loss balancer {name!r}: bad arguments {sorted(kwargs)}: {exc}") from exc
