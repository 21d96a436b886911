"""Every config shipped under configs/ validates against the current schema and model registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtdense.config import load_config

CONFIGS = sorted(
    p for p in (Path(__file__).parents[2] / "src" / "mtdense" / "configs").rglob("*.yaml") if not p.name.startswith("_")
)


def test_configs_exist():
    names = {p.relative_to(p.parents[1]).as_posix() for p in CONFIGS}
    for required in (
        "nyud/stl_semseg_hrnet18s.yaml",
        "nyud/stl_depth_hrnet18s.yaml",
        "nyud/mtl_hrnet18s.yaml",
        "nyud/padnet_hrnet18s.yaml",
        "nyud/padnet_hrnet18s_aux.yaml",
        "nyud/mtinet_hrnet18s.yaml",
        "nyud/mtinet_hrnet18s_aux.yaml",
        "nyud/mtinet_hrnet18s_nofpm.yaml",
    ):
        assert required in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.model.name and cfg.data.tasks
