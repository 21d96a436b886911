"""Shared fixtures of the backbone tests: one built instance per registered backbone per session."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from mtdense.backbones import Backbone, build_backbone


@pytest.fixture(scope="session")
def cached_backbone() -> Callable[[str], Backbone]:
    """``cached_backbone(name)``: a session-wide instance in eval mode (tests must not modify it)."""
    cache: dict[str, Backbone] = {}

    def get(name: str) -> Backbone:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = build_backbone(name).eval()
        return cache[name]

    return get
