"""Model speed on the CPU: median train step and inference of every registered architecture.

For each of ``stl``, ``mtl``, ``cross_stitch``, ``padnet`` and ``mtinet`` on HRNet-W18-small-v2 and
ResNet-18 (where the architecture supports the backbone), on the NYUD-MT tasks (semseg with 40
classes + depth as main tasks; edge + normals as auxiliary tasks for the architectures whose papers
use them, PAD-Net and MTI-Net), at 288×384 with batch 2 and 2 threads: the median train step
(forward + losses + balancer + backward + optimiser step) and the median inference pass, in fp32 and
under bf16 autocast, with channels_last on (the config default) and, for MTI-Net and PAD-Net, off.
``stl`` is timed once per main task and reported as the sum of the single-task models it replaces.

Configs come from ``configs/nyud/`` when the file exists (``mtinet_hrnet18s_aux.yaml``,
``padnet_hrnet18s_aux.yaml``, ``stl_<task>_hrnet18s.yaml``, ``<model>_hrnet18s.yaml``; see
:func:`_configs`), otherwise they are built here from the defaults with the settings above. The
timed input size, batch, threads and channels_last come from the command line, whatever the file
says. Architectures that are not registered are skipped and listed.

The reference figures are those of the issue: the authors' public implementation takes about 1.4 s
per train step for MTI-Net and 2.6 s for PAD-Net (HRNet-18, same input, this machine); the target is
a ≥ 1.5× faster fp32 train step.

Usage::

    python benchmarks/bench_models.py                 # everything, writes docs/benchmarks.md
    python benchmarks/bench_models.py --models mtinet --backbones hrnet_w18_small_v2 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402

from mtdense.engine.complexity import complexity_report  # noqa: E402
from mtdense.models import MODELS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALL_MODELS = ["stl", "mtl", "cross_stitch", "padnet", "mtinet"]
BACKBONES = {"hrnet_w18_small_v2": "hrnet18s", "resnet18": "resnet18"}
MAIN_TASKS = ["semseg", "depth"]
AUX_TASKS = ["edge", "normals"]
#: Architectures whose papers supervise auxiliary tasks (PAD-Net Sec. 3.1, MTI-Net Sec. 3.2).
USES_AUX = {"padnet", "mtinet"}
#: Train-step seconds of the authors' public implementation on this machine (from the issue), fp32.
REFERENCE_TRAIN_S = {("mtinet", "hrnet_w18_small_v2"): 1.4, ("padnet", "hrnet_w18_small_v2"): 2.6}
TARGET_SPEEDUP = 1.5
#: Our timing keys → the keys of :func:`complexity_report`.
TIMING_KEYS = {
    "train": "train_step_s",
    "infer": "infer_s",
    "train_min": "train_step_min_s",
    "infer_min": "infer_min_s",
}
#: The setting of the reference figures (input, batch, threads).
REFERENCE_SETTING = {"size": (288, 384), "batch": 2, "threads": 2}


@dataclass
class Row:
    model: str
    backbone: str
    tasks: str
    sources: list[str]
    params_m: float = float("nan")
    gflops: float = float("nan")
    #: (dtype, channels_last) → seconds {"train", "infer", "train_min", "infer_min"} (medians and minima)
    timings: dict[tuple[str, bool], dict[str, float]] = field(default_factory=dict)
    error: str | None = None


def _config(name: str, overrides: list[str]) -> tuple[str | None, list[str], str]:
    """``configs/nyud/<name>.yaml`` when it exists, else the defaults with ``overrides``."""
    path = ROOT / "configs" / "nyud" / f"{name}.yaml"
    if path.is_file():
        return str(path), [], str(path.relative_to(ROOT))
    return None, ["data.dataset=nyud_mt", *overrides], "built here"


def _configs(model: str, backbone: str) -> list[tuple[str | None, list[str], str]]:
    """``(config path or None, overrides, source)`` of each network to time (``stl``: one per task).

    Files: ``stl_<task>_<bb>.yaml``, ``<model>_<bb>_aux.yaml`` for the architectures that use
    auxiliary tasks, ``<model>_<bb>.yaml`` for the others (``<bb>`` = ``hrnet18s`` or ``resnet18``).
    """
    bb = BACKBONES[backbone]
    base = [f"model.name={model}", f"model.backbone.name={backbone}"]
    if model == "stl":
        return [
            _config(f"stl_{t}_{bb}", [*base, f"data.tasks=[{t}]", "data.aux_tasks=[]"]) for t in MAIN_TASKS
        ]
    aux = AUX_TASKS if model in USES_AUX else []
    tasks = [f"data.tasks=[{','.join(MAIN_TASKS)}]", f"data.aux_tasks=[{','.join(aux)}]"]
    return [_config(f"{model}_{bb}_aux" if aux else f"{model}_{bb}", [*base, *tasks])]


def bench(
    model: str, backbone: str, *, size: tuple[int, int], batch: int, repeats: int, warmup: int, cl_off: bool
) -> Row:
    """Time one architecture on one backbone (all variants); a failure is recorded in ``Row.error``."""
    configs = _configs(model, backbone)
    row = Row(model, backbone, "", [source for _, _, source in configs])
    variants = [(dtype, True) for dtype in ("fp32", "bf16")]
    if cl_off:
        variants += [(dtype, False) for dtype in ("fp32", "bf16")]
    params = gflops = 0.0
    for dtype, cl in variants:
        t = dict.fromkeys(TIMING_KEYS, 0.0)
        for path, overrides, _ in configs:
            r = complexity_report(
                path,
                overrides=[*overrides, f"train.channels_last={str(cl).lower()}", "train.threads=null"],
                size=size,
                batch=batch,
                time=True,
                bf16=dtype == "bf16",
                compare_stl=False,
                repeats=repeats,
                warmup=warmup,
            )
            t = {k: t[k] + r[key] for k, key in TIMING_KEYS.items()}
            if (dtype, cl) == variants[0]:
                params, gflops = params + r["params_m"], gflops + r["gflops"]
                tasks = ", ".join(r["tasks"]) + (f" (+{', '.join(r['aux_tasks'])})" if r["aux_tasks"] else "")
                row.tasks = (
                    tasks if len(configs) == 1 else " + ".join(filter(None, [row.tasks, f"stl({tasks})"]))
                )
        row.timings[(dtype, cl)] = t
        print(
            f"  {model:<13}{backbone:<20}{dtype} cl={cl!s:<5} train {_cell(t, 'train')} s  "
            f"infer {_cell(t, 'infer')} s",
            flush=True,
        )
    row.params_m, row.gflops = params, gflops
    return row


def _cell(t: dict[str, float] | None, what: str) -> str:
    """``"median (min)"`` seconds of ``what`` (``"train"`` or ``"infer"``)."""
    return "–" if t is None else f"{t[what]:.2f} ({t[what + '_min']:.2f})"


def _reference_setting(args: argparse.Namespace) -> bool:
    return (tuple(args.size), args.batch, args.threads) == tuple(REFERENCE_SETTING.values())


def markdown(
    rows: list[Row], skipped: list[str], *, args: argparse.Namespace, load: tuple[float, float]
) -> str:
    h, w = args.size
    lines = [
        f"Seconds: median (fastest) of {args.repeats} steps after {args.warmup} warm-up, "
        f"input 3×{h}×{w}, batch {args.batch}, "
        f"{args.threads} threads, random inputs and targets (`mtdense.engine.complexity.time_model`). "
        "Train step = forward + losses + balancer + backward + Adam step. "
        "NYUD-MT tasks: semseg (40 classes) + depth main; edge + normals auxiliary for PAD-Net and MTI-Net. "
        "`stl` is the sum of the two single-task "
        "networks. GFLOPs per image, multiply-add = 2 FLOPs (halve for GMACs).",
        "",
        f"**Timings are noisy**: this machine's 2 cores are shared with other engineers running tests "
        f"(1-minute load average {load[0]:.2f} at the start, {load[1]:.2f} at the end); medians damp but do "
        "not remove the interference; the fastest run is the least disturbed one.",
        "",
        "| model | backbone | tasks | params (M) | GFLOPs | channels_last | fp32 train (s) | fp32 infer (s) "
        "| bf16 train (s) | bf16 infer (s) | reference fp32 train (s) "
        "| fp32 train speed-up vs reference: median (fastest) |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.error:
            lines.append(f"| {row.model} | {row.backbone} | – | – | – | – | not run: {row.error} | | | | | |")
            continue
        # The reference was measured at 288×384, batch 2, 2 threads: no comparison at other settings.
        ref = REFERENCE_TRAIN_S.get((row.model, row.backbone)) if _reference_setting(args) else None
        for cl in (True, False):
            if ("fp32", cl) not in row.timings:
                continue
            fp32, bf16 = row.timings[("fp32", cl)], row.timings.get(("bf16", cl))
            speedup = "–"
            if ref:
                ratio = ref / fp32["train"]
                verdict = "meets" if ratio >= TARGET_SPEEDUP else "misses"
                speedup = f"{ratio:.2f}× ({ref / fp32['train_min']:.2f}×), {verdict} ≥ {TARGET_SPEEDUP}×"
            lines.append(
                f"| {row.model} | {row.backbone} | {row.tasks} | {row.params_m:.2f} | {row.gflops:.1f} | "
                f"{'on' if cl else 'off'} | {_cell(fp32, 'train')} | {_cell(fp32, 'infer')} | "
                f"{_cell(bf16, 'train')} | {_cell(bf16, 'infer')} | "
                f"{f'{ref:.1f}' if ref else '–'} | {speedup} |"
            )
    lines += [
        "",
        "Reference: the authors' public implementation, same model and input on this machine "
        "(figures from the issue: MTI-Net ≈ 1.4 s, PAD-Net ≈ 2.6 s per fp32 train step, HRNet-18); "
        "target ≥ 1.5× faster in fp32.",
    ]
    files = sorted({src for row in rows if not row.error for src in row.sources if src != "built here"})
    built = sorted({f"{row.model}/{row.backbone}" for row in rows if "built here" in row.sources})
    if files:
        lines.append(f"Config files: {', '.join(files)}.")
    if built:
        lines.append(f"Configs built by the script (defaults + the settings above): {', '.join(built)}.")
    if not _reference_setting(args):
        lines.append("No comparison with the reference: it was measured at 288×384, batch 2, 2 threads.")
    if skipped:
        lines.append(f"Skipped (not registered in `mtdense.models.MODELS`): {', '.join(skipped)}.")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=ALL_MODELS)
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--size", type=_size, default=(288, 384), help="HxW")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--cl-off", nargs="*", default=["mtinet", "padnet"], help="models also timed without channels_last"
    )
    p.add_argument(
        "--no-write", action="store_true", help="print the table instead of writing docs/benchmarks.md"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    load_start = os.getloadavg()[0]
    skipped = [m for m in args.models if m not in MODELS]
    rows: list[Row] = []
    t0 = time.perf_counter()
    for model in (m for m in args.models if m in MODELS):
        for backbone in args.backbones:
            try:
                rows.append(
                    bench(
                        model,
                        backbone,
                        size=args.size,
                        batch=args.batch,
                        repeats=args.repeats,
                        warmup=args.warmup,
                        cl_off=model in args.cl_off,
                    )
                )
            except Exception as e:  # one unsupported combination must not stop the others
                traceback.print_exc()
                rows.append(
                    Row(model, backbone, "", [], error=f"{type(e).__name__}: {str(e).splitlines()[0]}")
                )
    body = markdown(rows, skipped, args=args, load=(load_start, os.getloadavg()[0]))
    print(body)
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if not args.no_write:
        write_section("Model speed", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
