"""The gradient probe: per-task gradients on the shared parameters over training, as a trainer extension.

Why a multi-task network does worse than its single-task counterparts is a question about the tasks' gradients
on the parameters they share: one task's gradient may dwarf the others (a loss weight tuned for another setting),
or two tasks' gradients may point in conflicting directions (Yu et al., "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020, Sec. 2: conflict is a negative cosine). The probe measures both, every ``probe.every``
steps, on the step's own batch, and the trainer logs them with the step's losses in ``metrics.jsonl``:

* ``probe/weight/<t>``: the weight ``c_t = ∂L_total / ∂L_t`` with which the balancer (``loss.balancer``) adds the
  task's main loss ``L_t`` (key ``t``) to the total it back-propagates, as autograd sees it at this step: the
  fixed ``loss.weights`` entry for ``fixed``, ``exp(−s_t)`` (times ½ for regression) for ``uncertainty``, DWA's and
  RLW's weights of the step.
* ``probe/grad/<t>``: ``‖g_t‖``, ``g_t = ∇_θ Σ_{k ∈ t} c_k L_k`` over ``θ = model.shared_parameters()`` (the shared
  encoder; :meth:`mtdense.models.MultiTaskModel.shared_parameters`), ``k`` every output of task ``t`` (final and
  deep-supervision) and ``c_k = ∂L_total / ∂L_k``: the task's actual share of the update direction before the
  optimiser's per-parameter scaling.
* ``probe/grad_raw/<t>``: ``‖∇_θ L_t‖`` of the unweighted main loss (what the weight multiplies).
* ``probe/cos/<a>|<b>``: ``cos(g_a, g_b)`` for every pair of tasks in ``data.tasks`` order.

Gradient-level balancers (PCGrad, MGDA, CAGrad) combine the per-task gradients themselves; for them ``c_k`` is the
derivative of their ``forward`` total, i.e. of the loss-level weights they apply before combining.

The probe changes nothing in the run: it runs its own forward pass (training mode, the trainer's autocast) on a
copy of nothing but the batch, inside :func:`torch.random.fork_rng` (the global generator continues as without
the probe), restores every buffer the forward touched (BatchNorm running statistics) afterwards, uses a copy of
the balancer (whose ``forward`` may keep history, e.g. DWA), and takes gradients with :func:`torch.autograd.grad`
(the parameters' ``.grad`` are left as the step wrote them). A probed run therefore ends with the same weights as
an unprobed one; it costs one forward and ``T`` backward passes every ``every`` steps.

Config::

    probe:
      every: 20    # a multiple of train.log_every, so that each probe lands in a logged record
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mtdense.engine.extensions import Extension
from mtdense.errors import ConfigError
from mtdense.losses import task_of

if TYPE_CHECKING:
    from mtdense.engine.trainer import Trainer

__all__ = ["GradProbe", "gradient_stats"]


def gradient_stats(
    losses: dict[str, Tensor], total: Tensor, params: list[torch.nn.Parameter], tasks: list[str]
) -> dict[str, float]:
    """The probe's log entries (module docstring) from one step's ``losses`` (keyed by output), the balancer's
    ``total`` built from them, and the shared ``params``; ``tasks`` fixes the order of the pairs."""
    keys = list(losses)
    coefs = torch.autograd.grad(total, [losses[k] for k in keys], retain_graph=True, allow_unused=True)
    coef = {k: (torch.zeros(()) if c is None else c.detach().float()) for k, c in zip(keys, coefs, strict=True)}
    present = [t for t in tasks if any(task_of(k) == t for k in keys)]
    flat: dict[str, Tensor] = {}
    log: dict[str, float] = {}
    for t in present:
        term = torch.stack([coef[k] * losses[k].float() for k in keys if task_of(k) == t]).sum()
        flat[t] = _flat_grad(term, params)
        log[f"probe/grad/{t}"] = float(flat[t].norm())
        if t in losses:
            log[f"probe/weight/{t}"] = float(coef[t])
            log[f"probe/grad_raw/{t}"] = float(_flat_grad(losses[t].float(), params).norm())
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            denom = flat[a].norm() * flat[b].norm()
            cos = float(flat[a] @ flat[b] / denom) if float(denom) > 0 else 0.0
            log[f"probe/cos/{a}|{b}"] = cos
    return log


def _flat_grad(term: Tensor, params: list[torch.nn.Parameter]) -> Tensor:
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1).float() for p, g in zip(params, grads, strict=True)]
    )


class GradProbe(Extension):
    """The gradient probe (module docstring) every ``every`` steps.

    Raises (in :meth:`setup`):
        ConfigError: ``every`` is not a multiple of ``train.log_every`` (its records would not be logged), or the
            model has no shared parameters to probe.
    """

    name = "probe"

    def __init__(self, every: int) -> None:
        self.every = int(every)
        self._pending: dict[str, float] = {}

    def setup(self, trainer: Trainer) -> None:
        log_every = trainer.cfg.train.log_every
        if self.every % log_every:
            raise ConfigError(
                f"probe.every: expected a multiple of train.log_every ({log_every}) so that every probe is logged, "
                f"got {self.every}"
            )
        self.params = [p for p in trainer.model.shared_parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError(f"probe: model {type(trainer.model).__name__} has no trainable shared parameters")
        self.tasks = list(trainer.cfg.data.tasks) + list(trainer.cfg.data.aux_tasks)

    def extra_loss(
        self, trainer: Trainer, batch: dict[str, Any], outputs: dict[str, Tensor], step: int
    ) -> dict[str, Tensor]:
        if (step + 1) % self.every == 0:
            self._pending = self.measure(trainer, batch)
        return {}

    def measure(self, trainer: Trainer, batch: dict[str, Any]) -> dict[str, float]:
        """The log entries on ``batch`` with the model as it is (nothing about the run changes)."""
        from mtdense.engine.trainer import compute_losses

        model = trainer.model
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        balancer = copy.deepcopy(trainer.balancer)
        try:
            devices = [trainer.device] if trainer.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                outputs = trainer.forward(batch["image"], model=model)
                losses = compute_losses(outputs, batch, trainer.tasks)
                if not losses:
                    return {}
                total, _ = balancer(losses)
                return gradient_stats(losses, total, self.params, self.tasks)
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])

    def after_step(self, trainer: Trainer, step: int) -> dict[str, float]:
        log, self._pending = self._pending, {}
        return log
