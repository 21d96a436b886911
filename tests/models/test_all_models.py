"""Contract tests run on every registered model x backbone (timm-style).

The pairs and the tiny configs come from ``conftest.py`` (``TINY_CASES``); a newly registered model is
picked up automatically. Checks: the output-key contract and shapes at even and odd input sizes, a
backward pass reaching every parameter without NaN, a state-dict round trip through a checkpoint
file, channels-last invariance, strict configs.
"""

from __future__ import annotations

import io

import pydantic
import pytest
import torch

from mtdense.errors import ConfigError
from mtdense.losses import task_of
from mtdense.models import model_config_class


@pytest.mark.parametrize("size", [(64, 64), (65, 49)], ids=["64x64", "65x49"])
def test_output_contract(model_backbone, tiny, case, rand_image, size) -> None:
    """Main tasks keyed by name at exactly the input size; every other key is ``"<tag>/<task>"`` with a
    task of ``heads`` or ``aux_heads`` and that task's channel count; every auxiliary task is supervised."""
    name, backbone = model_backbone
    c = case(name)
    model = tiny(name, backbone).eval()
    h, w = size
    with torch.no_grad():
        out = model(rand_image(1, h, w))

    plain = {k for k in out if "/" not in k}
    assert plain == set(c.heads), f"final outputs {sorted(plain)} != main tasks {sorted(c.heads)}"
    for task, channels in c.heads.items():
        assert out[task].shape == (1, channels, h, w), (task, tuple(out[task].shape))
    all_heads = {**c.heads, **c.aux_heads}
    for key, t in out.items():
        task = task_of(key)
        assert task in all_heads, f"output {key!r}: task {task!r} is neither a main nor an auxiliary task"
        assert t.ndim == 4 and t.shape[:2] == (1, all_heads[task]), (key, tuple(t.shape))
        assert torch.isfinite(t).all(), key
    supervised = {task_of(k) for k in out}
    assert set(c.aux_heads) <= supervised, f"auxiliary tasks without an output: {set(c.aux_heads) - supervised}"


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


def test_state_dict_round_trip(model_backbone, tiny, rand_image) -> None:
    """A model saved to a checkpoint (after a train step moved the BN statistics) and loaded into a
    differently initialised instance gives identical eval outputs; before loading they differ."""
    name, backbone = model_backbone
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


def test_channels_last_gives_same_output(model_backbone, tiny, rand_image) -> None:
    """A channels-last model on a channels-last image matches the contiguous one.

    The tolerance is 1e-5 relative to the output's largest magnitude (at least 1): in eval mode a
    freshly initialised HRNet's BN layers are identities (running mean 0, variance 1), so its residual
    sums grow to outputs of ~1e3, where float32 reassociation alone differs by ~1e-4."""
    name, backbone = model_backbone
    model = tiny(name, backbone).eval()
    x = rand_image(1, 65, 49)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    for k in expected:
        scale = max(1.0, expected[k].abs().max().item())
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-5 * scale)


def test_param_groups_partition_parameters(model_backbone, tiny) -> None:
    """Every parameter is in exactly one of the ``backbone``/``new`` groups, and both are non-empty."""
    name, backbone = model_backbone
    model = tiny(name, backbone)
    groups = model.param_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert groups["backbone"] and groups["new"]


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
