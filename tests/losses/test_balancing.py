"""Loss balancers: fixed weights with per-tag multipliers, learned uncertainty weights (TRL eq. 7)."""

from __future__ import annotations

import math

import pytest
import torch

from mtdense.errors import ConfigError, ShapeError
from mtdense.losses import (
    BALANCERS,
    FixedWeights,
    UncertaintyWeights,
    UnknownNameError,
    build_balancer,
    check_tag_weights,
    key_multiplier,
    task_of,
)


def _losses(**values: float) -> dict[str, torch.Tensor]:
    """Scalar leaf tensors; ``__`` in a name stands for ``/`` (``aux__depth`` → ``aux/depth``)."""
    return {k.replace("__", "/"): torch.tensor(v, requires_grad=True) for k, v in values.items()}


def test_task_of_and_key_multiplier():
    assert task_of("initial/s8/depth") == "depth" and task_of("semseg") == "semseg"
    table = {"initial": 0.5, "initial/s8": 0.25, "aux/edge": 0.1}
    assert key_multiplier("depth", table) == 1.0  # final outputs are never scaled
    assert key_multiplier("initial/s8/depth", table) == 0.25  # most specific prefix wins
    assert key_multiplier("initial/s4/depth", table) == 0.5
    assert key_multiplier("aux/edge", table) == 0.1  # full key
    assert key_multiplier("aux/depth", table) == 1.0  # no entry
    assert key_multiplier("aux/depth", 0.8) == 0.8 and key_multiplier("depth", 0.8) == 1.0


def test_tag_times_task_weights():
    """PAD-Net (Sec. 4.1): 0.8 on the intermediate contour and normals losses only. Precedence: longest
    tag prefix first, at equal prefix the task-specific entry."""
    padnet = {"initial/edge": 0.8, "initial/normals": 0.8}
    assert key_multiplier("initial/edge", padnet) == 0.8 and key_multiplier("initial/normals", padnet) == 0.8
    assert key_multiplier("initial/semseg", padnet) == 1.0 and key_multiplier("initial/depth", padnet) == 1.0
    assert key_multiplier("edge", padnet) == 1.0
    table = {"initial": 0.5, "initial/depth": 0.3, "initial/s8": 0.25, "initial/s8/depth": 0.1}
    assert key_multiplier("initial/s8/depth", table) == 0.1  # tag prefix s8 × depth
    assert key_multiplier("initial/s8/edge", table) == 0.25  # tag prefix s8, any task
    assert key_multiplier("initial/s4/depth", table) == 0.3  # tag "initial" × depth beats "initial"
    assert key_multiplier("initial/s4/edge", table) == 0.5
    total, _ = FixedWeights({"semseg": 1.0, "edge": 2.0}, aux_weight=padnet)(
        _losses(initial__edge=1.0, initial__semseg=1.0, semseg=1.0)
    )
    assert total.item() == pytest.approx(2 * 0.8 + 1 + 1)


def test_unknown_tag_weights_keys_are_named():
    outputs = ["semseg", "initial/semseg", "initial/edge", "initial/s8/depth"]
    check_tag_weights({"initial": 1.0, "initial/edge": 0.8, "initial/s8": 1.0, "initial/depth": 2.0}, outputs)
    with pytest.raises(ConfigError, match=r"\['aux', 'initial/normals'\].*initial/edge"):
        check_tag_weights({"initial/normals": 0.8, "aux": 0.5}, outputs)
    with pytest.raises(ConfigError, match="'semseg'"):
        check_tag_weights({"semseg": 0.5}, outputs)  # final outputs are never scaled by tag_weights


def test_fixed_weights_total_and_log():
    """weights semseg 1, depth 2; PAD-Net-style 0.8 on "aux/*":
    1·1 + 2·3 + 2·0.8·0.5 + 1·1·2 = 1 + 6 + 0.8 + 2 = 9.8."""
    losses = _losses(semseg=1.0, depth=3.0, aux__depth=0.5, initial__s8__semseg=2.0)
    balancer = FixedWeights({"semseg": 1.0, "depth": 2.0}, aux_weight={"aux": 0.8})
    total, log = balancer(losses)
    assert total.item() == pytest.approx(9.8)
    assert log["loss/total"] == pytest.approx(9.8)
    assert log["loss/aux/depth"] == pytest.approx(0.5) and log["loss/initial/s8/semseg"] == 2.0
    assert all(isinstance(v, float) for v in log.values())
    total.backward()
    # d total / d L_key = task weight × multiplier
    assert losses["aux/depth"].grad.item() == pytest.approx(1.6)
    assert losses["initial/s8/semseg"].grad.item() == pytest.approx(1.0)


def test_fixed_weights_errors_name_the_culprit():
    balancer = FixedWeights({"semseg": 1.0})
    with pytest.raises(ConfigError, match="'depth'.*'initial/s8/depth'"):
        balancer(_losses(semseg=1.0, initial__s8__depth=1.0))
    with pytest.raises(ShapeError, match="'semseg'.*scalar"):
        balancer({"semseg": torch.ones(2)})
    with pytest.raises(ConfigError, match="empty"):
        balancer({})


