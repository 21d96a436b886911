"""``mtdense bench`` renders every synthetic dataset its runs open before starting parallel jobs."""

from __future__ import annotations

from pathlib import Path

from mtdense.config.load import apply_overrides, config_to_dict, read_yaml, resolve_config, validate_config
from mtdense.engine.bench import prepare_data
from mtdense.engine.bench.suite import load_suite


def test_prepare_data_renders_the_evaluation_domain_and_the_uda_target(tmp_path: Path) -> None:
    """A UDA run opens three datasets (source ``data``, evaluation domain ``data.val_data``, target
    ``uda.target``): all are rendered up front, so that two parallel runs never render one folder at once."""
    small = "{train: 2, val: 2, size: [16, 24], seed: %d, style: %s}"
    raw = apply_overrides(
        read_yaml(resolve_config("synthetic/uda_street_a2b_uda")),
        [
            f"data.root={tmp_path / 'a'}",
            f"data.synth={small % (0, 'a')}",
            f"data.val_data.root={tmp_path / 'b_val'}",
            f"data.val_data.synth={small % (1, 'b')}",
            f"uda.target.root={tmp_path / 'b_train'}",
            f"uda.target.synth={small % (1, 'b')}",
        ],
        source="test",
    )
    prepare_data([config_to_dict(validate_config(raw))])
    for name in ("a", "b_val", "b_train"):
        assert (tmp_path / name / "meta.json").is_file(), name


def test_uda_suite_plans_source_uda_and_oracle_on_the_target_domain(tmp_path: Path) -> None:
    """The packaged ``synthetic-uda`` suite: references and the source/uda rows evaluate on style b; the oracle
    trains on style b (the same folder as the UDA target); every run at the suite's 32x48 protocol."""
    from mtdense.engine.bench.plan import plan_suite

    suite, path = load_suite("synthetic-uda")
    plan = plan_suite(suite, path, out=tmp_path, seeds=[0])
    runs = {r.name: r.config for r in (*plan.references, *plan.methods)}
    assert sorted(runs) == ["oracle", "source", "stl_depth", "stl_semseg", "uda"]
    target = runs["uda"]["uda"]["target"]["root"]
    for name in ("stl_semseg", "stl_depth", "source", "uda"):
        assert runs[name]["data"]["val_data"]["root"] == target, name
        assert runs[name]["data"]["synth"]["style"] == "a", name
    assert runs["oracle"]["data"]["root"] == target and runs["oracle"]["data"]["val_data"] is None
    assert runs["oracle"]["data"]["synth"]["style"] == "b"
    assert {tuple(c["data"]["synth"]["size"]) for c in runs.values()} == {(32, 48)}
