"""Loss balancers beyond fixed and uncertainty weights, on hand-derived cases (issue 12, items 1-3).

Loss-level: DWA (Liu et al. 2019, eq. 7), RLW (Lin et al. 2022), GradNorm (Chen et al. 2018, eq. 2).
Gradient-level: PCGrad (Yu et al. 2020, Alg. 1), MGDA-UB (Sener & Koltun 2018, Alg. 1-2), CAGrad
(Liu et al. 2021, Alg. 1). Derivations are in each test's docstring.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtdense.config import validate_config
from mtdense.errors import ConfigError, MtdenseError
from mtdense.losses import BALANCERS, UnknownNameError
from mtdense.losses.balancing import (
    MGDA,
    CAGrad,
    DynamicWeightAverage,
    GradientBalancer,
    GradNorm,
    LossBalancer,
    PCGrad,
    RandomLossWeighting,
    cagrad_direction,
    min_norm_weights,
    pcgrad_project,
    task_losses,
)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# -- PCGrad -------------------------------------------------------------------------------------------
def test_pcgrad_projects_two_conflicting_2d_gradients():
    """g1 = (1, 0), g2 = (−1, 1): g1·g2 = −1 < 0, so each is projected on the normal plane of the other:
    g1' = g1 − (−1)/‖g2‖² g2 = (1, 0) + ½(−1, 1) = (½, ½);  g2' = g2 − (−1)/‖g1‖² g1 = (0, 1).
    Both projections are orthogonal to the gradient they were projected against; the update is their sum."""
    grads = torch.stack([_t(1, 0), _t(-1, 1)])
    projected = pcgrad_project(grads, [[1], [0]])
    assert torch.allclose(projected, torch.stack([_t(0.5, 0.5), _t(0, 1)]))
    assert projected[0] @ grads[1] == pytest.approx(0) and projected[1] @ grads[0] == pytest.approx(0)
    update, extra = PCGrad(["a", "b"]).combine(grads, ["a", "b"])
    assert torch.allclose(update, _t(0.5, 1.5)) and extra["conflicts"] == 1


def test_pcgrad_leaves_agreeing_gradients_alone():
    grads = torch.stack([_t(1, 0), _t(1, 1)])  # g1·g2 = 1 > 0
    assert torch.equal(pcgrad_project(grads, [[1], [0]]), grads)
    update, extra = PCGrad(["a", "b"]).combine(grads, ["a", "b"])
    assert torch.allclose(update, _t(2, 1)) and extra["conflicts"] == 0


# -- MGDA ---------------------------------------------------------------------------------------------
def test_mgda_two_gradients_match_the_closed_form_min_norm_solution():
    """g1 = (1, 0), g2 = (0, 2). Sener & Koltun Alg. 1: α1 = ((g2 − g1)·g2)/‖g1 − g2‖² = 4/5, α2 = 1/5.
    The min-norm point α1 g1 + α2 g2 = (0.8, 0.4) is orthogonal to g1 − g2 = (1, −2), as it must be."""
    grads = torch.stack([_t(1, 0), _t(0, 2)])
    alpha = min_norm_weights(grads @ grads.T)
    assert torch.allclose(alpha, _t(0.8, 0.2))
    point = alpha @ grads
    assert point @ (grads[0] - grads[1]) == pytest.approx(0, abs=1e-12)
    update, extra = MGDA(["a", "b"]).combine(grads, ["a", "b"])
    assert torch.allclose(update, _t(0.8, 0.4)) and extra == pytest.approx({"alpha/a": 0.8, "alpha/b": 0.2})


def test_mgda_clips_at_a_vertex():
    """g1 = (1, 0), g2 = (2, 0): the unclipped α1 = ((g2 − g1)·g2)/‖g1 − g2‖² = 2; clipped to 1 (g1 alone)."""
    grads = torch.stack([_t(1, 0), _t(2, 0)])
    assert torch.allclose(min_norm_weights(grads @ grads.T), _t(1, 0))


def test_mgda_frank_wolfe_on_three_gradients():
    """g = (1, 0), (0, 1), (1, 1): the nearest point of their convex hull to 0 is (½, ½) = ½g1 + ½g2, norm² ½."""
    grads = torch.stack([_t(1, 0), _t(0, 1), _t(1, 1)])
    alpha = min_norm_weights(grads @ grads.T)
    assert alpha.sum() == pytest.approx(1) and (alpha >= 0).all()
    assert (alpha @ grads).pow(2).sum() == pytest.approx(0.5, abs=1e-4)
    assert alpha[2] < 1e-2


# -- CAGrad -------------------------------------------------------------------------------------------
def test_cagrad_reduces_to_the_average_gradient_at_c_zero():
    grads = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    update, _ = cagrad_direction(grads, 0.0)
    assert torch.allclose(update, grads.mean(0))
    update, _ = CAGrad(["a", "b", "c"], c=0.0).combine(grads, ["a", "b", "c"])
    assert torch.allclose(update, grads.mean(0))


def test_cagrad_on_two_orthogonal_gradients():
    """g1 = (1, 0), g2 = (0, 1), c = 0.4: g0 = (½, ½), √φ = c‖g0‖. The dual objective g_w·g0 + √φ‖g_w‖ is
    convex and symmetric in (w1, w2), so w* = (½, ½), g_w = g0 and d = g0 + (c‖g0‖/‖g0‖) g0 = 1.4 g0 = (0.7, 0.7)."""
    grads = torch.stack([_t(1, 0), _t(0, 1)])
    update, w = cagrad_direction(grads, 0.4)
    assert torch.allclose(w, _t(0.5, 0.5), atol=1e-5)
    assert torch.allclose(update, _t(0.7, 0.7), atol=1e-6)


def test_cagrad_matches_a_grid_search_of_its_dual():
    """An asymmetric case: the returned direction equals the one built from the best w of a fine grid."""
    grads = torch.stack([_t(1, 0), _t(-0.5, 1)])
    c = 0.4
    g0 = grads.mean(0)
    sqrt_phi = c * g0.norm()
    ws = torch.linspace(0, 1, 100001, dtype=torch.float64)
    gw = ws[:, None] * grads[0] + (1 - ws[:, None]) * grads[1]
    best = int(torch.argmin(gw @ g0 + sqrt_phi * gw.norm(dim=1)))
    expected = g0 + sqrt_phi / gw[best].norm() * gw[best]
    update, _ = cagrad_direction(grads, c)
    assert torch.allclose(update, expected, atol=1e-4)
    # the conflict-averse property: the worst task improves at least as much as under g0 alone
    assert (grads @ update).min() >= (grads @ g0).min() - 1e-9


# -- DWA ----------------------------------------------------------------------------------------------
def _scalar_losses(**values: float) -> dict[str, torch.Tensor]:
    return {k.replace("__", "/"): torch.tensor(v, requires_grad=True) for k, v in values.items()}


def test_dwa_weights_from_two_known_loss_histories():
    """Periods of one step, T = 2. L(t−2) = (a 2, b 1), L(t−1) = (a 1, b 2), so w = (½, 2) and (eq. 7)
    λ_a = 2 e^{¼} / (e^{¼} + e^{1}), λ_b = 2 e^{1} / (e^{¼} + e^{1}). Before two periods, λ = 1."""
    dwa = DynamicWeightAverage(["a", "b"], window=1)
    total, log = dwa(_scalar_losses(a=2.0, b=1.0))
    assert total.item() == pytest.approx(3.0) and log["weight/a"] == 1.0
    dwa(_scalar_losses(a=1.0, b=2.0))
    denom = math.exp(0.25) + math.exp(1.0)
    lam_a, lam_b = 2 * math.exp(0.25) / denom, 2 * math.exp(1.0) / denom
    assert dwa.current_weights() == pytest.approx({"a": lam_a, "b": lam_b})
    total, log = dwa(_scalar_losses(a=3.0, b=5.0))
    assert total.item() == pytest.approx(3 * lam_a + 5 * lam_b)
    assert log["weight/a"] == pytest.approx(lam_a) and log["weight/a"] + log["weight/b"] == pytest.approx(2)


def test_dwa_averages_each_period_and_groups_deep_supervision_by_task():
    """window 2: periods are the means of steps (1, 2) and (3, 4). Task a's loss is the sum of its final
    and intermediate terms, L_a = 1 + 1 then 2 + 2 (period mean 3), then 1 + 1 twice (mean 2): w_a = 2/3;
    task b: 1, 3 (mean 2) then 4, 4 (mean 4): w_b = 2. λ_b/λ_a = e^{(2 − 2/3)/2} = e^{2/3}."""
    dwa = DynamicWeightAverage(["a", "b"], window=2, temperature=2.0)
    for a, b in [(1.0, 1.0), (2.0, 3.0), (1.0, 4.0), (1.0, 4.0)]:
        dwa(_scalar_losses(a=a, aux__a=a, b=b))
    w = dwa.current_weights()
    assert w["b"] / w["a"] == pytest.approx(math.exp(2 / 3))


def test_dwa_state_dict_round_trip_keeps_the_history():
    dwa = DynamicWeightAverage(["a", "b"], window=2)
    for a, b in [(1.0, 1.0), (2.0, 3.0), (1.0, 4.0)]:
        dwa(_scalar_losses(a=a, b=b))
    other = DynamicWeightAverage(["a", "b"], window=2)
    other.load_state_dict(dwa.state_dict())
    for bal in (dwa, other):
        bal(_scalar_losses(a=1.0, b=4.0))
    assert other.current_weights() == dwa.current_weights() != {"a": 1.0, "b": 1.0}


# -- RLW ----------------------------------------------------------------------------------------------
def test_rlw_weights_are_a_softmax_of_a_normal_draw_and_resume_exactly():
    rlw = RandomLossWeighting(["a", "b", "c"], seed=5)
    z = torch.randn(3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    lam = torch.softmax(z, 0).tolist()
    total, log = rlw(_scalar_losses(a=1.0, b=2.0, c=4.0))
    assert [log[f"weight/{t}"] for t in "abc"] == pytest.approx(lam)
    assert total.item() == pytest.approx(lam[0] + 2 * lam[1] + 4 * lam[2], rel=1e-6)
    other = RandomLossWeighting(["a", "b", "c"], seed=99)
    other.load_state_dict(rlw.state_dict())  # the generator state travels with the checkpoint
    assert other.draw() == rlw.draw()


# -- GradNorm -----------------------------------------------------------------------------------------
class _TwoTaskNet(nn.Module):
    """Shared linear layer then one linear head per task; the shared layer is GradNorm's W."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(3, 4)
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})

    def shared_encoder(self) -> nn.Module:
        return self.encoder

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_layer(self) -> nn.Module:
        return self.encoder

    def losses(self, x: torch.Tensor, scale_a: float = 1.0) -> dict[str, torch.Tensor]:
        z = torch.relu(self.encoder(x))
        return {t: (scale_a if t == "a" else 1.0) * head(z).pow(2).mean() for t, head in self.heads.items()}


