"""Gradient-level balancers: one gradient per task on the shared parameters in, one update out.

The second form of the balancer interface (:mod:`mtdense.losses.balancing._base`):
``balancer.backward(total, losses, model=model)``. A :class:`GradientBalancer`

1. groups the deep-supervision terms by task, ``L_t = w_t · Σ_{key of t} m_key L_key``
   (:func:`~mtdense.losses.balancing._base.task_losses`; ``w_t`` the recipe's ``loss.weights`` as a
   fixed scale per task, 1 when not given);
2. takes the gradient ``g_t`` of each ``L_t`` on the model's shared parameters
   (:meth:`mtdense.models.MultiTaskModel.shared_parameters`, the shared encoder), flattened to a
   ``(K, P)`` matrix ``G``;
3. combines ``G`` into one update ``d`` (:meth:`GradientBalancer.combine`), written into the shared
   parameters' ``.grad``;
4. back-propagates ``Σ_t L_t`` into every other parameter (task-specific decoders and heads each
   receive the gradient of their own task's loss, as in every one of these papers).

``forward`` returns ``Σ_t L_t`` for logging and the finiteness check. Implementations:

* :class:`PCGrad`: Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Algorithm 1.
* :class:`MGDA`: MGDA-UB, Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
  NeurIPS 2018, Algorithm 2 with the upper bound of Sec. 3.3 (gradients on the shared representation).
* :class:`CAGrad`: Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS
  2021, Algorithm 1, ``c = 0.4``.

These take per-task gradients with :func:`torch.autograd.grad`, which bypasses DistributedDataParallel's
gradient reducer: they refuse to run under DDP (``supports_ddp = False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from mtdense.errors import ConfigError
from mtdense.losses.balancing._base import BalancerArgs, GeneratorState, PerTaskBalancer, loss_log

__all__ = ["CAGrad", "GradientBalancer", "MGDA", "PCGrad", "cagrad_direction", "min_norm_weights", "pcgrad_project"]


def _shared_and_rest(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    if not hasattr(model, "shared_parameters"):
        raise ConfigError(
            f"gradient-level balancers need model.shared_parameters(); {type(model).__name__} does not define it"
        )
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    if not shared:
        raise ConfigError(f"{type(model).__name__}.shared_parameters() holds no trainable parameter")
    ids = {id(p) for p in shared}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return shared, rest


def _flat_grads(loss: Tensor, params: Sequence[Tensor]) -> Tensor:
    """``∇_params loss`` flattened into one float32 vector (zeros where ``loss`` does not depend on a tensor)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([g.reshape(-1).float() for g in _as_grads(grads, params)])


def _as_grads(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
    """``grads`` with zeros in place of ``None`` (a tensor the loss does not depend on)."""
    return [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, like, strict=True)]


def _write_grads(params: Sequence[nn.Parameter], flat: Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p).to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad + g
        offset += n


