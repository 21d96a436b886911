"""Name → loss-class registry, so that configs can name a loss.

``build_loss("berhu")`` returns a :class:`~mtdense.losses.depth.BerHuLoss`; keyword arguments go to
the constructor. An unknown name raises :class:`UnknownNameError`, which is both a
:class:`~mtdense.errors.ConfigError` (the CLI prints it without a traceback) and a :class:`KeyError`
(what a dict lookup raises), and lists the valid names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from torch import nn

from mtdense.errors import ConfigError
from mtdense.losses.depth import BerHuLoss, DepthL1Loss, DepthL2Loss
from mtdense.losses.edge import BalancedBCELoss, BCELoss
from mtdense.losses.normals import NormalsCosineLoss, NormalsL1Loss, NormalsL2Loss
from mtdense.losses.semseg import CrossEntropyLoss

__all__ = ["LOSSES", "UnknownNameError", "build_loss"]

T = TypeVar("T")


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup by a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:
        # KeyError.__str__ would print the message with quotes around it.
        return str(self.args[0]) if self.args else ""


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """``registry[name]``, or :class:`UnknownNameError` naming ``what`` and the valid names."""
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(sorted(registry))
        raise UnknownNameError(f"unknown {what} {name!r}; valid names: {valid}") from None


LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": CrossEntropyLoss,
    "l1": DepthL1Loss,
    "l2": DepthL2Loss,
    "berhu": BerHuLoss,
    "normals_l1": NormalsL1Loss,
    "normals_l2": NormalsL2Loss,
    "cosine": NormalsCosineLoss,
    "balanced_bce": BalancedBCELoss,
    "bce": BCELoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered as ``name`` (see :data:`LOSSES`) with ``kwargs``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: the keyword arguments do not fit the loss's constructor.
    """
    cls = lookup(LOSSES, name, "loss")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"loss {name!r}: bad arguments {sorted(kwargs)}: {exc}") from exc
