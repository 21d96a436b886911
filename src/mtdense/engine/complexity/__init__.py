"""Resource analysis of a configured model: parameters, forward FLOPs, train-step and inference time.

This is what ``mtdense complexity CONFIG --size HxW`` prints. It needs no dataset on disk: the tasks
are built from the config with the dataset's class metadata (its ``meta.json``, or what the config's
dataset defines), the model from the config (without loading ``model.backbone.pretrained``: weights
do not change sizes or speed), and timings use random inputs and targets of the shapes and dtypes of
the data contract (:meth:`mtdense.tasks.Task.random_target`).

One module per job:

* :mod:`.flops` — FLOP counting (:func:`count_flops`, :func:`flop_breakdown`);
* :mod:`.batch` — random batches of the data contract (:func:`random_batch`);
* :mod:`.timing` — timed train steps and inference passes (:func:`time_model`);
* :mod:`.report` — the report of a config (:func:`complexity_report`), with the single-task comparison;
* :mod:`.format` — the human-readable table (:func:`format_complexity`).

FLOPs convention
    :func:`count_flops` uses :class:`torch.utils.flop_counter.FlopCounterMode`, which counts a
    multiply-add as **2 FLOPs** and counts only the matrix products (convolutions, transposed
    convolutions, linear layers, matmuls, attention); batch norm, activations, pooling, bilinear
    upsampling and element-wise arithmetic are not counted. Papers often report MACs (multiply-adds)
    under the name "FLOPs"; the report therefore gives both ``gflops`` and ``gmacs = gflops / 2``.
    A convolution's bias is not counted either (it is ``Cout·H·W`` additions, < 1 % of the layer).

Single-task comparison (MTI-Net, seed 002, Table 7)
    A multi-task model is compared with the *sum* of the single-task models that it replaces: for
    every main task, :func:`mtdense.config.single_task_config` of the config (``model.name=stl`` on
    the same backbone, that task only, no auxiliary tasks; of the ``model`` section only the options
    that the ``stl`` config also has, e.g. ``head``, are carried over). Check against the paper: on
    NYUD at 480×640 with HRNet-W18-small-v2 (the packaged ``nyud/*_hrnet18s`` configs) the two
    single-task models come to 7.88 M parameters and 22.5 GMACs, Table 7a's "8.0 M, 22.0 G FLOPS"
    (so the paper's FLOPS are MACs), and the shared-encoder ``mtl`` and ``padnet`` to −49 % / −43 %
    and −12 % / +206 % (paper: −50 % / −45 % and −15 % / +204 %).
"""

from mtdense.engine.complexity.batch import random_batch
from mtdense.engine.complexity.flops import count_flops, flop_breakdown
from mtdense.engine.complexity.format import format_complexity
from mtdense.engine.complexity.report import complexity_report
from mtdense.engine.complexity.timing import time_model

__all__ = [
    "complexity_report",
    "count_flops",
    "flop_breakdown",
    "format_complexity",
    "random_batch",
    "time_model",
]
