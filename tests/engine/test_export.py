"""Export of every registered architecture (:mod:`mtdense.engine.export`) and the recorded post-processing.

Each architecture is built from its tiny case (``tests/models/conftest.py``, the single source of the tiny
configs, loaded as a plain module so that a newly registered model is exported here too), exported to ONNX at
64x64 and run with ONNX Runtime on the CPU: the outputs equal the eager model's within 1e-4. Where the model
allows it the graph is dynamic (batch, height, width) and is also compared at a second size; where it does not,
the dynamic export is a clear error, up front (``SIZE_SPECIALISED`` says why).

The default suite keeps one cheap representative of each export path (``mtl``: its auxiliary-task outputs are
dropped from the graph as deep supervision is); the sweeps over every architecture, the ``mtinet`` round trip and the
proof that each ``SIZE_SPECIALISED`` model really specialises are ``heavy`` (``make test-heavy``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtdense.config.load import validate_config
from mtdense.engine import export as export_module
from mtdense.engine.export import (
    POSTPROCESS_SPECS,
    SIZE_SPECIALISED,
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
    dynamic = name in DYNAMIC_CHECKED and name not in SIZE_SPECIALISED
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


@pytest.mark.parametrize("fmt", ["exported", "onnx"])
def test_dynamic_export_of_a_size_specialised_model_is_a_clear_error_up_front(fmt, tmp_path, monkeypatch):
    """Every ``SIZE_SPECIALISED`` model, in both formats traced by torch.export: refused before any trace."""
    assert SIZE_SPECIALISED and set(SIZE_SPECIALISED) <= set(list_models())

    def no_trace(job):
        raise AssertionError(f"{job.run.cfg.model.name} was traced; the error should come before")

    monkeypatch.setattr(export_module, "_export_program", no_trace)
    for name in sorted(SIZE_SPECIALISED):
        out = tmp_path / f"{name}{export_module.EXPORT_FORMATS[fmt].suffix}"
        with pytest.raises(MtdenseError, match=rf"'{name}'.*{fmt}.*dynamic.*ConvTranspose2d"):
            export_loaded(tiny_run(name), fmt=fmt, out=out, size=SIZE, dynamic=True)
    assert not list(tmp_path.iterdir())  # nothing half-written is left


@pytest.mark.heavy  # one dynamic torch.export trace per model (about a minute each of one core): `make test-heavy`
@pytest.mark.parametrize("name", sorted(SIZE_SPECIALISED))
def test_each_size_specialised_model_does_specialise(name, tmp_path, monkeypatch):
    """Without its ``SIZE_SPECIALISED`` entry the model is traced, and the range torch.export derives excludes the
    second size: the entry is needed (remove it when the model is fixed), and the check after the trace is a clear
    error too."""
    monkeypatch.delitem(SIZE_SPECIALISED, name)
    out = tmp_path / f"{name}.pt2"
    with pytest.raises(MtdenseError, match=rf"'{name}'.*dynamic.*specialised"):
        export_loaded(tiny_run(name), fmt="exported", out=out, size=SIZE, dynamic=True)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written is left


@pytest.mark.parametrize(
    "name",
    [
        "mtl",
        # deep supervision (intermediate outputs of every scale) and the costliest dynamic trace (about 4x mtl's)
        pytest.param("mtinet", marks=pytest.mark.heavy),
    ],
)
def test_torch_export_and_torchscript_round_trips_equal_eager(name, tmp_path):
    """A dynamic ``torch.export`` program and a TorchScript trace equal the eager model and keep the main tasks'
    final outputs only. ``mtl`` (its auxiliary task's output is dropped) stays in the default suite; ``mtinet``
    (deep-supervision outputs dropped) is ``heavy``, its dynamic trace costing about four times mtl's."""
    import torch.export

    run = tiny_run(name)
    eager = InferenceOutputs(run.model, list(run.cfg.data.tasks)).eval()
    pt2 = export_loaded(run, fmt="exported", out=tmp_path / "m.pt2", size=SIZE, dynamic=True)
    ts = export_loaded(run, fmt="torchscript", out=tmp_path / "m.ts", size=SIZE)
    x = image(1, SIZE, seed=5)
    with torch.no_grad():
        ref = eager(x)
        assert set(run.model(x)) > set(ref)  # the model itself also returns intermediate or auxiliary outputs
        for got in (torch.export.load(str(pt2)).module()(x), torch.jit.load(str(ts))(x)):
            assert list(got) == list(ref)
            for task in ref:
                torch.testing.assert_close(got[task], ref[task], rtol=0, atol=1e-5)
        x2 = image(3, second_size(SIZE), seed=6)  # the dynamic program at another batch and size
        for task, value in torch.export.load(str(pt2)).module()(x2).items():
            torch.testing.assert_close(value, eager(x2)[task], rtol=0, atol=1e-5)
    for path, fmt in ((pt2, "exported"), (ts, "torchscript")):
        record = read_export_record(path)
        assert record["export_format"] == fmt and record["config"]["model"]["name"] == name
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
