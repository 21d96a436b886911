"""FLOPs of a forward pass, in total and per top-level child (see the package docstring for the convention)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def flop_breakdown(module: nn.Module, inputs: Tensor | Sequence[Tensor]) -> dict[str, int]:
    """FLOPs of one forward pass of ``module`` on ``inputs``, in total and per top-level child.

    Returns ``{"total": n, "<child name>": n_child, ...}`` (one entry per ``module.named_children()``;
    children that do no counted work get 0; work done in ``module``'s own ``forward`` outside any child
    is in the total only). Runs under ``no_grad`` in the module's current mode. A multiply-add counts
    as 2 FLOPs; see the package docstring for what is counted. The first call in a process takes about
    2 s longer: :class:`FlopCounterMode` imports ``torch._dynamo``.
    """
    args = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        module(*args)
    counts = {name: sum(per_op.values()) for name, per_op in counter.get_flop_counts().items()}
    # FlopCounterMode keys are the dotted paths "<RootClass>.<child>.<grandchild>..." of the modules that
    # were *called*, each holding the FLOPs of its call including its descendants'. A container that is
    # never called itself (an nn.ModuleDict of heads) has no key, so a child's FLOPs are the sum over its
    # outermost called descendants: the keys below it none of whose ancestors below it has a key.
    root = type(module).__name__
    out = {"total": int(counter.get_total_flops())}
    for name, _ in module.named_children():
        prefix = f"{root}.{name}"
        total = 0
        for key, n in counts.items():
            if key != prefix and not key.startswith(prefix + "."):
                continue
            parts = key.split(".")
            ancestors = (".".join(parts[:i]) for i in range(prefix.count(".") + 1, len(parts)))
            if not any(a in counts for a in ancestors):
                total += n
        out[name] = int(total)
    return out


def count_flops(module: nn.Module, inputs: Tensor | Sequence[Tensor]) -> int:
    """Total FLOPs of one forward pass of ``module`` on ``inputs`` (multiply-add = 2 FLOPs).

    For a convolution with ``Cin`` input and ``Cout`` output channels, kernel ``k×k``, output
    ``(B, Cout, H', W')`` and ``groups=1`` this is ``2·B·Cout·Cin·k²·H'·W'`` (bias not counted).
    The count is for the whole ``inputs`` batch; divide by ``B`` for FLOPs per image.
    """
    return flop_breakdown(module, inputs)["total"]
