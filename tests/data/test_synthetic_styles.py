"""Rendering styles of the synthetic benchmark (an embedded domain shift) and the writer's determinism."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from mtdense.cli.main import main
from mtdense.data.synthetic import FAMILIES, VAL_INDEX_OFFSET, make_scene, render_sample, write_synthetic_dataset
from mtdense.data.synthetic.styles import STYLES, get_style
from mtdense.errors import ConfigError, DataError

FAMS = ("indoor", "street")
GROUND = {"indoor": "floor", "street": "road"}  # the horizontal plane y = 0 of each family

# sha256 of render_sample(family, 3, i, (48, 64)) for i in (0, 1, VAL_INDEX_OFFSET), every array (key, dtype,
# shape, bytes), computed with the generator as it was before styles existed (GENERATOR_VERSION "1")
STYLE_A_SHA256 = {
    "indoor": "497686ec28423c214ecf1c76566ff77a6c1b8956f3ce6c425afbd4dfe5d6add9",
    "street": "e0bcb80e4e9d2e41251cb2b73975cb053afcdec2ba3635d0cdde29f48002b329",
}


def _digest(family: str, **kw) -> str:
    h = hashlib.sha256()
    for i in (0, 1, VAL_INDEX_OFFSET):
        s = render_sample(family, 3, i, (48, 64), **kw)
        for k in sorted(s):
            h.update(k.encode())
            h.update(str(s[k].dtype).encode())
            h.update(repr(s[k].shape).encode())
            h.update(s[k].tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("fam", FAMS)
def test_style_a_renders_exactly_as_before_styles(fam):
    assert _digest(fam) == STYLE_A_SHA256[fam]
    assert _digest(fam, style="a") == STYLE_A_SHA256[fam]
    assert _digest(fam, style="b") != STYLE_A_SHA256[fam]


def _tree_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_writer_same_seed_same_bytes(tmp_path, style):
    """Two writes of the same (family, seed, style) give byte-identical folders (images, labels, arrays, meta.json);
    another seed gives other images."""
    kw = dict(train=2, val=1, size=(24, 32), family="street", style=style, progress=False)
    a = write_synthetic_dataset(tmp_path / "a", seed=5, workers=1, **kw)
    b = write_synthetic_dataset(tmp_path / "b", seed=5, workers=2, **kw)
    c = write_synthetic_dataset(tmp_path / "c", seed=6, workers=1, **kw)
    files_a = _tree_bytes(a)
    assert len(files_a) == 3 * 5 + 2 + 1
    assert files_a == _tree_bytes(b)
    assert files_a["images/train_000000.png"] != _tree_bytes(c)["images/train_000000.png"]
    meta = json.loads(files_a["meta.json"])
    assert meta["style"] == style
    assert meta["hfov_deg"] == STYLES[style].hfov_deg["street"]
    assert meta["camera_height_range_m"] == list(STYLES[style].camera_height["street"])
    fx, fy, cx, cy = FAMILIES["street"].intrinsics((24, 32), style)
    assert meta["intrinsics"] == pytest.approx({"fx": fx, "fy": fy, "cx": cx, "cy": cy})


def _camera_height(s: dict, ground: int) -> float:
    """Distance from the camera centre to the ground plane, from the ground truth alone: a ground pixel back-projects
    to P = Z·((u − cx)/fx, (v − cy)/fy, 1) and the plane through P with unit normal n is at distance |n · P|."""
    fx, fy, cx, cy = s["intrinsics"]
    h, w = s["depth"].shape
    v, u = np.mgrid[:h, :w]
    p = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones((h, w))], -1) * s["depth"][..., None]
    mask = s["semseg"] == ground
    assert mask.sum() > 20
    dist = np.abs((p * s["normals"]).sum(-1))[mask]
    assert dist.max() - dist.min() < 1e-2 * dist.mean()  # one plane
    return float(np.median(dist))


@pytest.mark.parametrize("fam", FAMS)
def test_camera_height_and_field_of_view_as_declared(fam):
    """Each style's declared camera: the height recovered from depth + normals of the ground lies in the style's
    range, the intrinsics are those of its field of view, fx = (W/2) / tan(hfov/2), and b's camera differs from a's."""
    ground = FAMILIES[fam].class_names.index(GROUND[fam])
    a, b = STYLES["a"], STYLES["b"]
    assert a.camera(fam) != b.camera(fam)
    lo_a, hi_a = a.camera_height[fam]
    lo_b, hi_b = b.camera_height[fam]
    assert hi_a < lo_b or hi_b < lo_a  # disjoint ranges: every image tells the styles apart
    for style in (a, b):
        lo, hi = style.camera_height[fam]
        for i in range(3):
            s = render_sample(fam, 0, i, (48, 64), style=style.name)
            assert lo - 1e-3 <= _camera_height(s, ground) <= hi + 1e-3
            assert make_scene(fam, 0, i, style.name).camera_position[1] == pytest.approx(
                _camera_height(s, ground), rel=1e-3
            )
            fx = 32 / math.tan(math.radians(style.hfov_deg[fam]) / 2)
            np.testing.assert_allclose(s["intrinsics"], [fx, fx, 31.5, 23.5])


def _noise_level(image: np.ndarray) -> float:
    """Median |Laplacian| of the grey image: sensor noise dominates it on the (mostly smooth) surfaces."""
    x = image.astype(float).mean(-1)
    lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return float(np.median(np.abs(lap)))


@pytest.mark.parametrize("fam", FAMS)
def test_style_b_changes_image_statistics_but_labels_stay_valid(fam):
    """Style b declares a noisier sensor and a warm tint: its images are noisier (median |Laplacian| > 1.5×), and on
    the street redder (mean R / mean B). Its labels satisfy the ground-truth contract of every style: classes of the
    family, depth > 0 except sky (depth 0, zero normals), unit normals facing the camera, edges on instance borders."""
    samples = {st: [render_sample(fam, 0, i, (48, 64), style=st) for i in range(6)] for st in ("a", "b")}
    noise = {st: np.mean([_noise_level(s["image"]) for s in ss]) for st, ss in samples.items()}
    assert noise["b"] > 1.5 * noise["a"]
    if fam == "street":
        red_blue = {
            st: np.mean([s["image"][..., 0].mean() / s["image"][..., 2].mean() for s in ss])
            for st, ss in samples.items()
        }
        assert red_blue["b"] > red_blue["a"] + 0.1

    fam_ = FAMILIES[fam]
    for s in samples["b"]:
        assert s["semseg"].max() < fam_.num_classes
        sky = (
            s["semseg"] == fam_.class_names.index("sky")
            if "sky" in fam_.class_names
            else np.zeros_like(s["depth"], bool)
        )
        assert (s["depth"][sky] == 0).all() and (s["normals"][sky] == 0).all()
        assert np.isfinite(s["depth"]).all() and (s["depth"][~sky] > 0).all()
        np.testing.assert_allclose(np.linalg.norm(s["normals"][~sky], axis=-1), 1.0, atol=1e-4)
        fx, fy, cx, cy = s["intrinsics"]
        v, u = np.mgrid[:48, :64]
        ray = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones((48, 64))], -1)
        assert ((s["normals"] * ray).sum(-1)[~sky] < 0).all()
        inst = s["instance"]
        border = np.zeros(inst.shape, bool)
        border[:, 1:] |= inst[:, 1:] != inst[:, :-1]
        border[:, :-1] |= inst[:, 1:] != inst[:, :-1]
        border[1:] |= inst[1:] != inst[:-1]
        border[:-1] |= inst[1:] != inst[:-1]
        assert s["edge"].any() and not (s["edge"].astype(bool) & ~border).any()


def test_styles_draw_independent_scenes():
    """Style b appends its code to the seed: its scene layouts are not style a's (unpaired domains)."""
    a = make_scene("street", 0, 0, "a")
    b = make_scene("street", 0, 0, "b")
    assert len(a.primitives) != len(b.primitives) or a.camera_position[0] != b.camera_position[0]
    # every random stream (scene, sensor noise) of every style has its own seed sequence
    from mtdense.data.synthetic.families import _entropy

    fam = FAMILIES["street"]
    streams = [tuple(_entropy(fam, st, 0, 0, *extra)) for st in STYLES.values() for extra in ((), (1,))]
    assert len(set(streams)) == len(streams)