def test_gradnorm_moves_the_weights_as_its_equation_says():
    """One shared scalar weight W = 1, L_a = 3W, L_b = W, w = (1, 1), first step so r = (1, 1), α = 1.5:
    G = w·‖∇_W L‖ = (3, 1), Ḡ = 2, target Ḡ r^α = (2, 2), ∂L_grad/∂w_i = sign(G_i − 2)·‖∇_W L_i‖ = (+3, −1):
    a gradient step lowers the weight of the task with the larger gradient norm and raises the other's."""

    class Scalar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def shared_layer(self) -> nn.Module:
            return self

    model = Scalar()
    bal = GradNorm(["a", "b"], alpha=1.5)
    losses = {"a": 3 * model.w, "b": model.w}
    total, _ = bal(losses)
    log = bal.backward(total, losses, model=model)
    assert torch.allclose(bal.task_weights.grad, torch.tensor([3.0, -1.0]))
    assert log["gradnorm/loss"] == pytest.approx(2.0)  # |3 − 2| + |1 − 2|
    assert model.w.grad.item() == pytest.approx(4.0)  # the network gets ∇(w_a L_a + w_b L_b) = 3 + 1
    with torch.no_grad():  # one plain gradient step on the weights
        bal.task_weights -= 0.1 * bal.task_weights.grad
    bal(losses)  # renormalises to Σ w = 2 before use
    w = bal.task_weights.detach()
    assert w[0] < 1 < w[1] and w.sum().item() == pytest.approx(2.0)


