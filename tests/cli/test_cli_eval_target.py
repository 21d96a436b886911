"""``mtdense eval RUN`` scores a run on the data its trainer evaluated on: a run with ``data.val_data`` (a model
trained on a source domain, scored on a target domain, DenseMTL's Table 6) is evaluated on that dataset by
default; ``--data-root`` replaces that folder; ``mtdense bench``'s re-evaluation of a finished run does the same."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from mtdense.cli.main import main


@pytest.fixture(scope="module")
def target_root(tmp_path_factory):
    """A second synthetic root: the tiny source's family (indoor) in style b, other scenes (seed 5)."""
    from mtdense.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("target") / "indoor_b"
    write_synthetic_dataset(
        root, train=4, val=4, size=(32, 48), seed=5, family="indoor", style="b", progress=False, workers=1
    )
    return root


@pytest.fixture(scope="module")
def target_run(tiny_raw_config, target_root, tmp_path_factory):
    """A tiny source-only run (trained on the tiny synthetic root) whose ``data.val_data`` is ``target_root``."""
    folder = tmp_path_factory.mktemp("eval_target")
    raw = tiny_raw_config(
        **{
            "data.tasks": ["semseg", "depth"],
            "data.val_data": {"root": str(target_root)},
            "train.max_steps": 2,
            "train.threads": 1,
        }
    )
    cfg = folder / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = folder / "run"
    assert main(["train", str(cfg), "--out", str(run)]) == 0
    return run


def _metrics(results: dict) -> dict:
    return {t: v for t, v in results.items() if t in ("semseg", "depth")}


def test_eval_scores_the_run_on_its_val_data(target_run, synth_root, tmp_path, capsys):
    trained = _metrics(json.loads((target_run / "results.json").read_text()))
    assert set(trained) == {"semseg", "depth"}
    capsys.readouterr()
    assert main(["eval", str(target_run), "--device", "cpu"]) == 0
    assert f"wrote {target_run / 'eval' / 'val.json'}" in capsys.readouterr().out
    on_target = _metrics(json.loads((target_run / "eval" / "val.json").read_text()))
    for task, metrics in trained.items():  # the trainer's final evaluation on the target domain, reproduced
        assert on_target[task] == pytest.approx(metrics, rel=1e-5, abs=1e-6), task

    # --data-root replaces the folder of the data read: the source's own val split gives other numbers
    out = tmp_path / "source.json"
    assert main(["eval", str(target_run), "--device", "cpu", "--data-root", str(synth_root), "--out", str(out)]) == 0
    on_source = _metrics(json.loads(out.read_text()))
    assert on_source["depth"]["rmse"] != pytest.approx(on_target["depth"]["rmse"], rel=1e-3)


