"""``train.compile``: run the training forward pass through ``torch.compile`` (TorchInductor).

What it does: :func:`compile_for_training` wraps a model in ``torch.compile(model, dynamic=False)``
with the default Inductor backend. On the CPU, Inductor writes C++/OpenMP kernels that fuse the
element-wise work around the convolutions (BatchNorm statistics and normalisation, ReLU, residual
additions, the losses' element-wise parts are outside the model and stay eager) and compiles them with
the system C++ compiler; on CUDA it writes Triton kernels. The backward pass is compiled too
(AOTAutograd). Convolutions still run in oneDNN / cuDNN, so the arithmetic is the same up to
floating-point summation order: outputs and gradients match eager mode within float tolerance, not
bitwise.

Random operations (the dropout of the ASPP heads) are compiled with Inductor's ``fallback_random``:
they draw from PyTorch's own generator exactly as eager mode does. Without it Inductor generates its
own random numbers, so a compiled run drew other dropout masks than an eager run of the same seed
(different gradients from the first step: weights 1.05 apart after one SGD step in
``tests/engine/test_compile.py``), and the masks did not follow the RNG state a checkpoint saves.

The compiled module shares its parameters and buffers with the model; the trainer keeps the eager
module for everything else (state dict and checkpoint keys, the optimiser's parameter groups,
evaluation, export), so a run with ``train.compile`` writes the same checkpoints as one without, and
either can resume the other.

Cost: compiling happens at the first training step (and once more for another input shape, e.g. a
smaller last batch) and is large for the multi-scale models: for MTI-Net on HRNet-W18-small-v2 at
288×384 it had not finished after 25 minutes (more than 4 CPU minutes) on a 2-core machine shared
with other jobs; a tiny conv + BN model takes about 25 CPU seconds. PyTorch caches compiled graphs
on disk (``TORCHINDUCTOR_CACHE_DIR``, by default under the temporary folder), so a later run of the
same model and input shape compiles much faster. Measured (``benchmarks/bench_inference.py``, section "Train step
with and without torch.compile" of ``docs/benchmarks.md``; 2-core CPU, 96×128, batch 2): the compiled train step
was *slower* than eager for every architecture (0.59-0.98×) after 96-416 s of compiling, so no shipped config
turns it on; it is there for GPUs and larger inputs, where the trade-off differs (not measured here).

Inference (``mtdense predict --compile``): :func:`compile_for_inference` compiles the eval-mode
forward pass the same way, for whatever image sizes come (one static compile, then one with dynamic
height and width); ``benchmarks/bench_inference.py`` measures it against eager fp32, bf16 autocast and
ONNX Runtime, compile time apart: on the 2-core CPU it gained 0-47 % over fp32 (section "Inference speed"),
for 33-79 s of compiling on first use.

Fallbacks and errors:

* a missing prerequisite (no ``torch.compile`` support for this Python, no C++ compiler for the CPU
  backend, no Triton for CUDA) is not an error: :func:`compile_for_training` logs one warning that
  names what is missing and returns the model unchanged, so training runs eagerly with the same
  results, only slower;
* a failure while compiling (raised by PyTorch at the first forward pass) is re-raised as
  :class:`~mtdense.errors.TrainingError` naming ``train.compile`` and the way around it
  (``train.compile=false``); the training state is untouched, because compiling happens before
  the first optimiser step of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mtdense.errors import MtdenseError, TrainingError

__all__ = ["CompiledForward", "compile_for_inference", "compile_for_training", "compile_unavailable_reason"]

log = logging.getLogger(__name__)


def compile_unavailable_reason(device: torch.device) -> str | None:
    """Why ``torch.compile`` with Inductor cannot run on ``device`` here, or ``None`` if it can."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return f"torch.compile does not support this Python ({torch.__version__})"
    except Exception as e:  # an unsupported interpreter raises on import or on the check
        return f"torch.compile is unavailable: {type(e).__name__}: {e}"
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception:
            return (
                "the CPU backend of torch.compile (Inductor) needs a C++ compiler (g++ or clang++) and none "
                "was found on PATH (set CXX to one)"
            )
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "the CUDA backend of torch.compile (Inductor) needs Triton, which is not installed"
    else:
        return f"compiling supports the CPU and CUDA, not {device.type!r}"
    return None


