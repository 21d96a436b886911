"""Trainer extensions: training components that own their own data, modules, optimisers and checkpoint state.

Some methods train more than the model with its task losses: multi-task unsupervised domain adaptation
(DenseMTL, Lopes et al., WACV 2023, Sec. 4.5) adds an unlabelled target loader, one discriminator per task
output and the discriminators' optimiser. Such a component is a :class:`TrainerExtension`; the
:class:`~mtdense.engine.trainer.Trainer` holds a list of them (built from the config by
:func:`mtdense.engine.setup.build_extensions`, one per optional config section present, e.g. ``uda:``) and
calls every one at fixed points of the loop, so the trainer has no branch per method:

=====================================  ===========================================================================
hook                                   when
=====================================  ===========================================================================
``setup(trainer)``                     once, in ``Trainer.__init__`` after the model, optimiser and schedule
                                       exist and before a checkpoint is loaded (build modules, check the config
                                       against the model and the dataset)
``load_state_dict(state)``             on ``--resume``, with what ``state_dict()`` returned at the checkpoint
``extra_loss(trainer, batch, outputs,  every step, after the task losses have been back-propagated and before
step) -> {name: Tensor}``              the optimiser step: scalar terms whose gradients are added to the model's
                                       (the generator's); logged as ``loss/<name>``, checked for NaN like the
                                       task losses (the step then stops with the term named). ``batch`` is the
                                       step's (source) batch on the device, ``outputs`` the model's outputs on it,
                                       *detached* (their graph is already freed); a term must come from the
                                       extension's own forward passes
``after_step(trainer, step)``          every step, after the model's optimiser and schedule stepped: the
``-> {name: float}``                   extension's own updates (e.g. a discriminator step); returns log entries
``state_dict()``                       whenever the trainer checkpoints: saved under ``"extensions"/<name>``,
                                       so that exact resume holds for the extension's modules, optimisers and
                                       schedules too
``close()``                            when :meth:`Trainer.train` returns or raises (release loaders, workers)
=====================================  ===========================================================================

``step`` is the 0-based index of the step in progress (the number of steps completed before it). Exact resume
requires what an extension draws per step (e.g. its batches) to depend only on ``(seed, step)``, as the trainer's
own loader does (:mod:`mtdense.engine.data`), and every random state it keeps to be in ``state_dict()``; draws
from torch's global generator are covered by the trainer's checkpointed RNG state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from mtdense.engine.trainer import Trainer


@runtime_checkable
class TrainerExtension(Protocol):
    """The hooks the trainer calls on every extension (module docstring); ``name`` keys its checkpoint state."""

    name: str

    def setup(self, trainer: Trainer) -> None: ...

    def extra_loss(
        self, trainer: Trainer, batch: dict[str, Any], outputs: dict[str, Tensor], step: int
    ) -> dict[str, Tensor]: ...

    def after_step(self, trainer: Trainer, step: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class Extension:
    """A :class:`TrainerExtension` whose hooks do nothing: subclass it and override the hooks you need."""

    name = "extension"

    def setup(self, trainer: Trainer) -> None:
        """Called once the trainer's model, optimiser and schedule exist (before a checkpoint is loaded)."""

    def extra_loss(
        self, trainer: Trainer, batch: dict[str, Any], outputs: dict[str, Tensor], step: int
    ) -> dict[str, Tensor]:
        """Scalar terms added to the model's loss at ``step`` (``batch``, detached ``outputs``: the step's)."""
        return {}

    def after_step(self, trainer: Trainer, step: int) -> dict[str, float]:
        """The extension's own updates after the model's optimiser step; returns log entries."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def close(self) -> None:
        """Release what the extension holds open between steps (loaders, worker processes)."""
