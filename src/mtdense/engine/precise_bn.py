"""Precise BatchNorm statistics: re-estimate every BN layer's running mean and variance before an evaluation.

Why. A BN layer evaluates with running statistics that training keeps as an exponential moving average of
its batches' statistics; HRNet's layers use momentum 0.01 (the MTI-Net authors' code), so at the end of a
run they average roughly the last hundred batches, computed by weights that have since moved. On a short
schedule from scratch (the synthetic benchmark's 1,000 steps) that lag is a large share of the seed-to-seed
spread of the scores: re-estimating the statistics of the final weights shrank the std across three seeds
of MTI-Net's depth RMSE from 0.033 to 0.009 (docs/results.md, "Which protocol ranks the methods"). The
remedy is the "precise BN" of Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021, Sec. 3), which
detectron2 runs before each evaluation (its ``PreciseBN`` hook).

What :func:`recompute_bn_stats` does. Every ``_BatchNorm`` layer is reset and switched to a cumulative
average (``momentum=None``), the model runs forward in training mode over ``num_batches`` batches without
gradients, and the momenta are restored. Each layer's running mean is then the equal-weight average of
the batch means and its running variance the average of the (unbiased) batch variances, all computed by
the current weights. Parameters, gradients and the optimiser are untouched, and the global RNG is forked,
so the training that follows is the same as without it (tested through the trainer).

Choices the paper leaves open, and why:

* Which images: batches of the training split with the training augmentation, as detectron2 does (the
  statistics the layers were trained to normalise with). The trainer takes the first ``eval.precise_bn``
  batches of the run's own training order, so every evaluation of a run uses the same batches and a
  resumed run re-estimates exactly as the uninterrupted one; under DDP every rank uses the same batches
  (and rank 0's statistics are broadcast before the evaluation, as without precise BN).
* The average of the batch variances leaves out the variance between the batch means (Wu & Johnson, Sec.
  3.1, bias of "EMA" vs "population" statistics); at batch 8 that term is small against the within-batch
  variance and matches what detectron2 computes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Dataset


def bn_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``model`` that tracks running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    num_batches: int,
    *,
    forward: Callable[[Tensor], Any] | None = None,
    device: torch.device | None = None,
) -> int:
    """Re-estimate the running statistics of every BN layer of ``model`` over the first ``num_batches`` of
    ``batches`` (module docstring); returns the number of batches used. ``forward(image)`` runs the model
    (default ``model(image)``; the trainer passes its own, for channels_last and autocast). The model's
    training mode, the layers' momenta and the global RNG state are restored afterwards.

    Raises ``ValueError`` when ``batches`` ends before it yields one batch (the statistics would be empty).
    """
    layers = bn_layers(model)
    if not layers or num_batches <= 0:
        return 0
    run = forward or model
    momenta = [m.momentum for m in layers]
    was_training = model.training
    devices = [device] if device is not None and device.type == "cuda" else []
    used = 0
    with torch.random.fork_rng(devices=devices):
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch counts the same
        model.train()
        try:
            for batch in batches:
                if used >= num_batches:
                    break
                image = batch["image"]
                run(image.to(device) if device is not None else image)
                used += 1
        finally:
            for m, momentum in zip(layers, momenta, strict=True):
                m.momentum = momentum
            model.train(was_training)
    if used == 0:
        raise ValueError("precise BN: the training data yielded no batch to estimate BatchNorm statistics on")
    return used


def re_estimate_for_run(model: nn.Module, cfg: Any, train_set: Dataset, *, device: torch.device) -> int:
    """``eval.precise_bn`` of a run: :func:`recompute_bn_stats` over the first ``cfg.eval.precise_bn`` batches of
    ``train_set`` in the run's own training order (rank 0's order on every rank), each run as a training step
    runs it (channels_last, bf16 autocast per ``cfg.train``). The trainer and ``mtdense eval --precise-bn`` call
    this, so both use the same batches and the same forward."""
    from mtdense.engine import data as D
    from mtdense.engine.evaluator import training_forward

    def forward(image: Tensor) -> Any:
        return training_forward(model, image, device=device, channels_last=cfg.train.channels_last, bf16=cfg.train.bf16)

    return recompute_bn_stats(
        model, D.make_train_loader(cfg, train_set), cfg.eval.precise_bn, forward=forward, device=device
    )
