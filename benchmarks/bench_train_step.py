"""One model's train step, side by side with a reference version of the package, on a shared machine.

Times the train step of a packaged config (default ``nyud/mtinet_hrnet18s_aux``: MTI-Net, HRNet-W18-
small-v2, semseg + depth with auxiliary edges and normals) at 288×384, batch 2, fp32, 2 threads, on
random inputs and targets, for several *variants*, each in a fresh process:

* ``reference``: another version of the package (``--reference SRC``, e.g. the last commit:
  ``git archive HEAD src | tar -x -C /tmp/ref`` then ``--reference /tmp/ref/src``), its own config file;
* ``eager``: this tree, ``train.compile=false``;
* ``compiled``: this tree, ``train.compile=true`` (``mtdense.engine.compile``).

Each process does what :meth:`mtdense.engine.trainer.Trainer.train_step` does (forward, losses,
balancer, backward, Adam step), the same process-wide settings as the trainer included (this tree:
:func:`mtdense._allocator.reuse_freed_memory`): ``--warmup`` untimed steps (the first one compiles
when compiling), then ``--repeats`` timed steps, wall clock and process CPU time (all threads) of
each. Variants alternate over ``--passes`` passes (the order is rotated every pass), and each keeps
its best pass (lowest median): other processes on a shared machine only ever add time. The
1-minute load average is recorded at the start of every pass and at the end. Writes the section
"Train step side by side" of ``docs/benchmarks.md`` (``--no-write``: print only).

Usage::

    python benchmarks/bench_train_step.py --reference /tmp/ref/src --passes 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The issue's side-by-side figures (quiet 2-core machine, best of three alternating passes): the
#: authors' MTI-Net train step and ours at that time (= the reference commit), seconds.
ISSUE_AUTHORS_S, ISSUE_OURS_S = 1.36, 1.13
TARGET_VS_AUTHORS = 1.5

_CHILD = r"""
import json, sys, time, torch
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
try:  # the trainer of this tree applies it; a reference without the module trains without it
    from mtdense._allocator import reuse_freed_memory
    reuse_freed_memory()
except ImportError:
    pass
from mtdense.config.load import load_config
from mtdense.engine.complexity import random_batch
from mtdense.engine.setup import build_balancer, build_model_for, build_optimizer, build_tasks
from mtdense.engine.trainer import compute_losses
cfg = load_config(a["config"], a["overrides"])
torch.manual_seed(0)
tasks = build_tasks(cfg, {"num_classes": 40})
model = build_model_for(cfg, tasks)
if cfg.train.channels_last:
    model = model.to(memory_format=torch.channels_last)
balancer = build_balancer(cfg, tasks)
optimizer = build_optimizer(cfg, model, balancer)
forward = model
if getattr(cfg.train, "compile", False):
    from mtdense.engine.compile import compile_for_training
    forward = compile_for_training(model, device=torch.device("cpu"))
data = random_batch(tasks, batch=a["batch"], size=tuple(a["size"]))
image = data["image"]
if cfg.train.channels_last:
    image = image.contiguous(memory_format=torch.channels_last)
model.train()
def step():
    out = forward(image)
    total, _ = balancer(compute_losses(out, data, tasks))
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
walls, cpus = [], []
for i in range(a["warmup"] + a["repeats"]):
    t, c = time.perf_counter(), time.process_time()
    step()
    walls.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
