"""Shared set-up of the model tests: the tiny case each registered architecture is tested with.

``tests/models/test_all_models.py`` runs the generic checks on every registered model x every
backbone of its :class:`TinyCase`. A new architecture needs no entry when its defaults are small and it
supports :data:`DEFAULT_BACKBONES` with two main tasks and one auxiliary task; otherwise add one line
to :data:`TINY_CASES`, e.g.::

    "padnet": TinyCase(overrides={"channels": 32}),
    "mtinet": TinyCase(backbones=("hrnet_w18_small_v2", "fpn_resnet18")),
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from mtdense.models import build_model, list_models, model_config_class

#: Backbones every model is tested on unless its case says otherwise (the smallest of each family).
DEFAULT_BACKBONES: tuple[str, ...] = ("resnet18", "hrnet_w18_small_v2", "fpn_resnet18")


@dataclass(frozen=True)
class TinyCase:
    """How to build a small instance of one architecture for the generic tests.

    Attributes:
        overrides: keys merged into ``{"name": <model>, "backbone": {"name": <backbone>}}``.
        heads: main task -> output channels.
        aux_heads: auxiliary task -> output channels.
        backbones: backbones to test on.
        unsupported: backbones on which building must raise :class:`mtdense.errors.ConfigError`.
    """

    overrides: Mapping[str, Any] = field(default_factory=dict)
    heads: Mapping[str, int] = field(default_factory=lambda: {"semseg": 5, "depth": 1})
    aux_heads: Mapping[str, int] = field(default_factory=lambda: {"normals": 3})
    backbones: tuple[str, ...] = DEFAULT_BACKBONES
    unsupported: tuple[str, ...] = ()


#: model name -> its tiny case; models not listed use ``TinyCase()``.
TINY_CASES: dict[str, TinyCase] = {
    "stl": TinyCase(heads={"depth": 1}, aux_heads={}),
    "mtl": TinyCase(),
    # one network copy per task: two tasks (one main, one auxiliary) and the light fused head keep it small
    "cross_stitch": TinyCase(
        overrides={"head": "hrnet"},
        heads={"depth": 1},
        backbones=("resnet18", "hrnet_w18_small_v2"),
        unsupported=("fpn_resnet18",),
    ),
    # narrow distillation features keep the paper setting's deconvolutional decoders fast
    "padnet": TinyCase(overrides={"channels": 16, "agg_channels": 8}),
    # three decoders (semseg, depth, aux normals) with the PSD layer at every scale, 16 channels wide
    "psd": TinyCase(overrides={"channels": 16, "steps": 3}),
    # TRL is a dual-task network (no auxiliary tasks); a 16-channel coarsest decoder scale keeps its 8 TAMs cheap
    "trl": TinyCase(overrides={"width": 16, "task_order": ["depth", "semseg"]}, aux_heads={}),
    # one 3-ways decoder per task (main and auxiliary) with an mTEB at scale 1; 8 channels everywhere
    "threeways": TinyCase(overrides={"decoder_channels": [8, 8, 8, 8, 8], "aspp_channels": 8}),
}


def tiny_case(model: str) -> TinyCase:
    """The case of ``model`` (``TinyCase()`` when it has no entry)."""
    return TINY_CASES.get(model, TinyCase())


def tiny_config(model: str, backbone: str) -> Any:
    """The validated config of ``model`` on ``backbone`` with the case's overrides."""
    raw = {"name": model, "backbone": {"name": backbone}, **tiny_case(model).overrides}
    return model_config_class(model).model_validate(raw)


def build_tiny(model: str, backbone: str, *, seed: int = 0) -> nn.Module:
    """The tiny ``model`` on ``backbone``, parameters drawn after ``torch.manual_seed(seed)``."""
    case = tiny_case(model)
    torch.manual_seed(seed)
    return build_model(tiny_config(model, backbone), heads=dict(case.heads), aux_heads=dict(case.aux_heads))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``model_backbone`` over every supported (registered model, backbone) pair and
    ``unsupported_model_backbone`` over the pairs whose build must fail."""
    if "model_backbone" in metafunc.fixturenames:
        pairs = [(m, b) for m in list_models() for b in tiny_case(m).backbones]
        metafunc.parametrize("model_backbone", pairs, ids=[f"{m}-{b}" for m, b in pairs])
    if "unsupported_model_backbone" in metafunc.fixturenames:
        pairs = [(m, b) for m in list_models() for b in tiny_case(m).unsupported]
        metafunc.parametrize("unsupported_model_backbone", pairs, ids=[f"{m}-{b}" for m, b in pairs])


@pytest.fixture
def tiny() -> Callable[..., nn.Module]:
    """``tiny(model, backbone, seed=0)``: see :func:`build_tiny`."""
    return build_tiny


@pytest.fixture
def case() -> Callable[[str], TinyCase]:
    """``case(model)``: the model's :class:`TinyCase`."""
    return tiny_case


@pytest.fixture
def rand_image() -> Callable[..., torch.Tensor]:
    """``rand_image(batch, height, width, seed=0)``: RGB in [0, 1], ``(batch, 3, height, width)``."""

    def make(batch: int, height: int, width: int, *, seed: int = 0) -> torch.Tensor:
        return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))

    return make
