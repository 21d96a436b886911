"""Model speed on the CPU: median train step and inference of every registered architecture.

For each of ``stl``, ``mtl``, ``cross_stitch``, ``padnet`` and ``mtinet`` on HRNet-W18-small-v2 and
ResNet-18 (where the architecture supports the backbone), on the NYUD-MT tasks (semseg with 40
classes + depth as main tasks; edge + normals as auxiliary tasks for the architectures whose papers
use them, PAD-Net and MTI-Net), at 288×384 with batch 2 and 2 threads: the median train step
(forward + losses + balancer + backward + optimiser step) and the median inference pass, in fp32 and
under bf16 autocast, with channels_last on (the config default) and, for MTI-Net and PAD-Net, off;
MTI-Net and PAD-Net are also timed without the auxiliary tasks (channels_last on).
``stl`` is timed once per main task and reported as the sum of the single-task models it replaces.

Configs come from ``configs/nyud/`` when the file exists (``mtinet_hrnet18s_aux.yaml``,
``padnet_hrnet18s_aux.yaml``, ``stl_<task>_hrnet18s.yaml``, ``<model>_hrnet18s.yaml``; see
:func:`_configs`), otherwise they are built here from the defaults with the settings above. The
timed input size, batch, threads and channels_last come from the command line, whatever the file
says. Architectures that are not registered are skipped and listed.

The reference figures are those of the issues: the authors' public implementation takes 1.36 s per
train step for MTI-Net (issue 7: best of three passes alternating with ours on a quiet machine) and
about 2.6 s for PAD-Net (HRNet-18, same input, this machine); the target is a ≥ 1.5× faster fp32 train
step. A fixed reference figure compared with a step timed at another moment is only as good as the
two machine states agree; ``benchmarks/bench_train_step.py`` times versions side by side instead.

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
REFERENCE_TRAIN_S = {("mtinet", "hrnet_w18_small_v2"): 1.36, ("padnet", "hrnet_w18_small_v2"): 2.6}
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
    #: (dtype, channels_last) → per pass: seconds {"train", "infer", "train_min", "infer_min"} (median, min)
    timings: dict[tuple[str, bool], list[dict[str, float]]] = field(default_factory=dict)
    error: str | None = None


def _config(name: str, overrides: list[str]) -> tuple[str | None, list[str], str]:
    """``configs/nyud/<name>.yaml`` when it exists, else the defaults with ``overrides``."""
    path = ROOT / "src" / "mtdense" / "configs" / "nyud" / f"{name}.yaml"
    if path.is_file():
        return str(path), [], str(path.relative_to(ROOT))
    return None, ["data.dataset=nyud_mt", *overrides], "built here"


def _configs(model: str, backbone: str, *, aux: bool) -> list[tuple[str | None, list[str], str]]:
    """``(config path or None, overrides, source)`` of each network to time (``stl``: one per task).

    Files: ``stl_<task>_<bb>.yaml``, ``<model>_<bb>_aux.yaml`` with auxiliary tasks,
    ``<model>_<bb>.yaml`` without (``<bb>`` = ``hrnet18s`` or ``resnet18``).
    """
    bb = BACKBONES[backbone]
    base = [f"model.name={model}", f"model.backbone.name={backbone}"]
    if model == "stl":
        return [_config(f"stl_{t}_{bb}", [*base, f"data.tasks=[{t}]", "data.aux_tasks=[]"]) for t in MAIN_TASKS]
    aux_tasks = AUX_TASKS if aux else []
    tasks = [f"data.tasks=[{','.join(MAIN_TASKS)}]", f"data.aux_tasks=[{','.join(aux_tasks)}]"]
    return [_config(f"{model}_{bb}_aux" if aux else f"{model}_{bb}", [*base, *tasks])]


def bench_pass(
    row: Row,
    *,
    aux: bool,
    size: tuple[int, int],
    batch: int,
    repeats: int,
    warmup: int,
    cl_off: bool,
    compile_model: bool = False,
) -> None:
    """One pass over the variants of ``row`` (fp32 and bf16, channels_last on, and off when ``cl_off``):
    appends each variant's seconds to ``row.timings``; fills in params, GFLOPs and tasks."""
    configs = _configs(row.model, row.backbone, aux=aux)
    row.sources = [source for _, _, source in configs]
    variants = [(dtype, True) for dtype in ("fp32", "bf16")]
    if cl_off:
        variants += [(dtype, False) for dtype in ("fp32", "bf16")]
    params = gflops = 0.0
    names = []
    for dtype, cl in variants:
        t = dict.fromkeys(TIMING_KEYS, 0.0)
        for path, overrides, _ in configs:
            r = complexity_report(
                path,
                overrides=[
                    *overrides,
                    f"train.channels_last={str(cl).lower()}",
                    "train.threads=null",
                    f"train.compile={str(compile_model).lower()}",
                ],
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
                names.append(", ".join(r["tasks"]) + (f" (+{', '.join(r['aux_tasks'])})" if r["aux_tasks"] else ""))
        row.timings.setdefault((dtype, cl), []).append(t)
        print(
            f"  {row.model:<13}{row.backbone:<20}aux={aux!s:<6}{dtype} cl={cl!s:<6}"
            f"train {_cell(t, 'train')} s  infer {_cell(t, 'infer')} s",
            flush=True,
        )
    row.params_m, row.gflops = params, gflops
    row.tasks = names[0] if len(names) == 1 else " + ".join(f"stl({n})" for n in names)


def _best(passes: list[dict[str, float]] | None) -> dict[str, float] | None:
    """The lowest pass median and the fastest single step over all passes.

    Interference from other processes only ever adds time, so the least disturbed pass is the best
    estimate of the undisturbed median.
    """
    if not passes:
        return None
    return {k: min(p[k] for p in passes) for k in TIMING_KEYS}


def _cell(t: dict[str, float] | None, what: str) -> str:
    """``"median (min)"`` seconds of ``what`` (``"train"`` or ``"infer"``)."""
    return "–" if t is None else f"{t[what]:.2f} ({t[what + '_min']:.2f})"


def _reference_setting(args: argparse.Namespace) -> bool:
    return (tuple(args.size), args.batch, args.threads) == tuple(REFERENCE_SETTING.values())


def markdown(rows: list[Row], skipped: list[str], *, args: argparse.Namespace, load: list[float]) -> str:
    h, w = args.size
    lines = [
        f"Seconds: the lowest per-pass median of {args.repeats} steps (after {args.warmup} warm-up) over "
        f"{args.passes} passes over the whole table, and in parentheses the fastest single step. "
        f"Input 3×{h}×{w}, batch {args.batch}, {args.threads} threads, random inputs and targets "
        "(`mtdense.engine.complexity.time_model`). Train step = forward + losses + balancer + backward + Adam step. "
        "NYUD-MT tasks: semseg (40 classes) + depth main; edge + normals auxiliary where marked (+…). "
        "`stl` is the sum of the two single-task networks. GFLOPs per image, multiply-add = 2 FLOPs "
        f"(halve for GMACs). `train.compile={str(args.compile).lower()}` for every row, whatever the config says "
        "(`benchmarks/bench_train_step.py` compares compiled and eager steps).",
        "",
        "**Timings are noisy**: this machine's 2 cores are shared with other engineers running tests and "
        f"benchmarks (1-minute load average {', '.join(f'{x:.1f}' for x in load)} at the start of each pass "
        "and at the end). When the cores are oversubscribed, a 2-thread step can take 10–30× longer than "
        "undisturbed (OpenMP threads wait for each other at every parallel region), so single cells can be far "
        "off; interference only ever adds time, hence the lowest pass median and the fastest step.",
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
            fp32, bf16 = _best(row.timings[("fp32", cl)]), _best(row.timings.get(("bf16", cl)))
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
        "(figures from the issues: MTI-Net 1.36 s, PAD-Net ≈ 2.6 s per fp32 train step, HRNet-18, on a quiet machine: "
        "the speed-up column is only meaningful when this table ran on a quiet machine too); "
        "target ≥ 1.5× faster in fp32. The issue does not say whether the reference ran with the auxiliary "
        "tasks (the authors' repository has both `pad_net.yml` and `pad_net+edges_normals.yml`, likewise for "
        "MTI-Net), so both are timed and compared.",
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
    p.add_argument("--passes", type=int, default=3, help="passes over the whole matrix")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per pass")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per pass")
    p.add_argument("--cl-off", nargs="*", default=["mtinet", "padnet"], help="models also timed without channels_last")
    p.add_argument("--also-no-aux", nargs="*", default=["mtinet", "padnet"], help="models also timed without aux tasks")
    p.add_argument("--compile", action="store_true", help="time with train.compile=true (minutes per variant)")
    p.add_argument("--no-write", action="store_true", help="print the table instead of writing docs/benchmarks.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    load = []
    skipped = [m for m in args.models if m not in MODELS]
    t0 = time.perf_counter()
    runs = [(m, b, m in USES_AUX) for m in args.models if m in MODELS for b in args.backbones]
    # The issue does not say whether its reference used the auxiliary tasks (the authors' repository has
    # both configs): time PAD-Net and MTI-Net without them too, channels_last only.
    runs += [
        (m, b, False)
        for m in args.models
        if m in MODELS and m in USES_AUX and m in args.also_no_aux
        for b in args.backbones
    ]
    runs.sort(key=lambda r: (args.models.index(r[0]), args.backbones.index(r[1]), not r[2]))
    rows = [Row(model, backbone, "", []) for model, backbone, _ in runs]
    # Passes over the whole matrix, so that a period of heavy interference from other processes spoils
    # one pass of a cell rather than all of its samples.
    for i in range(args.passes):
        print(f"pass {i + 1}/{args.passes}", flush=True)
        load.append(os.getloadavg()[0])
        for row, (model, _, aux) in zip(rows, runs, strict=True):
            if row.error:
                continue
            try:
                bench_pass(
                    row,
                    aux=aux,
                    size=args.size,
                    batch=args.batch,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    cl_off=model in args.cl_off and aux == (model in USES_AUX),
                    compile_model=args.compile,
                )
            except Exception as e:  # one unsupported combination must not stop the others
                traceback.print_exc()
                row.error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    body = markdown(rows, skipped, args=args, load=[*load, os.getloadavg()[0]])
    print(body)
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if not args.no_write:
        write_section("Model speed", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
