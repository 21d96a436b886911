"""``mtdense export``: a trained run as safetensors weights, an ONNX graph, a ``torch.export`` program or TorchScript.

One writer per format in :data:`EXPORT_FORMATS` (a plain dict). The three graph formats contain the
inference outputs only: :class:`InferenceOutputs` keeps the final prediction of each main task
(``cfg.data.tasks``), keyed by the task's name, and drops the deep-supervision and auxiliary-task outputs
that the models return for training. Their input is ``image``: float32 RGB in [0, 1], ``(B, 3, H, W)``; the
ImageNet normalisation is part of the graph (:meth:`mtdense.models.MultiTaskModel.normalize`), so a
consumer must not normalise again. The outputs are the raw head outputs (logits, metres before the clamp,
unnormalised normals); the post-processing of each output is written into the file instead, as data:

Every exported file records :func:`export_spec`, one JSON document, under the key ``"mtdense"``:
the task list, class names, the input (layout, range, mean/std and where they are applied, the traced
size, the range of sizes a ``--dynamic`` graph accepts), and per output its channels and post-processing
steps (e.g. ``softmax`` over the classes then ``argmax`` for labels, depth ``clamp``, normals
``l2_normalize``, edge ``sigmoid``), which :func:`apply_postprocess` executes in numpy exactly as
:meth:`mtdense.tasks.Task.postprocess` does. Where it is stored (choice: inside the file, never a sidecar
that can be separated from it):

- ONNX: ``metadata_props`` entries ``mtdense`` (the spec), ``mtdense.config`` and ``mtdense.meta`` (the
  resolved config and dataset meta, with which ``mtdense predict`` rebuilds the tasks' visualisations);
- ``torch.export`` (``.pt2``) and TorchScript (``.ts``): the extra file ``mtdense.json`` inside the archive
  (``torch.export.save(extra_files=...)``, ``torch.jit.save(_extra_files=...)``), holding the spec with the
  config and meta under ``"config"`` and ``"meta"``;
- safetensors: the string metadata ``config``, ``meta``, ``format`` (read by ``mtdense predict`` and by
  ``model.backbone.pretrained``) and ``mtdense`` (the spec).

ONNX is written by the ``torch.export``-based exporter at opset :data:`ONNX_OPSET` (the newest opset it
emits natively; it is ≥ 17 as asked) and checked with ``onnx.checker.check_model(full_check=True)``.
Every graph is checked after writing: it is run (ONNX Runtime for ONNX) on a fixed random image and its
outputs compared with the eager model's; with ``dynamic`` it is also run at a second, larger size
(:func:`second_size`), and a model that the exporter specialised to the traced size is a clear error
instead of a file that silently computes wrong outputs at other sizes. A model known to be specialised
(:data:`SIZE_SPECIALISED`) is refused before any trace; for any other, the input range torch.export derived is
read right after the trace, and a range that excludes the second size is the error, before conversion and
saving (choice: the same error the check at the second size would give, minutes of ONNX conversion earlier).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mtdense.config.load import config_to_dict, validate_config
from mtdense.engine.inference import LoadedRun, load_run
from mtdense.engine.setup import build_tasks
from mtdense.errors import CheckpointError, MtdenseError
from mtdense.models._base import IMAGENET_MEAN, IMAGENET_STD
from mtdense.tasks import Task

#: ONNX opset of exported graphs (the torch.export-based exporter emits opset 18 natively).
ONNX_OPSET = 18
#: key of the export spec in every format's metadata
SPEC_KEY = "mtdense"
SPEC_FILE = "mtdense.json"
SPEC_VERSION = "mtdense-export-1"
#: the graph's outputs equal the eager model's within ``ATOL × max(1, max |eager output|)`` (float32 rounding)
ATOL = 1e-4

#: architectures whose graph torch.export specialises to the traced height/width, and why: ``--dynamic`` in a format
#: traced by torch.export (onnx, exported) is refused up front for them, instead of after a trace that cannot work
#: (``tests/engine/test_export.py`` checks, under ``heavy``, that each entry's model does specialise without it)
SIZE_SPECIALISED: dict[str, str] = {
    "trl": "the task-attentional modules' mask decoders call ConvTranspose2d(output_size=...), whose output padding "
    "PyTorch computes in Python from the sizes; torch.export turns those checks into bounds on the input "
    "(height <= the traced height), so the graph does not run at a larger size",
}


# -- the exported module ------------------------------------------------------------------------------------
class InferenceOutputs(nn.Module):
    """``image (B, 3, H, W)`` RGB in [0, 1] → ``{task: raw output (B, C, H', W')}`` for the main ``tasks`` only.

    Deep-supervision (``"<tag>/<task>"``) and auxiliary-task outputs are dropped: they exist for the training
    losses, and an exported model is for inference. The order of ``tasks`` is the order of the graph outputs.
    """

    def __init__(self, model: nn.Module, tasks: list[str]) -> None:
        super().__init__()
        self.model = model
        self.tasks = list(tasks)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        out = self.model(image)
        return {name: out[name] for name in self.tasks}


# -- post-processing as data ----------------------------------------------------------------------------------
def _class_spec(task: Task) -> dict[str, Any]:
    names = list(task.class_names)  # type: ignore[attr-defined]
    return {
        "kind": "class probabilities",
        "steps": [{"op": "softmax", "axis": 1}],
        "label": {"op": "argmax", "axis": 1, "meaning": "index into classes"},
        "classes": names,
    }


def _depth_spec(task: Task) -> dict[str, Any]:
    low = task.min_depth if task.min_depth is not None else 1e-3  # type: ignore[attr-defined]
    return {"kind": "depth", "unit": "metres", "steps": [{"op": "clamp", "min": float(low)}]}


def _normals_spec(task: Task) -> dict[str, Any]:
    # F.normalize: x / max(||x||_2, eps) with eps = 1e-12
    return {"kind": "unit surface normals (x, y, z)", "steps": [{"op": "l2_normalize", "axis": 1, "eps": 1e-12}]}


def _probability_spec(task: Task) -> dict[str, Any]:
    return {"kind": f"{task.name} probability", "steps": [{"op": "sigmoid"}]}


#: task name -> the description of its :meth:`Task.postprocess` (a test checks each against the method)
POSTPROCESS_SPECS: dict[str, Callable[[Task], dict[str, Any]]] = {
    "semseg": _class_spec,
    "parts": _class_spec,
    "depth": _depth_spec,
    "normals": _normals_spec,
    "edge": _probability_spec,
    "saliency": _probability_spec,
}


def postprocess_spec(task: Task) -> dict[str, Any]:
    """The post-processing of ``task`` as data; a task without an entry in :data:`POSTPROCESS_SPECS` is an error."""
    if task.name not in POSTPROCESS_SPECS:
        raise MtdenseError(
            f"task {task.name!r} has no recorded post-processing for export; "
            f"known: {', '.join(sorted(POSTPROCESS_SPECS))} (add it to mtdense.engine.export.POSTPROCESS_SPECS)"
        )
    return POSTPROCESS_SPECS[task.name](task)


def _softmax(x: np.ndarray, step: Mapping[str, Any]) -> np.ndarray:
    z = np.exp(x - x.max(axis=step["axis"], keepdims=True))
    return z / z.sum(axis=step["axis"], keepdims=True)


def _l2_normalize(x: np.ndarray, step: Mapping[str, Any]) -> np.ndarray:
    norm = np.sqrt((x * x).sum(axis=step["axis"], keepdims=True))
    return x / np.maximum(norm, step["eps"])


POSTPROCESS_OPS: dict[str, Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]] = {
    "softmax": _softmax,
    "clamp": lambda x, step: np.maximum(x, step["min"]),
    "l2_normalize": _l2_normalize,
    "sigmoid": lambda x, step: 1.0 / (1.0 + np.exp(-x)),
}


def apply_postprocess(steps: list[Mapping[str, Any]], raw: np.ndarray) -> np.ndarray:
    """Run the recorded ``steps`` of one output (``spec["outputs"][task]["steps"]``) on its raw array ``(B, C, H, W)``.

    A reference for consumers in numpy; it equals :meth:`Task.postprocess` up to float rounding.
    """
    x = np.asarray(raw, dtype=np.float32)
    for step in steps:
        if step["op"] not in POSTPROCESS_OPS:
            raise MtdenseError(f"unknown post-processing op {step['op']!r}; known: {', '.join(POSTPROCESS_OPS)}")
        x = POSTPROCESS_OPS[step["op"]](x, step)
    return x


# -- the spec ------------------------------------------------------------------------------------------------
def export_spec(
    run: LoadedRun,
    *,
    fmt: str,
    size: tuple[int, int] | None,
    dynamic: bool,
    size_range: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The self-description written into every exported file (see the module docstring); ``size`` is the traced
    ``(H, W)`` of a graph (``None`` for weights), ``size_range`` the sizes a dynamic graph accepts."""
    tasks = list(run.cfg.data.tasks)
    outputs = {}
    for name in tasks:
        task = run.tasks[name]
        outputs[name] = {
            "channels": task.out_channels,
            "shape": ["B", task.out_channels, "H", "W"],
            "raw": "head output before post-processing",
            **postprocess_spec(task),
        }
    return {
        "format": SPEC_VERSION,
        "export_format": fmt,
        "model": run.cfg.model.name,
        "backbone": run.cfg.model.backbone.name,
        "tasks": tasks,
        "classes": {n: o["classes"] for n, o in outputs.items() if "classes" in o},
        "input": {
            "name": "image",
            "shape": [1, 3, *size] if size is not None and not dynamic else ["B", 3, "H", "W"],
            "dtype": "float32",
            "channels": "RGB",
            "range": [0.0, 1.0],
            "normalization": {
                "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD),
                "applied": "inside the graph: (image - mean) / std; pass RGB in [0, 1], do not normalise",
            },
            "traced_size": list(size) if size is not None else None,
            "dynamic": dynamic,
            **({"size_range": dict(size_range)} if size_range else {}),
        },
        "outputs": outputs,
        "output_order": tasks,
        "output_resolution": "the input's (resize bilinearly to the image size if a model returns another)",
    }


