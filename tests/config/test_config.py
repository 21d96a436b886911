"""Typed configs: unknown keys and wrong types name the dotted key and the file; overrides; round trip."""

from __future__ import annotations

import pytest
import yaml

from mtdense.config import apply_overrides, load_config, save_config
from mtdense.config.load import parse_yaml
from mtdense.errors import ConfigError

BASE = {"model": {"name": "mtl", "backbone": {"name": "resnet18"}}, "train": {"max_steps": 10}}


def _write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_scientific_floats_are_floats():
    # PyYAML's YAML 1.1 resolver reads "1e-4" as a string; ours must not.
    assert parse_yaml("lr: 1e-4")["lr"] == pytest.approx(1e-4)
    assert parse_yaml("x: -2.5E3")["x"] == -2500.0
    assert parse_yaml("n: 12")["n"] == 12 and isinstance(parse_yaml("n: 12")["n"], int)


def test_defaults_and_overrides(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path, ["train.lr=1e-3", "data.tasks=[depth, semseg]", "model.backbone.output_stride=8"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.data.tasks == ["depth", "semseg"]
    assert cfg.model.backbone.output_stride == 8
    assert cfg.train.max_steps == 10 and cfg.train.optimizer == "adam"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({**BASE, "train": {"lrr": 1.0}}, "train.lrr: unknown key"),
        ({**BASE, "train": {"max_steps": "10"}}, "train.max_steps"),
        ({**BASE, "train": {"max_steps": 2.5}}, "train.max_steps"),
        ({**BASE, "train": {"bf16": "yes"}}, "train.bf16"),
        ({**BASE, "data": {"tasks": ["depth", "flow"]}}, "data.tasks"),
        ({**BASE, "data": {"tasks": ["depth"], "aux_tasks": ["depth"]}}, "data.aux_tasks"),
        (
            {**BASE, "model": {"name": "mtl", "backbone": {"name": "resnet18", "depth": 3}}},
            "model.backbone.depth",
        ),
        ({"model": {"backbone": {"name": "resnet18"}}}, "model.name"),
        ({**BASE, "optimizer": "adam"}, "optimizer: unknown key"),
    ],
)
def test_errors_name_file_and_dotted_key(tmp_path, data, fragment):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert fragment in str(e.value) and str(path) in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides({"train": 3}, ["train.lr=1"])


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_config(path)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(_write(tmp_path, BASE), ["train.lr=3e-4"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again.model_dump() == cfg.model_dump() and again.model.model_dump() == cfg.model.model_dump()


def test_base_files_merge_and_report_their_own_errors(tmp_path):
    _write(tmp_path, {**BASE, "train": {"max_steps": 10, "lr": 0.5}}, "recipe.yaml")
    child = _write(tmp_path, {"_base_": "recipe.yaml", "train": {"lr": 0.25}}, "child.yaml")
    cfg = load_config(child)
    assert cfg.train.lr == 0.25 and cfg.train.max_steps == 10 and cfg.model.name == "mtl"
    loop = _write(tmp_path, {"_base_": "loop.yaml"}, "loop.yaml")
    with pytest.raises(ConfigError, match="loops"):
        load_config(loop)
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(_write(tmp_path, {"_base_": "missing.yaml"}, "orphan.yaml"))


def test_packaged_names_resolve_inside_the_package(tmp_path, monkeypatch):
    """A CONFIG argument is a path or a packaged name; ``_base_`` resolves next to the packaged file; an
    existing local file of the same name wins; an unknown name suggests close packaged names."""
    from mtdense.config import list_configs, resolve_config
    from mtdense.config.load import PACKAGED_CONFIGS

    monkeypatch.chdir(tmp_path)  # nothing of the repository around
    for name in ("synthetic/mtinet_hrnet18s", "synthetic/mtinet_hrnet18s.yaml", "configs/synthetic/mtinet_hrnet18s"):
        assert resolve_config(name) == PACKAGED_CONFIGS / "synthetic" / "mtinet_hrnet18s.yaml"
    cfg = load_config("synthetic/mtinet_hrnet18s")  # its _base_ chain (synthetic → nyud recipe) is packaged too
    assert cfg.model.name == "mtinet" and cfg.data.root == "data/synth_indoor_72x96"
    assert load_config("demo").model.name == "mtinet"
    (tmp_path / "synthetic").mkdir()
    _write(tmp_path, BASE, "synthetic/mtinet_hrnet18s.yaml")
    assert load_config("synthetic/mtinet_hrnet18s.yaml").model.name == "mtl"  # the local file wins
    with pytest.raises(ConfigError, match=r"neither a file nor a packaged config name; did you mean .*mtinet_hrnet18s"):
        load_config("synthetic/mtinet_hrnet18")
    listed = dict(list_configs())
    assert "synthetic/mtinet_hrnet18s" in listed and "nyud/padnet_paper_resnet50" in listed
    assert not any(name.rsplit("/", 1)[-1].startswith("_") for name in listed)  # shared recipes are not configs
    first = (PACKAGED_CONFIGS / "demo.yaml").read_text().splitlines()[0].lstrip("# ").strip()
    assert listed["demo"] == first


def test_non_utf8_config_names_file_and_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: {name: mtl}\n# d\xe9mo\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 0xe9 at offset 22\)"):
        load_config(path)