def test_gradnorm_raises_the_weight_of_the_task_that_trains_slowest():
    """Equal gradient norms (1, 1), w = (1, 1), L(0) = (1, 1), L = (2, 1), α = 1: L̃ = (2, 1), r = (4/3, 2/3),
    target = Ḡ r = (4/3, 2/3); G − target = (−1/3, +1/3), so ∇_w L_grad = (−1, +1): task a (lagging) gains."""
    bal = GradNorm(["a", "b"], alpha=1.0)
    bal.initial_losses.copy_(torch.tensor([1.0, 1.0]))
    grad, l_grad = bal.gradnorm_grad({"a": torch.tensor(2.0), "b": torch.tensor(1.0)}, torch.tensor([1.0, 1.0]))
    assert torch.allclose(grad, torch.tensor([-1.0, 1.0])) and l_grad.item() == pytest.approx(2 / 3)


# -- gradient-level backward on a model ---------------------------------------------------------------
def _per_task_grads(model: _TwoTaskNet, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
    losses = model.losses(x, scale_a=5.0)
    shared = model.shared_parameters()
    flat = []
    heads = {}
    for t, value in losses.items():
        gs = torch.autograd.grad(value, shared + list(model.heads[t].parameters()), retain_graph=True)
        flat.append(torch.cat([g.reshape(-1) for g in gs[: len(shared)]]))
        heads[t] = list(gs[len(shared) :])
    return torch.stack(flat), heads


@pytest.mark.parametrize("cls", [PCGrad, CAGrad])
def test_gradient_balancer_writes_the_combined_update_on_shared_and_own_gradients_on_heads(cls):
    model = _TwoTaskNet()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    grads, head_grads = _per_task_grads(model, x)
    bal = cls(["a", "b"])
    expected, _ = cls(["a", "b"]).combine(grads, ["a", "b"])  # same seed: same PCGrad visiting order
    losses = model.losses(x, scale_a=5.0)
    total, _ = bal(losses)
    bal.backward(total, losses, model=model)
    written = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
    assert torch.allclose(written, expected, atol=1e-6)
    for t in "ab":
        assert all(torch.allclose(p.grad, g) for p, g in zip(model.heads[t].parameters(), head_grads[t], strict=True))


def test_mgda_ub_scales_the_shared_gradient_by_the_min_norm_weights_of_the_representation_gradients():
    """Shared params get Σ α_t ∇L_t with α the min-norm weights of ∇_Z L_t (Z = the encoder output);
    the heads get their own unscaled ∇L_t (Sener & Koltun, Alg. 2)."""
    model = _TwoTaskNet()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    bal = MGDA(["a", "b"])
    bal.attach(model)
    z = model.encoder(x)
    zr = torch.relu(z)
    losses = {t: (5.0 if t == "a" else 1.0) * head(zr).pow(2).mean() for t, head in model.heads.items()}
    gz = torch.stack([torch.autograd.grad(v, z, retain_graph=True)[0].reshape(-1) for v in losses.values()])
    alpha = min_norm_weights(gz.double() @ gz.double().T).float()
    grads, head_grads = _per_task_grads(model, x)
    losses = model.losses(x, scale_a=5.0)  # a fresh forward: the hook captures this Z
    total, _ = bal(losses)
    log = bal.backward(total, losses, model=model)
    assert log["mgda/alpha/a"] == pytest.approx(alpha[0].item(), rel=1e-5)
    written = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
    assert torch.allclose(written, alpha @ grads, atol=1e-6)
    assert all(torch.allclose(p.grad, g) for p, g in zip(model.heads["b"].parameters(), head_grads["b"], strict=True))


# -- interface, registry, config ----------------------------------------------------------------------
def test_every_registered_balancer_implements_the_interface_and_validates_its_args():
    assert set(BALANCERS) == {"fixed", "uncertainty", "dwa", "rlw", "gradnorm", "pcgrad", "mgda", "cagrad"}
    assert all(issubclass(cls, LossBalancer) for cls in BALANCERS.values())
    assert {n for n, c in BALANCERS.items() if issubclass(c, GradientBalancer)} == {"pcgrad", "mgda", "cagrad"}
    assert not any(BALANCERS[n].supports_ddp for n in ("pcgrad", "mgda", "cagrad"))


def _config(loss: dict) -> object:
    return validate_config({"model": {"name": "mtl", "backbone": {"name": "resnet18"}}, "loss": loss})


def test_config_resolves_balancer_args_with_defaults():
    cfg = _config({"balancer": "cagrad"})
    assert cfg.loss.balancer_args == {"c": 0.4}
    cfg = _config({"balancer": "dwa", "balancer_args": {"window": 10}})
    assert cfg.loss.balancer_args == {"temperature": 2.0, "window": 10}
    assert _config({"balancer": "gradnorm"}).loss.balancer_args == {"alpha": 1.5}


@pytest.mark.parametrize(
    ("loss", "match"),
    [
        ({"balancer": "nash"}, r"unknown loss balancer 'nash'; valid balancers: fixed, uncertainty, dwa"),
        ({"balancer": "dwa", "balancer_args": {"temp": 1}}, r"balancer_args for 'dwa': temp.*valid keys: temperature"),
        ({"balancer": "cagrad", "balancer_args": {"c": -1.0}}, r"balancer_args for 'cagrad': c: .*greater than"),
        ({"balancer": "fixed", "balancer_args": {"alpha": 1.0}}, r"balancer_args for 'fixed': alpha.*valid keys: none"),
    ],
)
def test_bad_balancer_settings_are_named(loss, match):
    with pytest.raises(ConfigError, match=match):
        _config(loss)


def test_task_losses_group_deep_supervision_terms_and_name_a_missing_weight():
    """L_t = w_t Σ m_key L_key: a = 2 · (1 + 0.5 · 4) = 6 with aux multiplier 0.5."""
    grouped = task_losses(
        _scalar_losses(a=1.0, aux__a=4.0, b=3.0), weights={"a": 2.0, "b": 1.0}, aux_weight=0.5, balancer="X"
    )
    assert {k: v.item() for k, v in grouped.items()} == {"a": 6.0, "b": 3.0}
    with pytest.raises(ConfigError, match=r"X: no weight for task 'b' \(loss key 'b'\)"):
        task_losses(_scalar_losses(b=1.0), weights={"a": 1.0}, aux_weight=1.0, balancer="X")


def test_an_unknown_task_is_named_and_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"DynamicWeightAverage: loss key 'aux/c' belongs to task 'c'"):
        DynamicWeightAverage(["a"])(_scalar_losses(aux__c=1.0))
    # the gradient-level balancers share the check (mtdense.losses.balancing._base.PerTaskBalancer)
    with pytest.raises(ConfigError, match=r"PCGrad: loss key 'c' belongs to task 'c', not one of a, b"):
        PCGrad(["a", "b"])(_scalar_losses(a=1.0, c=1.0))
    from mtdense.losses import build_balancer

    with pytest.raises(UnknownNameError, match="pcgrad"):
        build_balancer("pc-grad", tasks=["a"])


def test_a_model_without_a_single_shared_encoder_is_refused_by_name():
    from mtdense.models import MultiTaskModel

    class NoEncoder(MultiTaskModel):
        pass

    with pytest.raises(MtdenseError, match="NoEncoder has no single shared encoder"):
        NoEncoder({"semseg": 3}).shared_parameters()


def test_mgda_frank_wolfe_reaches_an_interior_optimum():
    """g = (1, 0, 0), (0, 1, 0), (0, 0, 1): the min-norm point of the simplex is the centre, α = 1/3 each."""
    grads = torch.eye(3, dtype=torch.float64) * torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    alpha = min_norm_weights(grads @ grads.T, max_iter=2000)
    assert torch.allclose(alpha, torch.full((3,), 1 / 3, dtype=torch.float64), atol=2e-3)