# -- the job -----------------------------------------------------------------------------------------------------
@dataclass
class ExportJob:
    """What every format writer gets: the loaded run, the module to export and its example input."""

    run: LoadedRun
    module: InferenceOutputs
    example: Tensor
    size: tuple[int, int] | None
    dynamic: bool
    fmt: str


@dataclass(frozen=True)
class ExportFormat:
    """A format: file suffix, writer ``(job, path) -> spec``, and a loader ``path -> callable`` for the check
    (``None``: nothing to run, e.g. safetensors weights); ``torch_export``: the writer traces with torch.export
    (so :data:`SIZE_SPECIALISED` applies to ``--dynamic``)."""

    suffix: str
    write: Callable[[ExportJob, Path], dict[str, Any]]
    runner: Callable[[Path], Callable[[Tensor], dict[str, Tensor]]] | None
    graph: bool
    torch_export: bool = False


def second_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size a ``dynamic`` export is checked at: ``(H + 32, W + 64)``, another height, width and aspect."""
    return size[0] + 32, size[1] + 64


def _dynamic_shapes(job: ExportJob) -> dict[str, Any] | None:
    if not job.dynamic:
        return None
    dim = torch.export.Dim.DYNAMIC
    return {"image": {0: dim, 2: dim, 3: dim}}


def _export_program(job: ExportJob) -> torch.export.ExportedProgram:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            return torch.export.export(job.module, (job.example,), dynamic_shapes=_dynamic_shapes(job), strict=False)
        except Exception as e:  # noqa: BLE001 - any tracing failure becomes one named error
            what = "with dynamic batch/height/width" if job.dynamic else f"at {job.size[0]}x{job.size[1]}"
            raise MtdenseError(
                f"torch.export cannot trace model {job.run.cfg.model.name!r} {what}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"
                + (" (export without --dynamic for a fixed size)" if job.dynamic else "")
            ) from None


def _size_range(ep: torch.export.ExportedProgram) -> dict[str, Any]:
    """``{"height": [min, max], "width": [min, max]}`` of the program's input (``None`` = unbounded)."""
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == "image")
    ranges: dict[str, Any] = {}
    for axis, label in ((2, "height"), (3, "width")):
        dim = node.meta["val"].shape[axis]
        if isinstance(dim, int):
            ranges[label] = [dim, dim]
            continue
        vr = ep.range_constraints.get(dim.node.expr)
        ranges[label] = [_finite_int(vr.lower), _finite_int(vr.upper)] if vr is not None else [None, None]
    return ranges


