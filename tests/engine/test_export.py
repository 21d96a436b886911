"""Export of every registered architecture (:mod:`mtdense.engine.export`) and the recorded post-processing.

Each architecture is built from its tiny case (``tests/models/conftest.py``, the single source of the tiny
configs, loaded as a plain module so that a newly registered model is exported here too), exported to ONNX at
64x64 and run with ONNX Runtime on the CPU: the outputs equal the eager model's within 1e-4. Where the model
allows it the graph is dynamic (batch, height, width) and is also compared at a second size; where it does not,
the dynamic export is a clear error (``DYNAMIC_UNSUPPORTED`` says why).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtdense.config.load import validate_config
from mtdense.engine.export import (
    POSTPROCESS_SPECS,
    InferenceOutputs,
    apply_postprocess,
    export_loaded,
    onnx_session,
    postprocess_spec,
    read_export_record,
    second_size,
)
from mtdense.engine.inference import LoadedRun
from mtdense.engine.setup import build_model_for, build_tasks
from mtdense.errors import MtdenseError
from mtdense.models import list_models
from mtdense.tasks import TASKS

_TINY_CASES_FILE = Path(__file__).parents[1] / "models" / "conftest.py"
_spec = importlib.util.spec_from_file_location("_models_tiny_cases", _TINY_CASES_FILE)
tiny_cases = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = tiny_cases  # dataclasses resolve their module through sys.modules
_spec.loader.exec_module(tiny_cases)

META = {"num_classes": 5, "class_names": ["wall", "floor", "chair", "table", "lamp"]}
SIZE = (64, 64)

#: architectures whose graph torch.export specialises to the traced height/width, and why
DYNAMIC_UNSUPPORTED: dict[str, str] = {
    "trl": "the task-attentional modules' mask decoders call ConvTranspose2d(output_size=...), whose output padding "
    "PyTorch computes in Python from the sizes; torch.export turns those checks into bounds on the input "
    "(height <= the traced height), so the graph does not run at a larger size",
}


def tiny_run(name: str, **overrides: object) -> LoadedRun:
    """The tiny case of architecture ``name`` (first backbone, plus ``overrides`` of its model options) as a loaded
    run with seeded random weights."""
    case = tiny_cases.tiny_case(name)
    raw = {
        "data": {"root": "unused", "tasks": list(case.heads), "aux_tasks": list(case.aux_heads)},
        "model": {"name": name, "backbone": {"name": case.backbones[0]}, **case.overrides, **overrides},
    }
    cfg = validate_config(raw, source=f"tiny case {name}")
    tasks = build_tasks(cfg, META)
    torch.manual_seed(0)
    model = build_model_for(cfg, tasks).eval()
    return LoadedRun(cfg=cfg, model=model, tasks=tasks, meta=META, source=Path(f"{name}.pt"))


def image(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


#: architectures exported with dynamic batch/height/width in the sweep below (the rest at the traced size): the
#: ONNX conversion of a dynamic graph costs about twice a fixed one, so the suite checks the dynamic path on one
#: cheap model (and ``tests/cli/test_cli_export.py`` through ``predict``). By hand, dynamic export and a second size
#: also matched for stl, cross_stitch, mtinet, padnet and psd.
DYNAMIC_CHECKED = {"mtl"}

#: tiny-case overrides for the export sweep only: PSD's diffusion is unrolled into the graph, step by step, and its
#: conversion time grows with the steps; one step exercises every operator of the layer.
EXPORT_OVERRIDES: dict[str, dict] = {"psd": {"steps": 1}}


@pytest.mark.heavy  # about 5 minutes of one core for the eight architectures: `make test-heavy`
@pytest.mark.parametrize("name", list_models())
def test_onnx_equals_pytorch_for_every_architecture(name, tmp_path):
    run = tiny_run(name, **EXPORT_OVERRIDES.get(name, {}))
    dynamic = name in DYNAMIC_CHECKED and name not in DYNAMIC_UNSUPPORTED
    path = export_loaded(run, fmt="onnx", out=tmp_path / f"{name}.onnx", size=SIZE, dynamic=dynamic)
    session = onnx_session(path)
    tasks = list(run.cfg.data.tasks)
    assert [o.name for o in session.get_outputs()] == tasks  # inference outputs only, named by task
    sizes = [SIZE, second_size(SIZE)] if dynamic else [SIZE]
    for i, size in enumerate(sizes):
        x = image(2 if dynamic else 1, size, seed=10 + i)
        with torch.no_grad():
            ref = run.model(x)
        got = session.run(None, {"image": x.numpy()})
        for task, out in zip(tasks, got, strict=True):
            assert out.shape == tuple(ref[task].shape)
            np.testing.assert_allclose(out, ref[task].numpy(), rtol=0, atol=1e-4, err_msg=f"{name} {task} at {size}")
    record = read_export_record(path)
    assert record["tasks"] == tasks and record["input"]["dynamic"] is dynamic
    if dynamic:  # the accepted range includes both sizes checked
        for axis, label in enumerate(("height", "width")):
            lo, hi = record["input"]["size_range"][label]
            assert lo <= SIZE[axis] and (hi is None or hi >= second_size(SIZE)[axis])


@pytest.mark.parametrize("name", sorted(DYNAMIC_UNSUPPORTED))
def test_dynamic_export_of_a_size_specialised_model_is_a_clear_error(name, tmp_path):
    out = tmp_path / f"{name}.pt2"
    with pytest.raises(MtdenseError, match=rf"'{name}'.*dynamic"):
        export_loaded(tiny_run(name), fmt="exported", out=out, size=SIZE, dynamic=True)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written is left


def test_torch_export_and_torchscript_round_trips_equal_eager(tmp_path):
    import torch.export

    run = tiny_run("mtinet")  # deep supervision in the model's outputs; the exports keep the final ones only
    eager = InferenceOutputs(run.model, list(run.cfg.data.tasks)).eval()
    pt2 = export_loaded(run, fmt="exported", out=tmp_path / "m.pt2", size=SIZE, dynamic=True)
    ts = export_loaded(run, fmt="torchscript", out=tmp_path / "m.ts", size=SIZE)
    x = image(1, SIZE, seed=5)
    with torch.no_grad():
        ref = eager(x)
        assert set(run.model(x)) > set(ref)  # the model itself also returns intermediate outputs
        for got in (torch.export.load(str(pt2)).module()(x), torch.jit.load(str(ts))(x)):
            assert list(got) == list(ref)
            for task in ref:
                torch.testing.assert_close(got[task], ref[task], rtol=0, atol=1e-5)
        x2 = image(3, second_size(SIZE), seed=6)  # the dynamic program at another batch and size
        for task, value in torch.export.load(str(pt2)).module()(x2).items():
            torch.testing.assert_close(value, eager(x2)[task], rtol=0, atol=1e-5)
    for path, fmt in ((pt2, "exported"), (ts, "torchscript")):
        record = read_export_record(path)
        assert record["export_format"] == fmt and record["config"]["model"]["name"] == "mtinet"
        assert record["classes"] == {"semseg": META["class_names"]} and record["meta"] == META


@pytest.mark.parametrize("task_name", sorted(POSTPROCESS_SPECS))
def test_recorded_postprocess_equals_task_postprocess(task_name, tiny_raw_config):
    """The steps a consumer reads from the file reproduce Task.postprocess (numpy vs torch) on random logits."""
    cfg = validate_config(tiny_raw_config(**{"data.tasks": [task_name]}), source="test")
    task = TASKS[task_name].from_config(cfg, META)
    raw = 3 * torch.randn(2, task.out_channels, 5, 7, generator=torch.Generator().manual_seed(0))
    raw[0, :, 0, 0] = 0  # a zero normal: l2_normalize's eps keeps it finite, as F.normalize does
    spec = postprocess_spec(task)
    np.testing.assert_allclose(apply_postprocess(spec["steps"], raw.numpy()), task.postprocess(raw).numpy(), atol=1e-6)
    if "label" in spec:
        assert spec["classes"] == task.class_names


def test_recorded_postprocess_of_an_unknown_task_is_an_error():
    class Unknown:
        name = "flow"

    with pytest.raises(MtdenseError, match="'flow'.*POSTPROCESS_SPECS"):
        postprocess_spec(Unknown())  # type: ignore[arg-type]