def test_uncertainty_value_at_init_by_hand():
    """TRL eq. (7), δ = 0.5 for both tasks; depth has two scales:
    total = e^{−0.5}(2 + 1) + 0.5 + e^{−0.5}·4 + 0.5 = 7e^{−0.5} + 1.
    ∂/∂δ_depth = −3e^{−0.5} + 1, ∂/∂δ_semseg = −4e^{−0.5} + 1, ∂/∂L_depth = e^{−0.5}."""
    balancer = UncertaintyWeights(["depth", "semseg"])
    losses = _losses(depth=2.0, initial__s8__depth=1.0, semseg=4.0)
    total, log = balancer(losses)
    assert total.item() == pytest.approx(7 * math.exp(-0.5) + 1, rel=1e-6)
    total.backward()
    grads = {t: p.grad.item() for t, p in balancer.log_vars.items()}
    assert grads["depth"] == pytest.approx(1 - 3 * math.exp(-0.5), rel=1e-6)
    assert grads["semseg"] == pytest.approx(1 - 4 * math.exp(-0.5), rel=1e-6)
    assert losses["initial/s8/depth"].grad.item() == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert log["delta/depth"] == pytest.approx(0.5) and log["weight/semseg"] == pytest.approx(math.exp(-0.5))


def test_uncertainty_gradient_vanishes_at_optimum():
    """At δ_t = log S_t: ∂/∂δ (e^{−δ}S + δ) = −S/S + 1 = 0, and total = Σ (1 + log S_t)."""
    balancer = UncertaintyWeights(["depth", "semseg"])
    with torch.no_grad():
        balancer.log_vars["depth"].fill_(math.log(3.0))
        balancer.log_vars["semseg"].fill_(math.log(4.0))
    total, _ = balancer(_losses(depth=2.0, initial__s8__depth=1.0, semseg=4.0))
    total.backward()
    assert total.item() == pytest.approx(2 + math.log(12.0), rel=1e-6)
    for parameter in balancer.log_vars.values():
        assert parameter.grad.item() == pytest.approx(0.0, abs=1e-6)


def test_uncertainty_kendall_kinds_have_their_own_optimum():
    """Kendall et al.: regression ½e^{−δ}S + ½δ → optimum δ = log S;
    classification e^{−δ}S + ½δ → optimum δ = log 2S. With S = 3 both gradients vanish there."""
    balancer = UncertaintyWeights(["depth", "semseg"], {"depth": "regression", "semseg": "classification"})
    with torch.no_grad():
        balancer.log_vars["depth"].fill_(math.log(3.0))
        balancer.log_vars["semseg"].fill_(math.log(6.0))
    total, _ = balancer(_losses(depth=3.0, semseg=3.0))
    total.backward()
    assert total.item() == pytest.approx(0.5 + 0.5 * math.log(3.0) + 0.5 + 0.5 * math.log(6.0), rel=1e-6)
    for parameter in balancer.log_vars.values():
        assert parameter.grad.item() == pytest.approx(0.0, abs=1e-6)


def test_uncertainty_absent_task_gets_no_gradient_and_unknown_task_errors():
    balancer = UncertaintyWeights(["depth", "semseg"], init=0.0)
    total, _ = balancer(_losses(depth=2.0))
    assert total.item() == pytest.approx(2.0)  # e^0·2 + 0; semseg's δ is left out entirely
    total.backward()
    assert balancer.log_vars["semseg"].grad is None
    with pytest.raises(ConfigError, match="'normals'.*'aux/normals'"):
        balancer(_losses(aux__normals=1.0))


def test_uncertainty_config_errors_and_state_dict():
    with pytest.raises(KeyError, match="poisson"):
        UncertaintyWeights(["depth"], {"depth": "poisson"})
    with pytest.raises(ConfigError, match="normals"):
        UncertaintyWeights(["depth"], {"normals": "regression"})
    with pytest.raises(ConfigError, match="empty"):
        UncertaintyWeights([])
    state = UncertaintyWeights(["depth", "semseg"]).state_dict()
    assert sorted(state) == ["log_vars.depth", "log_vars.semseg"]
    assert state["log_vars.depth"].item() == pytest.approx(0.5)


def test_build_balancer():
    assert {"fixed", "uncertainty"} <= set(BALANCERS)
    fixed = build_balancer("fixed", weights={"semseg": 2.0})
    assert fixed(_losses(semseg=1.5))[0].item() == pytest.approx(3.0)
    learned = build_balancer("uncertainty", tasks=["depth"], init=0.0)
    assert isinstance(learned, UncertaintyWeights) and len(list(learned.parameters())) == 1
    with pytest.raises(UnknownNameError, match="grad-norm.*fixed, gradnorm"):
        build_balancer("grad-norm")
    with pytest.raises(ConfigError, match="bad arguments"):
        build_balancer("fixed", tasks=["x"])