class CompiledForward(nn.Module):
    """A model's forward pass through ``torch.compile``, turning compilation failures into a named
    :class:`~mtdense.errors.MtdenseError` (:class:`~mtdense.errors.TrainingError` by default).

    Holds the model (``self.model``, parameters shared) and its compiled twin; ``forward`` takes and
    returns what the model's does. ``backend`` and ``dynamic`` are ``torch.compile``'s (Inductor, static
    shapes by default). ``option`` names the setting that asked for compiling and ``way_out`` how to do
    without it, both for the error, of class ``error``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        backend: str | Callable[..., Any] = "inductor",
        dynamic: bool | None = False,
        option: str = "train.compile",
        way_out: str = "set train.compile=false to train without compiling",
        error: type[MtdenseError] = TrainingError,
    ) -> None:
        super().__init__()
        self.model = model
        self.option, self.way_out, self.error = option, way_out, error
        # fallback_random: random ops use torch's generator, as in eager mode (same dropout masks for a seed,
        # and the RNG state in a checkpoint governs them); an option of the Inductor backend only
        options = {"fallback_random": True} if backend == "inductor" else None
        self.compiled = torch.compile(model, backend=backend, dynamic=dynamic, options=options)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from torch._dynamo.exc import BackendCompilerFailed, InternalTorchDynamoError, Unsupported

        try:
            return self.compiled(*args, **kwargs)
        except (BackendCompilerFailed, InternalTorchDynamoError, Unsupported) as e:
            cause = getattr(e, "inner_exception", None) or e  # the compiler's own error, if wrapped
            lines = [line for line in str(cause).splitlines() if line.strip()]
            raise self.error(
                f"{self.option}: torch.compile failed on the model {type(self.model).__name__} "
                f"({type(cause).__name__}: {lines[0].strip() if lines else 'no message'}); {self.way_out}"
            ) from e


def compile_for_training(model: nn.Module, *, device: torch.device) -> nn.Module:
    """``model``'s forward pass compiled for ``device`` (:class:`CompiledForward`), or ``model`` itself,
    with a logged warning, when a prerequisite is missing (:func:`compile_unavailable_reason`).

    Use the result only to call the forward pass; keep ``model`` for its state dict and parameters.
    """
    reason = compile_unavailable_reason(device)
    if reason is not None:
        log.warning("train.compile: %s; training without compiling (same results, slower)", reason)
        return model
    return CompiledForward(model)


def compile_for_inference(model: nn.Module, *, device: torch.device) -> nn.Module:
    """``model``'s forward pass compiled for inference on ``device`` (``mtdense predict --compile``), or
    ``model`` itself, with a logged warning, when a prerequisite is missing.

    Differences from :func:`compile_for_training`, and why: the first image's shape is compiled
    statically and a second shape recompiles once with dynamic height and width (``dynamic=None``),
    because the images of one ``predict`` call may have any size; called under ``torch.no_grad`` (as
    :func:`mtdense.engine.inference.predict_image` does), Inductor compiles the forward graph only. A
    failure while compiling is an :class:`~mtdense.errors.MtdenseError` naming ``--compile``.
    Put ``model`` in eval mode first: the compiled graph follows the mode it was traced in.
    """
    reason = compile_unavailable_reason(device)
    if reason is not None:
        log.warning("predict --compile: %s; predicting without compiling (same results, slower)", reason)
        return model
    return CompiledForward(
        model, dynamic=None, option="predict --compile", way_out="run predict without --compile", error=MtdenseError
    )