class GradientBalancer(PerTaskBalancer):
    """Base of the gradient-level balancers (see the module docstring); subclasses implement :meth:`combine`.

    Constructor arguments (``tasks``, ``weights``, ``aux_weight``): see
    :class:`~mtdense.losses.balancing._base.PerTaskBalancer`.
    """

    supports_ddp = False

    def attach(self, model: nn.Module) -> None:
        """Check, before training, that ``model`` names its shared parameters (else a ConfigError)."""
        _shared_and_rest(model)

    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``Σ_t L_t`` and the log (what :meth:`backward` optimises is the combined update, not this sum)."""
        total = torch.stack(list(self.task_losses(losses).values())).sum()
        return total, loss_log(losses, total)

    def combine(self, grads: Tensor, tasks: Sequence[str]) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover
        """``(K, P)`` per-task gradients (rows in the order of ``tasks``) → the ``(P,)`` update and extra log
        entries."""
        raise NotImplementedError

    def backward(self, total: Tensor, losses: Mapping[str, Tensor], *, model: nn.Module) -> dict[str, float]:
        """Per-task gradients on ``model.shared_parameters()`` → :meth:`combine` → ``.grad``; ``Σ_t L_t`` into
        every other parameter."""
        shared, rest = _shared_and_rest(model)
        per_task = self.task_losses(losses)
        grads = torch.stack([_flat_grads(v, shared) for v in per_task.values()])
        update, extra = self.combine(grads, list(per_task))
        if rest:
            torch.autograd.backward(torch.stack(list(per_task.values())).sum(), inputs=rest)
        _write_grads(shared, update)
        return {f"{type(self).__name__.lower()}/{k}": v for k, v in extra.items()}


def pcgrad_project(grads: Tensor, orders: Sequence[Sequence[int]]) -> Tensor:
    """PCGrad's projected gradients (Yu et al. 2020, Algorithm 1), ``(K, P)`` → ``(K, P)``.

    For each task ``i``, ``g_i^PC`` starts at ``g_i`` and, for each other task ``j`` in ``orders[i]``,
    if ``g_i^PC · g_j < 0`` becomes ``g_i^PC − (g_i^PC · g_j) / ‖g_j‖² · g_j`` (projection onto the
    normal plane of the *original* ``g_j``). The update is ``Σ_i g_i^PC``.
    """
    out = grads.clone()
    norms_sq = (grads * grads).sum(1)
    for i, order in enumerate(orders):
        for j in order:
            if j == i or norms_sq[j] == 0:
                continue
            dot = out[i] @ grads[j]
            if dot < 0:
                out[i] = out[i] - dot / norms_sq[j] * grads[j]
    return out


class PCGrad(GeneratorState, GradientBalancer):
    """PCGrad, Yu et al., NeurIPS 2020, Algorithm 1 (:func:`pcgrad_project`): the update on the shared
    parameters is ``Σ_i g_i^PC``. The order in which task ``i`` visits the others is a random
    permutation per task and step, drawn from the balancer's own generator (seeded by ``seed``; its
    state is in ``state_dict``, so a resumed run draws the same orders)."""

    def combine(self, grads: Tensor, tasks: Sequence[str]) -> tuple[Tensor, dict[str, float]]:
        """``Σ_i g_i^PC`` with a random visiting order per task (:func:`pcgrad_project`)."""
        k = grads.shape[0]
        orders = [torch.randperm(k, generator=self.generator).tolist() for _ in range(k)]
        projected = pcgrad_project(grads, orders)
        conflicts = sum(float(grads[i] @ grads[j] < 0) for i in range(k) for j in range(i + 1, k))
        return projected.sum(0), {"conflicts": conflicts}


def _pair_min_norm(v11: Tensor, v12: Tensor, v22: Tensor) -> Tensor:
    """``γ ∈ [0, 1]`` minimising ``‖γ a + (1 − γ) b‖²`` given ``a·a``, ``a·b``, ``b·b`` (Sener & Koltun, Alg. 1)."""
    denom = v11 + v22 - 2 * v12
    if denom <= 0:
        return torch.ones((), dtype=v11.dtype) if v11 <= v22 else torch.zeros((), dtype=v11.dtype)
    return ((v22 - v12) / denom).clamp(0.0, 1.0)


def _best_pair(m: Tensor) -> Tensor:
    """The simplex point supported on two tasks with the smallest ``‖Σ α_t g_t‖²`` (Algorithm 1 per pair)."""
    k = m.shape[0]
    best, best_value = None, None
    for i in range(k):
        for j in range(i + 1, k):
            gamma = _pair_min_norm(m[i, i], m[i, j], m[j, j])
            value = gamma**2 * m[i, i] + 2 * gamma * (1 - gamma) * m[i, j] + (1 - gamma) ** 2 * m[j, j]
            if best_value is None or value < best_value:
                best_value = value
                best = torch.zeros(k, dtype=m.dtype)
                best[i], best[j] = gamma, 1 - gamma
    assert best is not None
    return best


def min_norm_weights(gram: Tensor, *, max_iter: int = 250, tol: float = 1e-6) -> Tensor:
    """The point ``α`` of the simplex minimising ``‖Σ_t α_t g_t‖²``, from the Gram matrix ``gram[i, j] = g_i·g_j``.

    Two tasks: the closed form of Sener & Koltun, Algorithm 1,
    ``α_1 = clip(((g_2 − g_1)·g_2) / ‖g_1 − g_2‖², 0, 1)``, ``α_2 = 1 − α_1``. More tasks: Frank–Wolfe
    (their Algorithm 2): from the best two-task solution (Algorithm 1 on every pair; the optimum when
    it lies on an edge of the simplex — Algorithm 2 starts at ``α = 1/K``, which converges to the same
    minimum, slower), move towards the vertex ``e_t̂``, ``t̂ = argmin_r (Gα)_r``, by the
    exact line search of Algorithm 1, until the step changes ``α`` by less than ``tol``. In float64.
    """
    m = gram.double()
    k = m.shape[0]
    if k == 1:
        return torch.ones(1, dtype=torch.float64)
    if k == 2:
        gamma = _pair_min_norm(m[0, 0], m[0, 1], m[1, 1])
        return torch.stack([gamma, 1 - gamma])
    alpha = _best_pair(m)
    for _ in range(max_iter):
        m_alpha = m @ alpha
        t = int(torch.argmin(m_alpha))
        gamma = _pair_min_norm(alpha @ m_alpha, m_alpha[t], m[t, t])
        new = gamma * alpha
        new[t] += 1 - gamma
        if (new - alpha).abs().sum() < tol:
            alpha = new
            break
        alpha = new
    return alpha


class MGDA(GradientBalancer):
    """MGDA-UB, Sener & Koltun, NeurIPS 2018: multiple-gradient descent with the min-norm solver of
    Algorithm 2 applied to the gradients on the shared *representation* ``Z`` (the output of
    ``model.shared_encoder()``) instead of the shared parameters — the upper bound of Sec. 3.3, which
    needs one backward pass of the encoder instead of one per task.

    Per step: ``α = argmin_{α ∈ Δ} ‖Σ_t α_t ∇_Z L_t‖²`` (:func:`min_norm_weights`); the shared
    parameters get the gradient of ``Σ_t α_t L_t`` (back-propagated from ``Z`` with
    ``Σ_t α_t ∇_Z L_t``); every task-specific parameter gets ``∇ L_t`` unscaled (Algorithm 2, line 2).
    ``Z`` is captured by a forward hook that :meth:`attach` registers on the shared encoder; it keeps
    only training-mode forwards with gradients enabled. The task losses are not normalised before the
    solver (the paper's algorithm has no normalisation; scale them with ``loss.weights``).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        weights: Mapping[str, float] | None = None,
        aux_weight: float | Mapping[str, float] = 1.0,
    ) -> None:
        super().__init__(tasks, weights=weights, aux_weight=aux_weight)
        self._representation: list[Tensor] | None = None
        self._hook: Any = None

    def attach(self, model: nn.Module) -> None:
        """Register the forward hook that captures ``Z`` on ``model.shared_encoder()``."""
        encoder = getattr(model, "shared_encoder", None)
        if encoder is None:
            raise ConfigError(f"MGDA: model {type(model).__name__} names no shared encoder (shared_encoder())")
        super().attach(model)
        if self._hook is not None:
            self._hook.remove()
        self._hook = encoder().register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: Any, output: Any) -> None:
        if module.training and torch.is_grad_enabled():
            self._representation = [output] if isinstance(output, Tensor) else list(output)

    def combine(self, grads: Tensor, tasks: Sequence[str]) -> tuple[Tensor, dict[str, float]]:
        """The min-norm ``α`` for the rows of ``grads`` and ``Σ_t α_t g_t`` (MGDA on the given gradients;
        :meth:`backward` applies it to the gradients on the shared representation)."""
        alpha = min_norm_weights(grads @ grads.T).to(grads.dtype)
        return alpha @ grads, {f"alpha/{t}": a for t, a in zip(tasks, alpha.tolist(), strict=True)}

    def backward(self, total: Tensor, losses: Mapping[str, Tensor], *, model: nn.Module) -> dict[str, float]:
        """See the class docstring."""
        z = self._representation
        if z is None:
            raise ConfigError("MGDA: no shared representation captured; call attach(model) before the forward")
        self._representation = None
        shared, rest = _shared_and_rest(model)
        per_task = self.task_losses(losses)
        grads_z = [
            _as_grads(torch.autograd.grad(v, z, retain_graph=True, allow_unused=True), z) for v in per_task.values()
        ]
        flat = torch.stack([torch.cat([g.reshape(-1).float() for g in gz]) for gz in grads_z])
        alpha = min_norm_weights(flat @ flat.T).tolist()
        if rest:
            torch.autograd.backward(torch.stack(list(per_task.values())).sum(), inputs=rest, retain_graph=True)
        combined = [sum(a * gz[i] for a, gz in zip(alpha, grads_z, strict=True)) for i in range(len(z))]
        torch.autograd.backward(z, grad_tensors=combined, inputs=shared)
        return {f"mgda/alpha/{t}": a for t, a in zip(per_task, alpha, strict=True)}