print(json.dumps({"walls": walls, "cpus": cpus, "compile": bool(getattr(cfg.train, "compile", False))}))
"""


def _run(src: Path, config: Path, overrides: list[str], args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(args.threads))
    spec = {
        "config": str(config),
        "overrides": overrides,
        "threads": args.threads,
        "batch": args.batch,
        "size": list(args.size),
        "warmup": args.warmup,
        "repeats": args.repeats,
    }
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)], env=env, check=True, capture_output=True, text=True
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    timed_w, timed_c = r["walls"][args.warmup :], r["cpus"][args.warmup :]
    return {
        "median": statistics.median(timed_w),
        "min": min(timed_w),
        "cpu": statistics.median(timed_c),
        "first": r["walls"][0],
        "first_cpu": r["cpus"][0],
    }


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="nyud/mtinet_hrnet18s_aux", help="packaged config name")
    p.add_argument("--reference", type=Path, help="src/ folder of the version to compare with")
    p.add_argument("--reference-label", default="the package in --reference", help="what the reference is")
    p.add_argument("--variants", nargs="+", default=["reference", "eager", "compiled"])
    p.add_argument("--size", type=_size, default=(288, 384), help="HxW")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per process (the first compiles)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    variants = [v for v in args.variants if v != "reference" or args.reference is not None]
    here = ROOT / "src"
    setups = {
        "reference": (args.reference, "train.compile absent"),
        "eager": (here, "train.compile=false"),
        "compiled": (here, "train.compile=true"),
    }
    overrides = {"reference": [], "eager": ["train.compile=false"], "compiled": ["train.compile=true"]}
    results: dict[str, list[dict]] = {v: [] for v in variants}
    loads = []
    t0 = time.perf_counter()
    for i in range(args.passes):
        loads.append(os.getloadavg()[0])
        order = variants[i % len(variants) :] + variants[: i % len(variants)]
        for v in order:
            src = setups[v][0].resolve()
            config = src / "mtdense" / "configs" / f"{args.config}.yaml"
            r = _run(src, config, overrides[v], args)
            results[v].append(r)
            print(
                f"pass {i + 1} {v:<10} median {r['median']:.3f} s (min {r['min']:.3f}), CPU {r['cpu']:.3f} s/step, "
                f"first step {r['first']:.1f} s, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    loads.append(os.getloadavg()[0])
    best = {v: min(rs, key=lambda r: r["median"]) for v, rs in results.items()}
    best_cpu = {v: min(r["cpu"] for r in rs) for v, rs in results.items()}
    h, w = args.size
    lines = [
        f"`{args.config}` train step (forward + losses + balancer + backward + Adam step) on random data, "
        f"input 3×{h}×{w}, batch {args.batch}, fp32, {args.threads} threads, channels_last as configured; each "
        f"variant in a fresh process: {args.warmup} untimed steps, then the median (and fastest) of {args.repeats} "
        f"steps; best pass of {args.passes}, variants alternating (order rotated every pass). CPU: median "
        "process CPU time per step (all threads; least sensitive to other load), best pass. 1-minute load "
        f"average at the start of each pass and at the end: {', '.join(f'{x:.1f}' for x in loads)} on "
        f"{os.cpu_count()} cores shared with other jobs, so wall-clock figures carry that interference.",
        "",
        "| variant | code | wall s/step: median (fastest) | CPU s/step | first step s (compiles) "
        "| speed-up vs reference: wall | CPU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    ref = best.get("reference")
    if ref:
        lines.insert(1, f"\n*reference*: {args.reference_label}.")
    for v in variants:
        b = best[v]
        code = "reference tree" if v == "reference" else "this tree"
        sw = f"{ref['median'] / b['median']:.2f}×" if ref else "–"
        sc = f"{best_cpu['reference'] / best_cpu[v]:.2f}×" if ref else "–"
        lines.append(
            f"| {v} | {code}, {setups[v][1]} | {b['median']:.3f} ({b['min']:.3f}) | {best_cpu[v]:.3f} | "
            f"{b['first']:.1f} | {sw} | {sc} |"
        )
    if ref:
        lines += [
            "",
            f"Against the authors' implementation: the issue measured, on a quiet 2-core machine, "
            f"{ISSUE_AUTHORS_S} s for theirs and {ISSUE_OURS_S} s for the reference commit "
            f"({ISSUE_AUTHORS_S / ISSUE_OURS_S:.2f}×). "
            f"Reaching {TARGET_VS_AUTHORS}× needs {ISSUE_AUTHORS_S / TARGET_VS_AUTHORS:.2f} s, i.e. "
            f"{ISSUE_OURS_S * TARGET_VS_AUTHORS / ISSUE_AUTHORS_S:.2f}× faster than the reference. Scaled by the "
            "ratios above (an estimate: the authors' code was not run here): "
            + "; ".join(
                f"{v} {ISSUE_AUTHORS_S / (ISSUE_OURS_S * best[v]['median'] / ref['median']):.2f}× by wall clock, "
                f"{ISSUE_AUTHORS_S / (ISSUE_OURS_S * best_cpu[v] / best_cpu['reference']):.2f}× by CPU time"
                for v in variants
                if v != "reference"
            )
            + ".",
        ]
    body = "\n".join(lines)
    print(body)
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if not args.no_write:
        write_section("Train step side by side", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