def test_unknown_style_is_a_named_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"unknown synthetic style 'c'; expected one of \['a', 'b'\]"):
        get_style("c")
    with pytest.raises(ConfigError, match="unknown synthetic style"):
        render_sample("street", 0, 0, (24, 32), style="c")
    with pytest.raises(ConfigError, match="unknown synthetic style"):
        write_synthetic_dataset(tmp_path / "w", train=1, val=0, style="c", progress=False, workers=1)
    assert not (tmp_path / "w").exists()  # refused before touching the disk
    rc = main(["data", "synth", str(tmp_path / "x"), "--train", "1", "--val", "0", "--style", "c"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "'a', 'b'" in err
    from mtdense.config.load import validate_config

    with pytest.raises(ConfigError, match=r"data\.synth\.style.*unknown synthetic style 'c'"):
        validate_config({"data": {"synth": {"style": "c"}}}, source="test")


def test_cli_writes_the_style_and_the_engine_never_reuses_another(tmp_path, capsys):
    """`mtdense data synth --style b` records the style in meta.json; a config asking for style a at that root is
    refused with the difference named, one asking for style b reuses it; a meta.json from before styles is style a."""
    from mtdense.config import load_config
    from mtdense.engine.data import prepare_dataset_root

    root = tmp_path / "street_b"
    argv = ["data", "synth", str(root), "--train", "2", "--val", "1", "--size", "24x32", "--family", "street"]
    assert main([*argv, "--style", "b", "--workers", "1"]) == 0
    meta = json.loads((root / "meta.json").read_text())
    assert meta["style"] == "b" and meta["family"] == "street"
    stamp = (root / "images" / "train_000000.png").stat().st_mtime_ns

    def cfg(style: str):
        synth = f"{{family: street, style: {style}, train: 2, val: 1, size: [24, 32], seed: 0}}"
        return load_config("demo", [f"data.root={root}", f"data.synth={synth}"])

    with pytest.raises(DataError, match=r"style: on disk 'b', configured 'a'"):
        prepare_dataset_root(cfg("a"), progress=False)
    assert prepare_dataset_root(cfg("b"), progress=False) == root
    assert (root / "images" / "train_000000.png").stat().st_mtime_ns == stamp  # reused, not re-rendered

    del meta["style"]  # a folder written before styles existed
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"style: on disk 'a', configured 'b'"):
        prepare_dataset_root(cfg("b"), progress=False)


def test_engine_refuses_a_folder_with_other_split_sizes(tmp_path):
    """A folder rendered with 1 val image is not silently used by a config asking for 3 (a protocol scored on more
    validation images would otherwise be scored on the folder's few): the error names the split and both counts."""
    from mtdense.config import load_config
    from mtdense.engine.data import prepare_dataset_root

    root = tmp_path / "indoor"
    assert main(["data", "synth", str(root), "--train", "2", "--val", "1", "--size", "24x32", "--workers", "1"]) == 0

    def cfg(train: int, val: int):
        synth = f"{{family: indoor, train: {train}, val: {val}, size: [24, 32], seed: 0}}"
        return load_config("demo", [f"data.root={root}", f"data.synth={synth}"])

    with pytest.raises(DataError, match=r"val: on disk 1, configured 3"):
        prepare_dataset_root(cfg(2, 3), progress=False)
    with pytest.raises(DataError, match=r"train: on disk 2, configured 5"):
        prepare_dataset_root(cfg(5, 1), progress=False)
    assert prepare_dataset_root(cfg(2, 1), progress=False) == root