def test_eval_refuses_val_data_with_other_classes(target_run, tmp_path, capsys):
    """A val_data folder whose classes differ from the training set's is a named error (exit 2), nothing written."""
    from mtdense.data.synthetic import write_synthetic_dataset

    street = tmp_path / "street"
    write_synthetic_dataset(street, train=2, val=2, size=(32, 48), seed=1, family="street", progress=False, workers=1)
    capsys.readouterr()
    assert (
        main(
            ["eval", str(target_run), "--device", "cpu", "--data-root", str(street), "--out", str(tmp_path / "x.json")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: data.val_data") and "label space" in err and not (tmp_path / "x.json").exists()


def test_bench_reevaluation_uses_val_data(target_run, tmp_path):
    """``mtdense bench`` evaluates a run killed after its last checkpoint but before ``results.json`` with
    :func:`~mtdense.engine.evaluation.evaluate_run`: the result is the trainer's, on the target domain."""
    from mtdense.config import load_config
    from mtdense.config.load import config_to_dict
    from mtdense.engine.bench.plan import RunSpec
    from mtdense.engine.bench.runner import _evaluate_finished

    run = tmp_path / "run"
    shutil.copytree(target_run, run, ignore=shutil.ignore_patterns("eval"))
    trained = _metrics(json.loads((run / "results.json").read_text()))
    (run / "results.json").unlink()
    config = config_to_dict(load_config(run / "config.yaml"))
    failed: list[str] = []
    _evaluate_finished(RunSpec("mtl", "method", 0, config, run, "test"), failed)
    assert failed == []
    again = _metrics(json.loads((run / "results.json").read_text()))
    for task, metrics in trained.items():
        assert again[task] == pytest.approx(metrics, rel=1e-5, abs=1e-6), task


def _vkitti2_root(root, *, frames: int = 5, hw: tuple[int, int] = (32, 64)):
    """Virtual KITTI 2 in its release layout (module docs of mtdense.data.vkitti2): road below, sky above,
    a car in the middle; depth 12.34 m (1234 cm), the sky "far" (65535)."""
    import numpy as np
    from PIL import Image

    h, w = hw
    base = root / "Scene01" / "clone" / "frames"
    for kind in ("rgb", "depth", "classSegmentation"):
        (base / kind / "Camera_0").mkdir(parents=True)
    cls = np.zeros((h, w, 3), np.uint8)
    cls[: h // 2], cls[h // 2 :], cls[h // 2 :, w // 4 : w // 2] = (90, 200, 255), (100, 60, 100), (255, 127, 80)
    depth = np.full((h, w), 1234, np.uint16)
    depth[: h // 2] = 65535
    for f in range(frames):
        image = np.random.default_rng(f).integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(base / "rgb" / "Camera_0" / f"rgb_{f:05d}.jpg")
        Image.fromarray(cls).save(base / "classSegmentation" / "Camera_0" / f"classgt_{f:05d}.png")
        Image.fromarray(depth).save(base / "depth" / "Camera_0" / f"depth_{f:05d}.png")
    return root


def _cityscapes_root(root, *, hw: tuple[int, int] = (64, 128)):
    """Cityscapes in its download layout (mtdense.data.cityscapes): two train and two val frames; sky (23)
    above, road (7) below, a bus (28) and a truck (27, not one of the 8 classes) on it; disparity 10 px."""
    import numpy as np
    from PIL import Image

    h, w = hw
    ids = np.full((h, w), 7, np.uint8)
    ids[: h // 2], ids[h // 2 :, :10], ids[h // 2 :, 20:30] = 23, 28, 27
    cam = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 100.0, "fy": 100.0, "u0": w / 2, "v0": h / 2}}
    for split in ("train", "val"):
        for kind in ("leftImg8bit", "gtFine", "disparity", "camera"):
            (root / kind / split / "aachen").mkdir(parents=True)
        for k in range(2):
            stem = f"aachen/aachen_{k:06d}_000019"
            image = np.random.default_rng(k).integers(0, 255, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / f"leftImg8bit/{split}/{stem}_leftImg8bit.png")
            Image.fromarray(ids).save(root / f"gtFine/{split}/{stem}_gtFine_labelIds.png")
            Image.fromarray(np.full((h, w), 257 + 256 * 9, np.uint16)).save(
                root / f"disparity/{split}/{stem}_disparity.png"
            )
            (root / f"camera/{split}/{stem}_camera.json").write_text(json.dumps(cam))
    return root


def test_vkitti2_to_cityscapes_config_trains_and_is_evaluated_on_cityscapes(tmp_path, capsys):
    """The shipped ``uda/vkitti22cityscapes_xtam.yaml`` (DenseMTL Table 6, 8 classes) trains through the CLI on
    fixtures of both datasets (model shrunk by overrides): the label spaces agree, and ``mtdense eval RUN`` scores
    it on Cityscapes val as the trainer did."""
    from mtdense.config.load import PACKAGED_CONFIGS

    vk, cs = _vkitti2_root(tmp_path / "vkitti2"), _cityscapes_root(tmp_path / "cityscapes")
    run = tmp_path / "run"
    overrides = [
        f"data.root={vk}",
        f"data.val_data.root={cs}",
        f"uda.target.root={cs}",
        "data.scales=[1.0]",
        "data.crop_size=[32,64]",
        "data.eval_size=[32,64]",
        "model.backbone.name=resnet18",
        "model.decoder_channels=[8,8,8,16,16]",
        "model.aspp_channels=16",
        "uda.disc_channels=8",
        "train.batch_size=2",
        "train.threads=1",
        "eval.batch_size=2",
        "data.num_workers=0",
    ]
    config = str(PACKAGED_CONFIGS / "uda" / "vkitti22cityscapes_xtam.yaml")
    assert main(["train", config, "--out", str(run), "--max-steps", "1", *overrides]) == 0
    trained = _metrics(json.loads((run / "results.json").read_text()))
    capsys.readouterr()
    assert main(["eval", str(run), "--device", "cpu"]) == 0
    again = _metrics(json.loads((run / "eval" / "val.json").read_text()))
    for task, metrics in trained.items():
        assert again[task] == pytest.approx(metrics, rel=1e-5, abs=1e-6), task
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["dataset"] == "vkitti2_8" and cfg["data"]["val_data"]["dataset"] == "cityscapes8"


def test_val_data_eval_size_replaces_the_source_eval_size() -> None:
    """``data.val_data.eval_size`` is the size the target domain is evaluated at (another aspect ratio than the
    source's); without it the source's ``data.eval_size`` applies."""
    from mtdense.config import load_config
    from mtdense.engine.setup import eval_config

    cfg = load_config("uda/vkitti22cityscapes_xtam")
    assert cfg.data.eval_size == [320, 1024]
    assert eval_config(cfg).data.eval_size == [512, 1024]
    assert eval_config(cfg).data.dataset == "cityscapes8"
    plain = load_config("uda/synthia2cityscapes_xtam")
    assert eval_config(plain).data.eval_size == plain.data.eval_size


def test_eval_data_root_may_hold_more_images_than_the_run_was_rendered_with(tiny_raw_config, tmp_path):
    """A run whose config renders its synthetic data (data.synth: 2 val images) is scored with --data-root on a
    folder of the same generator settings with more validation images (the protocol study's 1,000-image
    re-evaluation); training on such a folder is refused, since the config asks for other split sizes."""
    small, big = tmp_path / "small", tmp_path / "big"
    synth = {"family": "indoor", "train": 4, "val": 2, "size": [32, 48], "seed": 0}
    raw = tiny_raw_config(
        **{"data.root": str(small), "data.synth": synth, "data.tasks": ["semseg"], "train.max_steps": 1}
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    argv = ["data", "synth", str(big), "--train", "4", "--val", "5", "--size", "32x48", "--workers", "1"]
    assert main(argv) == 0
    out = tmp_path / "big.json"
    assert main(["eval", str(tmp_path / "run"), "--device", "cpu", "--data-root", str(big), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["semseg"]["mIoU"] >= 0.0
    raw["data"]["root"] = str(big)
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg), "--out", str(tmp_path / "run2")]) == 2  # val: on disk 5, configured 2
