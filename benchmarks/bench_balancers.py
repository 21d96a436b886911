"""Cost per train step of every loss balancer (issue 12, item 4).

One :class:`mtdense.engine.trainer.Trainer` per balancer of :data:`mtdense.losses.BALANCERS`, on the same
model and batch (``mtl`` on ResNet-18 by default, the four NYUD-MT tasks on a small rendered synthetic set),
times :meth:`Trainer.train_step` — forward, losses, the balancer's ``forward`` and ``backward`` (one
backward for the loss-level balancers; for the gradient-level ones a gradient per task on the shared
encoder, the combination, and the backward of the heads), optimiser step — with the balancer's default
options. Passes alternate over the balancers (each pass times every balancer, ``fixed`` included, in turn,
after one untimed warm-up step each), and each balancer keeps the best of its per-pass medians, so a
load spike on a shared machine affects each balancer alike. The table gives milliseconds per step and the
ratio to ``fixed``; the section states the machine load.

    python benchmarks/bench_balancers.py                      # writes its section of docs/benchmarks.md
    python benchmarks/bench_balancers.py --size 64 64 --passes 1 --steps 2 --no-write
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

from mtdense.config import validate_config  # noqa: E402
from mtdense.data.synthetic import write_synthetic_dataset  # noqa: E402
from mtdense.engine.trainer import Trainer  # noqa: E402
from mtdense.losses import BALANCERS  # noqa: E402
from mtdense.losses.balancing import GradientBalancer  # noqa: E402

TASKS = ["semseg", "depth", "normals", "edge"]


def _trainer(name: str, *, root: Path, args: argparse.Namespace, out: Path) -> Trainer:
    raw = {
        "seed": 0,
        "data": {"dataset": "synthetic", "root": str(root), "tasks": TASKS, "cache": True, "crop_size": args.size},
        "model": {"name": args.model, "backbone": {"name": args.backbone}},
        "train": {"max_steps": 10_000, "batch_size": args.batch, "lr": 1e-4, "channels_last": False},
        "loss": {"balancer": name, **({"weights": {}} if name == "uncertainty" else {})},
    }
    return Trainer(validate_config(raw), out / name, progress=False)


def _batch(trainer: Trainer, size: int) -> dict:
    samples = [trainer.train_set[i] for i in range(size)]
    return torch.utils.data.default_collate(samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtl")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="timed steps per balancer and pass")
    p.add_argument("--no-write", action="store_true", help="print the table; leave docs/benchmarks.md alone")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = list(BALANCERS)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        h, w = args.size
        write_synthetic_dataset(root, train=args.batch, val=2, size=(h, w), seed=0, progress=False, workers=1)
        trainers = {n: _trainer(n, root=root, args=args, out=Path(tmp)) for n in names}
        batch = _batch(trainers["fixed"], args.batch)
        best: dict[str, float] = {}
        for _ in range(args.passes):
            for name in names:
                trainer = trainers[name]
                trainer.model.train()
                trainer.train_step(batch)  # warm-up
                times = []
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    trainer.train_step(batch)
                    times.append(time.perf_counter() - t0)
                best[name] = min(best.get(name, float("inf")), statistics.median(times))
            load.append(os.getloadavg()[0])
    base = best["fixed"]
    kind = {n: ("gradient" if issubclass(BALANCERS[n], GradientBalancer) else "loss") for n in names}
    lines = [
        f"`{args.model}` on `{args.backbone}`, tasks {', '.join(TASKS)}, batch {args.batch} at {h}×{w}, "
        f"{args.threads} thread(s), fp32; best of {args.passes} alternating passes of the median of {args.steps} "
        f"steps (after one warm-up step) per balancer. Load average (1 min) during the run: "
        f"{min(load):.1f}–{max(load):.1f} on {os.cpu_count()} cores — on a loaded machine absolute times are "
        "inflated; the ratios are the figure to read.",
        "",
        "| balancer | level | ms / train step | × fixed |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {n} | {kind[n]} | {best[n] * 1e3:.0f} | {best[n] / base:.2f} |" for n in names]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("Loss balancers: cost per train step", body)


if __name__ == "__main__":
    main()