def _project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of ``v`` onto the probability simplex (sort-based, Held et al. 1974)."""
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1
    ks = torch.arange(1, v.numel() + 1, dtype=v.dtype)
    rho = int(torch.nonzero(u - css / ks > 0).max())
    return (v - css[rho] / (rho + 1)).clamp_min(0)


def cagrad_direction(grads: Tensor, c: float, *, iters: int = 500, tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """CAGrad's update (Liu et al. 2021, Algorithm 1 and the dual problem of their eq. 3).

    With ``g_0 = mean_i g_i``, ``φ = c² ‖g_0‖²`` and ``g_w = Σ_i w_i g_i``, solve
    ``w* = argmin_{w ∈ Δ} g_w·g_0 + √φ ‖g_w‖`` and return ``d = g_0 + (√φ / ‖g_w*‖) g_w*`` and ``w*``.
    ``c = 0`` gives ``d = g_0``, plain gradient descent on the average loss. The dual is solved in
    float64 on the ``K × K`` Gram matrix by projected gradient descent with backtracking. No final rescaling by
    ``1 + c²`` (which the authors' experiments apply; the paper's Algorithm 1 has none).
    """
    gram = (grads @ grads.T).double()
    k = gram.shape[0]
    g0_g0 = gram.mean()
    sqrt_phi = c * g0_g0.clamp_min(0).sqrt()
    b = torch.full((k,), 1.0 / k, dtype=torch.float64)
    if c == 0 or sqrt_phi == 0:
        return grads.mean(0), b

    def objective(w: Tensor) -> Tensor:
        return w @ gram @ b + sqrt_phi * (w @ gram @ w).clamp_min(1e-20).sqrt()

    def gradient(w: Tensor) -> Tensor:
        return gram @ b + sqrt_phi * (gram @ w) / (w @ gram @ w).clamp_min(1e-20).sqrt()

    # projected gradient descent with a backtracking (Armijo) step, in float64 on the K × K problem
    w, value, step = b.clone(), objective(b), 1.0 / float(gram.diagonal().max().clamp_min(1e-20))
    for _ in range(iters):
        g = gradient(w)
        while True:
            candidate = _project_simplex(w - step * g)
            new_value = objective(candidate)
            if new_value <= value + g @ (candidate - w) + (candidate - w).pow(2).sum() / (2 * step) or step < 1e-30:
                break
            step /= 2
        moved = (candidate - w).abs().sum()
        w, value, step = candidate, new_value, step * 2
        if moved < tol:
            break
    w = w.to(grads.dtype)
    gw = w @ grads
    gw_norm = gw.norm()
    if gw_norm == 0:
        return grads.mean(0), w.double()
    return grads.mean(0) + (float(sqrt_phi) / gw_norm) * gw, w.double()


class CAGrad(GradientBalancer):
    """CAGrad, Liu et al., NeurIPS 2021 (:func:`cagrad_direction`), ``c = 0.4`` by default (the paper's
    value for NYUv2 and Cityscapes): the update on the shared parameters maximises the worst local
    improvement of any task within a ball of radius ``c‖g_0‖`` around the average gradient ``g_0``."""

    class Args(BalancerArgs):
        c: float = Field(0.4, ge=0)

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        weights: Mapping[str, float] | None = None,
        aux_weight: float | Mapping[str, float] = 1.0,
        c: float = 0.4,
    ) -> None:
        super().__init__(tasks, weights=weights, aux_weight=aux_weight)
        if c < 0:
            raise ConfigError(f"CAGrad: expected c >= 0, got {c}")
        self.c = float(c)

    def combine(self, grads: Tensor, tasks: Sequence[str]) -> tuple[Tensor, dict[str, float]]:
        """:func:`cagrad_direction` with this balancer's ``c``; logs the dual weights ``w*``."""
        update, w = cagrad_direction(grads, self.c)
        return update, {f"w/{t}": float(x) for t, x in zip(tasks, w.tolist(), strict=True)}