def _finite_int(bound: Any) -> int | None:
    """A sympy bound of torch's range constraints as an int; infinite (``int_oo``) as ``None``."""
    import sympy

    return int(bound) if isinstance(bound, (int, sympy.Integer)) else None


def _spec_with_run(job: ExportJob, **extra: Any) -> dict[str, Any]:
    return export_spec(job.run, fmt=job.fmt, size=job.size, dynamic=job.dynamic, **extra)


def _full_record(spec: dict[str, Any], run: LoadedRun) -> str:
    return json.dumps({**spec, "config": config_to_dict(run.cfg), "meta": run.meta})


# -- writers ---------------------------------------------------------------------------------------------------
def _write_safetensors(job: ExportJob, out: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    spec = _spec_with_run(job)
    tensors = {k: v.detach().contiguous().clone() for k, v in job.run.model.state_dict().items()}
    metadata = {
        "config": json.dumps(config_to_dict(job.run.cfg)),
        "meta": json.dumps(job.run.meta),
        "format": "mtdense-1",
        SPEC_KEY: json.dumps(spec),
    }
    save_file(tensors, str(out), metadata=metadata)
    return spec


def _dynamic_size_range(job: ExportJob, ep: torch.export.ExportedProgram) -> dict[str, Any] | None:
    """The input range of a ``dynamic`` program (``None`` when not dynamic); a range that excludes the size the
    export is checked at (:func:`second_size`) is an error here, before the program is converted or saved."""
    if not job.dynamic:
        return None
    ranges = _size_range(ep)
    for (label, (lo, hi)), value in zip(ranges.items(), second_size(job.size), strict=True):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise MtdenseError(
                f"{job.fmt} export of model {job.run.cfg.model.name!r} with dynamic height/width: torch.export "
                f"specialised the graph to a {label} in [{lo}, {hi if hi is not None else 'any'}], so it does not run "
                f"at {value} (export without --dynamic for a fixed size)"
            )
    return ranges


def _write_exported(job: ExportJob, out: Path) -> dict[str, Any]:
    ep = _export_program(job)
    spec = _spec_with_run(job, size_range=_dynamic_size_range(job, ep))
    torch.export.save(ep, str(out), extra_files={SPEC_FILE: _full_record(spec, job.run)})
    return spec


def _write_torchscript(job: ExportJob, out: Path) -> dict[str, Any]:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # strict=False: the module returns a dict; the tracer records shapes as they flow, and the check at a
        # second size tells whether the trace holds for other sizes (see module docstring)
        traced = torch.jit.trace(job.module, (job.example,), strict=False, check_trace=False)
    spec = _spec_with_run(job)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(traced, str(out), _extra_files={SPEC_FILE: _full_record(spec, job.run)})
    return spec


def _write_onnx(job: ExportJob, out: Path) -> dict[str, Any]:
    onnx = _require_onnx("onnx")
    ep = _export_program(job)
    spec = _spec_with_run(job, size_range=_dynamic_size_range(job, ep))
    # the exporter reports its progress on stdout and logs optional operators it skips (torchvision's) as warnings;
    # the CLI prints one line of its own instead
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                ep,
                (job.example,),
                str(out),
                dynamo=True,
                opset_version=ONNX_OPSET,
                input_names=["image"],
                output_names=list(job.module.tasks),
                external_data=False,
                verbose=False,
            )
        except Exception as e:  # noqa: BLE001
            raise MtdenseError(
                f"ONNX export of model {job.run.cfg.model.name!r} failed: {type(e).__name__}: {e}"
            ) from None
    proto = onnx.load(str(out))
    for key, value in (
        (SPEC_KEY, json.dumps(spec)),
        ("mtdense.config", json.dumps(config_to_dict(job.run.cfg))),
        ("mtdense.meta", json.dumps(job.run.meta)),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "mtdense"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    return spec


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- runners (for the check after writing) ------------------------------------------------------------------
def _run_exported(path: Path) -> Callable[[Tensor], dict[str, Tensor]]:
    module = torch.export.load(str(path)).module()
    return lambda x: dict(module(x))


def _run_torchscript(path: Path) -> Callable[[Tensor], dict[str, Tensor]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in favour of torch.export
        module = torch.jit.load(str(path), map_location="cpu")
    return lambda x: dict(module(x))


def _run_onnx(path: Path) -> Callable[[Tensor], dict[str, Tensor]]:
    session = onnx_session(path)
    names = [o.name for o in session.get_outputs()]

    def run(x: Tensor) -> dict[str, Tensor]:
        values = session.run(None, {"image": x.detach().float().cpu().numpy()})
        return {n: torch.from_numpy(v) for n, v in zip(names, values, strict=True)}

    return run


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "safetensors": ExportFormat(".safetensors", _write_safetensors, None, graph=False),
    "onnx": ExportFormat(".onnx", _write_onnx, _run_onnx, graph=True, torch_export=True),
    "torchscript": ExportFormat(".ts", _write_torchscript, _run_torchscript, graph=True),
    "exported": ExportFormat(".pt2", _write_exported, _run_exported, graph=True, torch_export=True),
}


def export_format(name: str) -> ExportFormat:
    """The format ``name``; an unknown one is an :class:`MtdenseError` listing the valid names."""
    if name not in EXPORT_FORMATS:
        raise MtdenseError(f"--format {name!r}: unknown export format; valid formats: {', '.join(EXPORT_FORMATS)}")
    return EXPORT_FORMATS[name]


def format_for_path(path: str | Path) -> str | None:
    """The format whose suffix ``path`` has (``None`` when none does)."""
    suffix = Path(path).suffix.lower()
    return next((name for name, f in EXPORT_FORMATS.items() if f.suffix == suffix), None)


# -- the public entry point ------------------------------------------------------------------------------------
def default_size(run: LoadedRun) -> tuple[int, int]:
    """The traced size when ``--size`` is not given: ``data.eval_size``, else ``data.crop_size``, else the
    dataset meta's ``size``; none of them is an error asking for ``--size``."""
    for size in (run.cfg.data.eval_size, run.cfg.data.crop_size, run.meta.get("size")):
        if size:
            return int(size[0]), int(size[1])
    raise MtdenseError(f"{run.source}: the config names no image size (data.eval_size/crop_size); give --size HxW")


def default_output(run_or_ckpt: str | Path, fmt: str) -> Path:
    """``RUN/export/model<suffix>`` for a run directory, the checkpoint's path with the format's suffix else."""
    src = Path(run_or_ckpt)
    suffix = export_format(fmt).suffix
    return src / "export" / f"model{suffix}" if src.is_dir() else src.with_suffix(suffix)


def _check_close(got: Mapping[str, Tensor], ref: Mapping[str, Tensor], *, what: str, atol: float = ATOL) -> None:
    for name, r in ref.items():
        if name not in got:
            raise MtdenseError(f"{what}: output {name!r} missing; the graph returns {', '.join(got)}")
        g = got[name]
        if tuple(g.shape) != tuple(r.shape):
            raise MtdenseError(f"{what}: output {name!r}: expected shape {tuple(r.shape)}, got {tuple(g.shape)}")
        err = float((g.float() - r.float()).abs().max())
        bound = atol * max(1.0, float(r.abs().max()))
        if not err <= bound:
            raise MtdenseError(f"{what}: output {name!r} differs from the PyTorch model by {err:.3g} (> {bound:.3g})")


def verify_export(job: ExportJob, path: Path) -> None:
    """Run the written graph on the traced-size image (and at :func:`second_size` when ``dynamic``) and compare
    with the eager model; a mismatch is an :class:`MtdenseError` naming the format, size and output."""
    fmt = export_format(job.fmt)
    if fmt.runner is None:
        return
    run = fmt.runner(path)
    sizes = [job.size] + ([second_size(job.size)] if job.dynamic else [])
    for i, size in enumerate(sizes):
        x = job.example if i == 0 else torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
        try:
            with torch.no_grad():
                ref, got = job.module(x), run(x)
        except Exception as e:  # noqa: BLE001 - a graph fixed to the traced size fails to run at another
            raise MtdenseError(
                f"{job.fmt} export of model {job.run.cfg.model.name!r} does not run at {size[0]}x{size[1]}"
                + (" (the model cannot be exported with dynamic height/width in this format)" if i else "")
                + f": {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        what = f"{job.fmt} export of model {job.run.cfg.model.name!r} at {size[0]}x{size[1]}"
        if i:
            what += " (the model cannot be exported with dynamic height/width in this format)"
        _check_close(got, ref, what=what)


def export_run(
    run_or_ckpt: str | Path,
    *,
    fmt: str = "safetensors",
    out: str | Path | None = None,
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export the model of a run directory, checkpoint or safetensors export in format ``fmt`` and return the path.

    ``size``: the traced ``(H, W)`` of graph formats (default :func:`default_size`); ``dynamic``: batch, height
    and width free in the graph (checked at :func:`second_size`). ``out`` defaults to :func:`default_output`;
    an existing file is kept (an error) unless ``overwrite``. The file is written next to its destination and
    moved into place only after its check passed, so a failed export leaves nothing behind.
    """
    fmt_spec = export_format(fmt)
    if not fmt_spec.graph and (dynamic or size is not None):
        raise MtdenseError(f"--format {fmt}: weights only, --size and --dynamic apply to onnx, torchscript, exported")
    path = Path(out) if out is not None else default_output(run_or_ckpt, fmt)
    _check_destination(path, overwrite=overwrite)
    run = load_run(run_or_ckpt, device=torch.device("cpu"))
    return export_loaded(run, fmt=fmt, out=path, size=size, dynamic=dynamic, overwrite=overwrite)


def _check_destination(path: Path, *, overwrite: bool) -> None:
    if path.is_dir():
        raise MtdenseError(f"--out {path}: expected a file, got a folder")
    if path.exists() and not overwrite:
        raise MtdenseError(f"--out {path}: the file exists; remove it, choose another --out or pass --overwrite")


def export_loaded(
    run: LoadedRun,
    *,
    fmt: str,
    out: str | Path,
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
    overwrite: bool = False,
) -> Path:
    """:func:`export_run` for a model already loaded (its weights on the CPU, in eval mode)."""
    fmt_spec = export_format(fmt)
    if not fmt_spec.graph and (dynamic or size is not None):
        raise MtdenseError(f"--format {fmt}: weights only, --size and --dynamic apply to onnx, torchscript, exported")
    name = run.cfg.model.name
    if dynamic and fmt_spec.torch_export and name in SIZE_SPECIALISED:
        raise MtdenseError(
            f"--dynamic: model {name!r} cannot be exported to {fmt} with dynamic height/width: "
            f"{SIZE_SPECIALISED[name]} (export without --dynamic for a fixed size)"
        )
    if fmt == "onnx":
        _require_onnx("onnx")
        _require_onnx("onnxruntime")
    path = Path(out)
    _check_destination(path, overwrite=overwrite)
    if fmt_spec.graph and size is None:
        size = default_size(run)
    # batch 2 when dynamic: torch.export specialises a dimension traced at size 1
    example = torch.rand(2 if dynamic else 1, 3, *(size or (8, 8)), generator=torch.Generator().manual_seed(0))
    job = ExportJob(run, InferenceOutputs(run.model, list(run.cfg.data.tasks)).eval(), example, size, dynamic, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")  # same suffix: torch.export.save wants .pt2
    try:
        fmt_spec.write(job, tmp)
        verify_export(job, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- reading exports back ------------------------------------------------------------------------------------------
def _require_onnx(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MtdenseError(f"{module} is not installed; install the ONNX extra: pip install 'mtdense[onnx]'") from None


def read_export_record(path: str | Path) -> dict[str, Any]:
    """The spec of an exported file with the config and meta under ``"config"``/``"meta"`` (any format, by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported model not found: {path}")
    fmt = format_for_path(path)
    if fmt is None:
        suffixes = ", ".join(f.suffix for f in EXPORT_FORMATS.values())
        raise MtdenseError(f"{path}: not an exported model (expected a file ending in one of {suffixes})")
    try:
        record = RECORD_READERS[fmt](path)
    except MtdenseError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable {fmt} export ({type(e).__name__}: {e})") from None
    if record.get("format") != SPEC_VERSION or "config" not in record:
        raise CheckpointError(f"{path}: no mtdense export record in its metadata (was it written by `mtdense export`?)")
    return record


def _read_onnx_record(path: Path) -> dict[str, Any]:
    onnx = _require_onnx("onnx")
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if SPEC_KEY not in props:
        return {}
    return {
        **json.loads(props[SPEC_KEY]),
        "config": json.loads(props.get("mtdense.config", "null")),
        "meta": json.loads(props.get("mtdense.meta", "{}")),
    }


def _read_archive_record(loader: Callable[..., Any]) -> Callable[[Path], dict[str, Any]]:
    def read(path: Path) -> dict[str, Any]:
        files = {SPEC_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loader(path, files)
        return json.loads(files[SPEC_FILE]) if files[SPEC_FILE] else {}

    return read


def _read_safetensors_record(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if SPEC_KEY not in metadata:
        return {}
    return {
        **json.loads(metadata[SPEC_KEY]),
        "config": json.loads(metadata["config"]),
        "meta": json.loads(metadata.get("meta", "{}")),
    }


RECORD_READERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "onnx": _read_onnx_record,
    "exported": _read_archive_record(lambda p, files: torch.export.load(str(p), extra_files=files)),
    "torchscript": _read_archive_record(
        lambda p, files: torch.jit.load(str(p), _extra_files=files, map_location="cpu")
    ),
    "safetensors": _read_safetensors_record,
}


# -- ONNX Runtime prediction ------------------------------------------------------------------------------------
def onnx_session(path: str | Path) -> Any:
    """An ONNX Runtime CPU session of ``path``, using as many threads as torch does (``torch.get_num_threads``)."""
    ort = _require_onnx("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {e})") from None


class OnnxRuntimeModel(nn.Module):
    """An exported ONNX graph behind the interface ``mtdense predict`` uses: ``model(image) -> {task: raw}``.

    ``image``: ``(B, 3, H, W)`` RGB in [0, 1]. A graph exported without ``--dynamic`` takes only its traced
    size: the image is resized to it (bilinear) and the outputs resized back to ``(H, W)``, as
    :func:`mtdense.engine.inference.predict_image` does for large photos. Runs on the CPU.
    """

    def __init__(self, path: str | Path, spec: Mapping[str, Any]) -> None:
        super().__init__()
        self.session = onnx_session(path)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.dynamic = bool(spec["input"]["dynamic"])
        self.size = tuple(spec["input"]["traced_size"])
        self.size_range = spec["input"].get("size_range") or {}
        self.source = str(path)

    def _check_size(self, h: int, w: int) -> None:
        for label, value in (("height", h), ("width", w)):
            lo, hi = self.size_range.get(label, (None, None))
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise MtdenseError(
                    f"{self.source}: image {h}x{w}: the graph accepts a {label} in [{lo}, {hi or 'any'}], got {value} "
                    "(use --max-side, or export again with another --size)"
                )

    def _run(self, x: Tensor) -> dict[str, Tensor]:
        values = self.session.run(None, {"image": x.numpy()})
        return {name: torch.from_numpy(v) for name, v in zip(self.output_names, values, strict=True)}

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        from mtdense.models import upsample_to

        x = image.detach().float().cpu()
        if self.dynamic:
            self._check_size(*x.shape[-2:])
            return self._run(x)
        # a fixed-size graph has batch 1: one image at a time, resized to the traced size and back
        per_image = [self._run(upsample_to(x[i : i + 1], self.size)) for i in range(x.shape[0])]
        return {n: upsample_to(torch.cat([o[n] for o in per_image]), x.shape[-2:]) for n in self.output_names}


def load_onnx_run(path: str | Path) -> LoadedRun:
    """An exported ``.onnx`` file as a :class:`LoadedRun` for ``mtdense predict``: tasks (visualisation, arrays)
    rebuilt from the config and meta in its metadata, the model run by ONNX Runtime."""
    path = Path(path)
    record = read_export_record(path)
    cfg = validate_config(record["config"], source=f"config in the metadata of {path}")
    tasks = build_tasks(cfg, record.get("meta", {}))
    meta = record.get("meta", {})
    return LoadedRun(cfg=cfg, model=OnnxRuntimeModel(path, record), tasks=tasks, meta=meta, source=path)
