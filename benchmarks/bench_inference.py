"""Inference speed of every registered architecture on the CPU, and what ``torch.compile`` buys (issue 12, items 7-8).

**Inference** (section "Inference speed" of ``docs/benchmarks.md``): images per second at batch 1 of one
representative NYUD-v2 config per architecture (:data:`CONFIGS`: the backbone of the architecture's paper or of
the MTI-Net comparison, Table 2a, where the two differ; override with ``--config ARCH=CONFIG``), at 288×384 and
480×640, random weights (``pretrained`` dropped: speed does not depend on the values) on a random image, for
four variants, each in a fresh process:

* ``fp32``: the eval-mode model as ``mtdense eval`` runs it (``torch.no_grad``, channels_last as the config says);
* ``bf16``: the same under ``torch.autocast(cpu, bfloat16)`` (``train.bf16`` at evaluation);
* ``compiled``: the model through :func:`mtdense.engine.compile.compile_for_inference`, what ``mtdense predict
  --compile`` does (Inductor, C++ kernels); the first call compiles and is reported apart: cold (pass 1, an
  empty Inductor cache made for this run) and cached (later passes, the on-disk cache of pass 1);
* ``onnx``: the model exported to ONNX as ``mtdense export --format onnx`` does (static size; :func:`_export_onnx`)
  and run by ONNX Runtime's CPU provider with as many intra-op threads as torch gets; export time apart.

**Train step with and without compile** (section "Train step with and without torch.compile", issue 12 item 7):
per architecture, the train step (forward, losses, balancer, backward, optimiser step, as
:meth:`Trainer.train_step`) on random data at ``--train-size`` (default 96×128) and batch ``--train-batch`` (2),
eager and with ``train.compile`` (:func:`mtdense.engine.compile.compile_for_training`); the first compiled step
compiles (cold / cached as above).

Method: ``--warmup`` untimed calls (the first one is timed on its own: it compiles), then the median of
``--repeats`` calls. Variants alternate over ``--passes`` passes (order rotated every pass); each keeps its best
pass (other load only ever adds time). The 1-minute load average is recorded at the start of each pass and at the
end. A variant that fails or exceeds ``--timeout`` (``--export-timeout`` for a process that has to export ONNX first)
is reported as such, is not tried again in later passes, and the run goes on. Each section is
written only by a run that measured it (``--no-train`` / ``--no-infer`` split the work).

Cost: the whole run (both sections, 2 passes) took 72 minutes on a quiet 2-core AMD EPYC with AVX512-BF16, of
which about 18 minutes were PSD's two ONNX exports and 21 minutes compiling train steps in pass 1 (cold cache);
pass 2 reuses the exported files and the Inductor cache of pass 1. Use ``--raw`` so that a killed run resumes.

Usage::

    python benchmarks/bench_inference.py --passes 2              # both sections, every architecture
    python benchmarks/bench_inference.py --passes 2 --no-train   # the inference table only
    python benchmarks/bench_inference.py --models mtl mtinet --sizes 96x128 --no-train --no-write  # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402

#: Architecture → the NYUD-v2 config timed for it, and why that one.
CONFIGS: dict[str, tuple[str, str]] = {
    "stl": ("nyud/stl_semseg_hrnet18s", "semseg single-task network of MTI-Net Table 2a"),
    "mtl": ("nyud/mtl_hrnet18s", "MTI-Net Table 2a shared-encoder baseline"),
    "cross_stitch": ("nyud/cross_stitch_hrnet18s", "HRNet-18s as the other Table 2a rows"),
    "padnet": ("nyud/padnet_hrnet18s", "MTI-Net Table 2a PAD-Net row"),
    "mtinet": ("nyud/mtinet_hrnet18s", "MTI-Net Table 2a, w/ FPM, semseg + depth"),
    "psd": ("nyud/psd_resnet18", "ResNet-18 of PSD's ablations (Table 6)"),
    "trl": ("nyud/trl_resnet18", "TRL Table 2 TRL-ResNet18"),
    "threeways": ("nyud/xtam_resnet101_sd", "DenseMTL (xTAM) Table 2 S-D, ResNet-101 as the paper"),
}
VARIANTS = ("fp32", "bf16", "compiled", "onnx")
TRAIN_VARIANTS = ("eager", "compiled")
SECTION = "Inference speed"
TRAIN_SECTION = "Train step with and without torch.compile"


# ------------------------------------------------------------------------------------------------ child side
def _export_onnx(*, cfg, model, tasks, meta: dict, size: tuple[int, int], path: Path) -> str:
    """Export ``model`` at ``size`` to ``path`` as ``mtdense export --format onnx`` does; returns how (for the report).

    Uses :func:`mtdense.engine.export.export_loaded` (its graph keeps the main tasks' outputs only, and the
    export time includes its check against the eager model in ONNX Runtime); where that module is missing
    (an older tree), ``torch.onnx.export``'s TorchScript exporter at opset 17 on the whole model.
    """
    import torch

    try:
        from mtdense.engine.export import ONNX_OPSET, export_loaded
        from mtdense.engine.inference import LoadedRun
    except ImportError:
        x = torch.rand(1, 3, *size)
        torch.onnx.export(model, (x,), str(path), opset_version=17, input_names=["image"], dynamo=False)
        return "torch.onnx.export (TorchScript exporter, opset 17, every output of the model)"
    run = LoadedRun(cfg=cfg, model=model, tasks=tasks, meta=meta, source=path)
    export_loaded(run, fmt="onnx", out=path, size=tuple(size))
    return f"`mtdense.engine.export.export_loaded` (torch.export-based exporter, opset {ONNX_OPSET}, main-task outputs)"


def _child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from mtdense._allocator import reuse_freed_memory
    from mtdense.config.load import load_config
    from mtdense.engine.setup import build_model_for, build_tasks

    reuse_freed_memory()  # as the trainer and the CLI do
    cfg = load_config(spec["config"], [])
    cfg.model.backbone.pretrained = None
    meta = {"num_classes": 40}  # NYUD-v2's 40 classes; no dataset is read
    tasks = build_tasks(cfg, meta)
    torch.manual_seed(0)
    model = build_model_for(cfg, tasks)
    cl = cfg.train.channels_last
    if cl:
        model = model.to(memory_format=torch.channels_last)
    info: dict = {}
    if spec["kind"] == "infer":
        model.eval()
        x = torch.rand(1, 3, *spec["size"], generator=torch.Generator().manual_seed(0))
        if spec["variant"] == "onnx":
            import onnxruntime as ort

            path = Path(spec["onnx_path"])
            if not path.is_file():
                t = time.perf_counter()
                info["exporter"] = _export_onnx(
                    cfg=cfg, model=model, tasks=tasks, meta=meta, size=tuple(spec["size"]), path=path
                )
                info["export_s"] = time.perf_counter() - t
            so = ort.SessionOptions()
            so.intra_op_num_threads = spec["threads"]
            so.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x.numpy()}

            def call() -> None:
                session.run(None, feed)

        else:
            forward = model
            if spec["variant"] == "compiled":
                from mtdense.engine.compile import CompiledForward, compile_for_inference

                forward = compile_for_inference(model, device=torch.device("cpu"))
                info["compiled"] = isinstance(forward, CompiledForward)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            bf16 = spec["variant"] == "bf16"

            def call() -> None:
                amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
                with torch.no_grad(), amp:
                    forward(x)

    else:
        from mtdense.engine.complexity import random_batch
        from mtdense.engine.setup import build_balancer, build_optimizer
        from mtdense.engine.trainer import compute_losses

        balancer = build_balancer(cfg, tasks)
        optimizer = build_optimizer(cfg, model, balancer)
        forward = model
        if spec["variant"] == "compiled":
            from mtdense.engine.compile import CompiledForward, compile_for_training

            forward = compile_for_training(model, device=torch.device("cpu"))
            info["compiled"] = isinstance(forward, CompiledForward)
        data = random_batch(tasks, batch=spec["batch"], size=tuple(spec["size"]))
        image = data["image"].contiguous(memory_format=torch.channels_last) if cl else data["image"]
        model.train()

        def call() -> None:
            losses = compute_losses(forward(image), data, tasks)
            total, _ = balancer(losses)
            optimizer.zero_grad(set_to_none=True)
            balancer.backward(total, losses, model=model)
            optimizer.step()

    walls, cpus = [], []
    for _ in range(spec["warmup"] + spec["repeats"]):
        t, c = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return {"walls": walls, "cpus": cpus, **info}


# ----------------------------------------------------------------------------------------------- parent side
def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 288x384), got {text!r}") from None
    return h, w


def _run_child(spec: dict, *, timeout: float, env: dict[str, str]) -> dict:
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
        return {"error": (lines[-1] if lines else f"exit code {out.returncode}")[:160]}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    timed_w, timed_c = r["walls"][spec["warmup"] :], r["cpus"][spec["warmup"] :]
    return {
        **{k: v for k, v in r.items() if k not in ("walls", "cpus")},
        "median": statistics.median(timed_w),
        "cpu": statistics.median(timed_c),
        "first": r["walls"][0],
    }


def _best(results: list[dict]) -> dict | None:
    ok = [r for r in results if "error" not in r]
    return min(ok, key=lambda r: r["median"]) if ok else None


def _cell_rate(results: list[dict]) -> str:
    b = _best(results)
    if b is None:
        return f"failed: {results[-1]['error']}".replace("|", "/") if results else "–"
    if b.get("compiled") is False:
        return "not compiled (see log)"
    return f"{1 / b['median']:.2f}"


def _first_calls(results: list[dict]) -> str:
    """The first call (compiles) of pass 1 (cold cache) and the fastest of later passes (cached), minus a step."""
    ok = [r for r in results if "error" not in r and r.get("compiled", True)]
    if not ok:
        return "–"
    cold = ok[0]["first"] - ok[0]["median"]
    rest = [r["first"] - r["median"] for r in ok[1:]]
    return f"{cold:.0f}" + (f" / {min(rest):.0f}" if rest else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--models", nargs="+", help="architectures (default: every registered one)")
    p.add_argument("--config", nargs="+", default=[], metavar="ARCH=CONFIG", help="time another config for ARCH")
    p.add_argument("--sizes", nargs="+", type=_size, default=[(288, 384), (480, 640)], help="HxW")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--train-size", type=_size, default=(96, 128), help="HxW of the train-step comparison")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--no-train", action="store_true", help="skip the train-step comparison (its own section)")
    p.add_argument("--no-infer", action="store_true", help="only the train-step comparison")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per process")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per process (the first compiles)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per process before it is given up")
    p.add_argument(
        "--export-timeout", type=float, help="seconds for a process that exports ONNX first (default: --timeout)"
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument(
        "--raw",
        type=Path,
        help="append every process's result to this JSON-lines file as it ends, and reuse the ones it already "
        "holds for the same pass, architecture, size, variant and setting (a killed run resumes where it stopped)",
    )
    p.add_argument(
        "--scratch",
        type=Path,
        help="keep the exported ONNX files and the Inductor cache here (kept afterwards; with --raw, a resumed run "
        "finds the cache its interrupted run warmed); default: a temporary folder removed at the end",
    )
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    if args.warmup < 1 or args.repeats < 1 or args.passes < 1:
        p.error("--warmup, --repeats and --passes must be at least 1")
    if args.no_train and args.no_infer:
        p.error("--no-train and --no-infer leave nothing to measure")

    from mtdense.config.load import resolve_config
    from mtdense.models import MODELS

    configs = {m: c for m, (c, _) in CONFIGS.items()}
    why = {m: w for m, (_, w) in CONFIGS.items()}
    for item in args.config:
        arch, _, name = item.partition("=")
        if arch not in MODELS or not name:
            p.error(f"--config: expected ARCH=CONFIG with ARCH one of {', '.join(MODELS)}, got {item!r}")
        configs[arch], why[arch] = name, "chosen on the command line"
    models = args.models or list(MODELS)
    unknown = [m for m in models if m not in MODELS]
    missing = [m for m in models if m in MODELS and m not in configs]
    if unknown or missing:
        p.error(
            f"--models: {unknown or missing} {'not registered' if unknown else 'have no config here'} "
            f"(registered: {', '.join(MODELS)}; give a config with --config ARCH=CONFIG)"
        )
    paths = {m: str(resolve_config(configs[m])) for m in models}

    # a SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C: the running child is killed and the scratch folder removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="mtdense_bench_inference_"))
    scratch.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        TORCHINDUCTOR_CACHE_DIR=str(scratch / "inductor"),  # empty at the start: pass 1 compiles cold
    )
    jobs = [] if args.no_infer else [("infer", m, size) for m in models for size in args.sizes]
    if not args.no_train:
        jobs += [("train", m, args.train_size) for m in models]
    results: dict[tuple, list[dict]] = {}
    loads: list[float] = []
    done: dict[str, dict] = {}
    reused = 0
    if args.raw and args.raw.is_file():
        for line in args.raw.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["key"]] = row["result"]
    t0 = time.perf_counter()
    try:
        for i in range(args.passes):
            loads.append(os.getloadavg()[0])
            for kind, m, size in jobs:
                variants = list(args.variants) if kind == "infer" else list(TRAIN_VARIANTS)
                k = i % len(variants)
                for v in variants[k:] + variants[:k]:
                    spec = {
                        "kind": kind,
                        "variant": v,
                        "config": paths[m],
                        "size": list(size),
                        "batch": args.train_batch,
                        "threads": args.threads,
                        "warmup": args.warmup,
                        "repeats": args.repeats,
                        "onnx_path": str(scratch / f"{m}_{size[0]}x{size[1]}.onnx"),
                    }
                    key = json.dumps(
                        [
                            i,
                            kind,
                            m,
                            configs[m],
                            list(size),
                            v,
                            args.threads,
                            args.warmup,
                            args.repeats,
                            args.train_batch,
                        ]
                    )
                    r = done.get(key)
                    reused += r is not None
                    earlier = results.get((kind, m, tuple(size), v), [])
                    if r is None and earlier and "error" in earlier[-1]:
                        r = {"error": earlier[-1]["error"], "not_retried": True}  # deterministic: not paid again
                    if r is None:
                        exporting = v == "onnx" and not Path(spec["onnx_path"]).is_file()
                        limit = args.export_timeout if exporting and args.export_timeout else args.timeout
                        r = _run_child(spec, timeout=limit, env=env)
                        r["load_after"] = os.getloadavg()[0]
                        if args.raw:
                            with args.raw.open("a") as f:
                                f.write(json.dumps({"key": key, "result": r}) + "\n")
                    results.setdefault((kind, m, tuple(size), v), []).append(r)
                    what = f"error: {r['error']}" if "error" in r else f"{r['median']:.3f} s, first {r['first']:.1f} s"
                    print(
                        f"pass {i + 1} {kind} {m} {size[0]}x{size[1]} {v}: {what} "
                        f"(load {os.getloadavg()[0]:.1f}, {time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
        loads.append(os.getloadavg()[0])
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    seconds = time.perf_counter() - t0
    setting = (
        f"per process {args.warmup} untimed call(s) then the median of {args.repeats}; best of {args.passes} "
        "alternating passes (variant order rotated every pass); compile: seconds of the first call beyond a normal "
        "one, cold (pass 1, empty Inductor cache) / cached (later passes, on-disk cache of pass 1). 1-minute load "
        f"average at the start of each pass and at the end: {', '.join(f'{x:.1f}' for x in loads)} on "
        f"{os.cpu_count()} cores; wall time of the whole run {seconds / 60:.0f} min."
    )
    if reused:
        after = [r["load_after"] for rs in results.values() for r in rs if "load_after" in r]
        setting += (
            f" Resumed run: {reused} of the measurements were taken by an earlier, interrupted run of this command and "
            f"read back from `--raw` (1-minute load average after each measurement: "
            f"{min(after):.1f}-{max(after):.1f})."
            if after
            else ""
        )
    footer = "Configs (why this one): " + "; ".join(f"{m}: `{configs[m]}` ({why[m]})" for m in models) + "."
    for name, report, skip in (
        (SECTION, _infer_report, args.no_infer),
        (TRAIN_SECTION, _train_report, args.no_train),
    ):
        if skip:
            continue
        body = f"{report(args, models, configs, results, setting)}\n\n{footer}"
        print(body)
        if not args.no_write:
            write_section(name, body)
    return 0


def _infer_report(args, models, configs, results, setting: str) -> str:
    def get(m: str, size, v: str) -> list[dict]:
        return results.get(("infer", m, tuple(size), v), [])

    exporters = {r["exporter"] for rs in results.values() for r in rs if "exporter" in r}
    lines = [
        f"Images per second at batch 1 (higher is better), {args.threads} threads, random weights and image; "
        "fp32: eval mode under `torch.no_grad`, channels_last as the config says; bf16: the same under "
        "`torch.autocast('cpu', torch.bfloat16)`; compiled: `mtdense.engine.compile.compile_for_inference` (what "
        f"`mtdense predict --compile` runs); ONNX Runtime: CPU provider, {args.threads} intra-op threads, the model "
        f"exported by {', '.join(sorted(exporters)) or 'torch.onnx.export'}; {setting}",
        "",
    ]
    for size in args.sizes:
        h, w = size
        lines += [
            f"**{h}×{w}**",
            "",
            "| architecture | config | fp32 img/s | bf16 img/s | compiled img/s | compile s (cold / cached) "
            "| ONNX Runtime img/s | ONNX export s |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in models:
            onnx = [r for r in get(m, size, "onnx") if "export_s" in r]
            cells = [
                _cell_rate(get(m, size, "fp32")) if "fp32" in args.variants else "–",
                _cell_rate(get(m, size, "bf16")) if "bf16" in args.variants else "–",
                _cell_rate(get(m, size, "compiled")) if "compiled" in args.variants else "–",
                _first_calls(get(m, size, "compiled")),
                _cell_rate(get(m, size, "onnx")) if "onnx" in args.variants else "–",
                f"{onnx[0]['export_s']:.0f}" if onnx else "–",
            ]
            lines.append(f"| {m} | `{configs[m]}` | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def _train_report(args, models, configs, results, setting: str) -> str:
    th, tw = args.train_size
    lines = [
        f"Train step (forward + losses + balancer + backward + optimiser step, as `Trainer.train_step`) on random "
        f"data at {th}×{tw}, batch {args.train_batch}, fp32, {args.threads} threads: eager and with `train.compile` "
        f"(`mtdense.engine.compile.compile_for_training`), seconds per step (lower is better); {setting}",
        "",
        "| architecture | config | eager s/step | compiled s/step | compiled speed-up | compile s (cold / cached) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in models:
        eager, compiled = (
            results.get(("train", m, tuple(args.train_size), "eager"), []),
            results.get(("train", m, tuple(args.train_size), "compiled"), []),
        )
        e, c = _best(eager), _best(compiled)
        ok = c is not None and c.get("compiled", True)
        speed = f"{e['median'] / c['median']:.2f}×" if e and ok else "–"
        e_cell = f"{e['median']:.3f}" if e else _cell_rate(eager)
        c_cell = f"{c['median']:.3f}" if ok else _cell_rate(compiled)
        lines.append(f"| {m} | `{configs[m]}` | {e_cell} | {c_cell} | {speed} | {_first_calls(compiled)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
