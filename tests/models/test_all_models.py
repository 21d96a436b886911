"""Contract tests run on every registered model x backbone (timm-style).

The pairs and the tiny configs come from ``conftest.py`` (``TINY_CASES``); a newly registered model is
picked up automatically. Checks: the output-key contract and shapes at even and odd input sizes,
channels-last invariance and the parameter groups (one build for the three), a backward pass reaching
every parameter without NaN, a state-dict round trip through a checkpoint file (one backbone per model
by default, every pair under ``-m heavy``), strict configs.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydantic
import pytest
import torch

from mtdense.errors import ConfigError
from mtdense.losses import task_of
from mtdense.models import list_models, model_config_class

#: The backbone each architecture's state-dict round trip runs on in the default suite (the cheapest of its
#: case); the other backbones run under ``-m heavy``.
ROUND_TRIP_BACKBONE: dict[str, str] = {"cross_stitch": "resnet18", "mtinet": "hrnet_w18_small_v2"}


def _check_outputs(out: dict[str, torch.Tensor], c, size: tuple[int, int]) -> None:
    h, w = size
    plain = {k for k in out if "/" not in k}
    assert plain == set(c.heads), f"{h}x{w}: final outputs {sorted(plain)} != main tasks {sorted(c.heads)}"
    for task, channels in c.heads.items():
        assert out[task].shape == (1, channels, h, w), (f"{h}x{w}", task, tuple(out[task].shape))
    all_heads = {**c.heads, **c.aux_heads}
    for key, t in out.items():
        task = task_of(key)
        assert task in all_heads, f"{h}x{w}: output {key!r}: task {task!r} is neither a main nor an auxiliary task"
        assert t.ndim == 4 and t.shape[:2] == (1, all_heads[task]), (f"{h}x{w}", key, tuple(t.shape))
        assert torch.isfinite(t).all(), (f"{h}x{w}", key)
    supervised = {task_of(k) for k in out}
    missing = set(c.aux_heads) - supervised
    assert not missing, f"{h}x{w}: auxiliary tasks without an output: {missing}"


def test_output_contract_channels_last_and_param_groups(model_backbone, tiny, case, rand_image) -> None:
    """The eval-mode contract of one built instance (one build serves the three checks):

    1. outputs at 64x64 and at the odd 65x49: main tasks keyed by name at exactly the input size; every
       other key is ``"<tag>/<task>"`` with a task of ``heads`` or ``aux_heads`` and that task's channel
       count; every auxiliary task is supervised;
    2. channels-last: the channels-last model on a channels-last 65x49 image matches the contiguous one
       within 1e-5 of the output's largest magnitude (at least 1): in eval mode a freshly initialised
       HRNet's BN layers are identities (running mean 0, variance 1), so its residual sums grow to outputs
       of ~1e3, where float32 reassociation alone differs by ~1e-4;
    3. every parameter is in exactly one of the ``backbone``/``new`` groups, and both are non-empty.
    """
    name, backbone = model_backbone
    c = case(name)
    model = tiny(name, backbone).eval()

    groups = model.param_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters())), "param groups overlap or miss parameters"
    assert groups["backbone"] and groups["new"], f"empty param group: { ({k: len(v) for k, v in groups.items()}) }"

    with torch.no_grad():
        _check_outputs(model(rand_image(1, 64, 64)), c, (64, 64))
        x = rand_image(1, 65, 49)
        expected = model(x)
        _check_outputs(expected, c, (65, 49))
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    assert got.keys() == expected.keys(), "channels-last changed the output keys"
    for k in expected:
        scale = max(1.0, expected[k].abs().max().item())
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-5 * scale, msg=lambda m, k=k: f"{k}: {m}")


def test_backward_reaches_every_parameter(model_backbone, tiny, rand_image) -> None:
    """In train mode (batch 2), the sum of all outputs back-propagates to every parameter (its ``.grad``
    is set, i.e. the parameter is in the graph) with finite values.

    A gradient that is set but identically zero is allowed: with tiny widths a unit can be legitimately
    dead at initialisation (e.g. the single hidden ReLU of an SE block over 18 channels)."""
    name, backbone = model_backbone
    model = tiny(name, backbone).train()
    out = model(rand_image(2, 64, 64))
    sum(t.sum() for t in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing[:10]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients at {bad[:10]}"


def _models_conftest(config: pytest.Config):
    """This folder's ``conftest.py`` module (under ``--import-mode=importlib`` it is not importable by name)."""
    here = Path(__file__).with_name("conftest.py").resolve()
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__).resolve() == here:
            return plugin
    raise RuntimeError(f"{here} is not loaded as a conftest plugin")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``round_trip_pair``: every (model, backbone) pair of the tiny cases; all but the model's
    :data:`ROUND_TRIP_BACKBONE` carry the ``heavy`` mark."""
    if "round_trip_pair" not in metafunc.fixturenames:
        return
    cases = _models_conftest(metafunc.config)
    params = []
    for m in list_models():
        backbones = cases.tiny_case(m).backbones
        representative = ROUND_TRIP_BACKBONE.get(m, "resnet18")
        assert representative in backbones, f"{m}: round-trip backbone {representative} not among {backbones}"
        for b in backbones:
            marks = () if b == representative else (pytest.mark.heavy,)
            params.append(pytest.param((m, b), id=f"{m}-{b}", marks=marks))
    metafunc.parametrize("round_trip_pair", params)


def test_state_dict_round_trip(round_trip_pair, tiny, rand_image) -> None:
    """A model saved to a checkpoint (after a train step moved the BN statistics) and loaded into a
    differently initialised instance gives identical eval outputs; before loading they differ.

    The default suite runs it on one backbone per architecture (:data:`ROUND_TRIP_BACKBONE`, else
    ``resnet18``): what a state dict holds beyond the backbone's own (whose round trip every backbone's test
    covers) is the architecture's, and its keys do not depend on the backbone family. The other pairs run
    under ``-m heavy`` (``make test-heavy``)."""
    name, backbone = round_trip_pair
    source = tiny(name, backbone, seed=0).train()
    x = rand_image(2, 64, 48, seed=1)
    with torch.no_grad():
        source(x)  # updates BN running statistics, so buffers matter too
    source.eval()
    target = tiny(name, backbone, seed=1).eval()
    with torch.no_grad():
        expected = source(x)
        before = target(x)
    assert any(not torch.allclose(before[k], expected[k]) for k in expected), "seeds 0 and 1 built the same model"

    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.no_grad():
        after = target(x)
    assert after.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(after[k], expected[k], rtol=0, atol=0)


def test_unsupported_backbone_raises_config_error(unsupported_model_backbone, tiny) -> None:
    name, backbone = unsupported_model_backbone
    with pytest.raises(ConfigError, match="backbone"):
        tiny(name, backbone)


def test_config_is_strict(model_backbone) -> None:
    """An unknown option in the ``model`` section is a validation error naming the key."""
    name, backbone = model_backbone
    cls = model_config_class(name)
    with pytest.raises(pydantic.ValidationError, match="no_such_option"):
        cls.model_validate({"name": name, "backbone": {"name": backbone}, "no_such_option": 1})
