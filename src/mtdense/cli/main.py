"""The ``mtdense`` command line: argument parsing only; the work happens in the library.

Errors caused by the user (:class:`mtdense.errors.MtdenseError`) print ``error: <message>`` and exit
with code 2, without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from mtdense.errors import MtdenseError


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 192x256), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _device(text: str) -> str:
    import torch

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    return text


CONFIG_HELP = "YAML file, or the name of a packaged config (e.g. synthetic/mtinet_hrnet18s; see `mtdense configs`)"
DEVICE_HELP = "torch device (default: cuda when available, else cpu)"


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="mtdense",
        description="Multi-task dense scene understanding: PAD-Net, MTI-Net and baselines in PyTorch.",
        epilog="Example: mtdense demo   (renders the synthetic benchmark, trains, evaluates)",
        formatter_class=fmt,
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        formatter_class=fmt,
        description="Train the model of CONFIG into the run directory OUT (config.yaml, metrics.jsonl, "
        "TensorBoard events, checkpoints/last.pt, results.json).\n\n"
        "SIGTERM or Ctrl-C (SIGINT) lets the step in flight finish, checkpoints it and exits with 128 + the "
        "signal number (143 or 130); --resume then continues exactly where the run stopped. On resume the "
        "config may differ from the saved one only in train.max_steps, train.log_every, train.eval_every, "
        "train.checkpoint_every, data.num_workers and data.root (a dataset with the same meta.json).",
        epilog="Example:\n  mtdense train synthetic/mtinet_hrnet18s --out runs/mtl --max-steps 200 train.lr=1e-3",
    )
    t.add_argument("config", help=CONFIG_HELP)
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--max-steps", type=int, help="override train.max_steps")
    t.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoints/last.pt (same config, bitwise exact)"
    )
    t.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")

    e = sub.add_parser(
        "eval",
        help="evaluate a trained run on a split",
        formatter_class=fmt,
        description="Evaluate a run directory or checkpoint; prints a metrics table and writes a results JSON: "
        "RUN/eval/<split>.json (then <split>_2.json, ...: an earlier evaluation or the training's own "
        "RUN/results.json is never overwritten), or the new file --out.",
        epilog="Example:\n  mtdense eval runs/mtl --split val --baseline runs/stl/results.json",
    )
    e.add_argument("run", help="run directory, checkpoint .pt or exported .safetensors")
    e.add_argument("--split", default="val")
    e.add_argument("--baseline", help="single-task results JSON for Δm (MTI-Net eq. 2)")
    e.add_argument(
        "--data-root", help="dataset folder (default: the run config's data.val_data.root when set, else data.root)"
    )
    e.add_argument("--out", help="results JSON to write (a new file; its folder is created)")
    e.add_argument("--device", type=_device, help=DEVICE_HELP)
    e.add_argument(
        "--precise-bn",
        type=_positive_int,
        metavar="N",
        help="first re-estimate the BatchNorm statistics over the run's first N training batches, as training with "
        "eval.precise_bn=N does (the checkpoint is not modified)",
    )

    pr = sub.add_parser(
        "predict",
        help="predict every task on any image(s)",
        formatter_class=fmt,
        description="Per image and task a coloured PNG and the raw .npy array, plus a side-by-side figure "
        "(<stem>_all.png). Outputs are named by the image's file stem; two inputs with the same stem are refused.",
        epilog="Example:\n  mtdense predict runs/mtl photo.jpg more_photos/ --out preds",
    )
    pr.add_argument("run", help="run directory, checkpoint .pt or exported .safetensors")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--max-side", type=_positive_int, default=1024, help="downscale larger photos to this longer side")
    pr.add_argument("--device", type=_device, help=DEVICE_HELP)
    pr.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile (Inductor): a one-off compile (seconds to minutes), then faster "
        "images where docs/benchmarks.md says so; same outputs up to float rounding",
    )

    ex = sub.add_parser(
        "explain",
        help="draw a model's internal maps (e.g. TRL attention, PSD diffusion) on any image(s)",
        formatter_class=fmt,
        description="Ask the run's model for its explanation maps (the documented MultiTaskModel.explain hook: "
        "TRL's attention map M of every task-attentional module, PSD's responses before/after diffusion) and "
        "write, per image and map, a titled figure <stem>_<map>.png (input image + map with colour bar) and the "
        "raw <stem>_<map>.npy (k, h, w). A model without the hook is an error.",
        epilog="Example:\n  mtdense explain runs/trl photo.jpg --out explain",
    )
    ex.add_argument("run", help="run directory, checkpoint .pt or exported .safetensors")
    ex.add_argument("images", nargs="+", help="image files or folders")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--max-side", type=_positive_int, default=1024, help="downscale larger photos to this longer side")
    ex.add_argument("--device", type=_device, help=DEVICE_HELP)

    x = sub.add_parser(
        "export",
        help="export a trained model: safetensors weights, ONNX, torch.export program or TorchScript",
        formatter_class=fmt,
        description="Export the model of RUN. safetensors: the weights (no optimiser state) with the config as "
        "metadata; `predict` and `pretrained:` accept the file. onnx (opset 18, checked with onnx's checker; "
        "`predict` runs it with ONNX Runtime), exported (torch.export, .pt2) and torchscript (.ts): a graph of the "
        "final prediction of each main task (outputs named by task; raw head outputs) from RGB in [0, 1], traced at "
        "--size (default: the config's eval/crop size). Each file records the tasks, class names, input "
        "normalisation and each output's post-processing (key `mtdense`). Every graph is run after writing and "
        "compared with the PyTorch model; with --dynamic also at a second size.",
        epilog="Examples:\n  mtdense export runs/mtl --out mtl.safetensors\n"
        "  mtdense export runs/mtl --format onnx --dynamic --out mtl.onnx\n"
        "  mtdense predict mtl.onnx photo.jpg --out preds",
    )
    x.add_argument("run", help="run directory, checkpoint .pt or exported .safetensors")
    x.add_argument(
        "--format",
        default=None,
        help="safetensors, onnx, torchscript or exported (default: from the --out suffix, else safetensors)",
    )
    x.add_argument("--size", type=_size, default=None, help="HxW the graph is traced at (graph formats)")
    x.add_argument("--dynamic", action="store_true", help="batch, height and width free in the graph")
    x.add_argument("--out", default=None, help="output file (default RUN/export/model.<suffix>)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out file")

    d = sub.add_parser("data", help="dataset tools", description="Dataset tools.")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    s = dsub.add_parser(
        "synth",
        help="render the embedded synthetic benchmark",
        formatter_class=fmt,
        description="Render the procedural synthetic benchmark in the NYUD-MT layout (images/, segmentation/, "
        "depth/, normals/, edge/, gt_sets/, meta.json). Deterministic from --seed.",
        epilog="Example:\n  mtdense data synth data/synth --train 800 --val 200 --size 192x256 --family indoor",
    )
    s.add_argument("out", help="output folder")
    s.add_argument("--train", type=int, default=800)
    s.add_argument("--val", type=int, default=200)
    s.add_argument("--size", type=_size, default=(192, 256), help="HxW")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--family", choices=["indoor", "street"], default="indoor")
    s.add_argument(
        "--style",
        default="a",
        help="look of the images: camera, palette, textures, lighting, sensor (default a; b is a shifted domain "
        "with exact labels too)",
    )
    s.add_argument("--workers", type=int, default=None, help="render processes (default: min(2, CPU cores))")
    cv = dsub.add_parser("convert", help="convert official dataset files", description="Convert official files.")
    cvsub = cv.add_subparsers(dest="convert_dataset", required=True, metavar="DATASET")
    cn = cvsub.add_parser(
        "nyud",
        help="NYU Depth V2 labeled .mat + splits.mat -> NYUD-MT layout",
        formatter_class=fmt,
        description="Convert the official NYU Depth V2 files (nyu_depth_v2_labeled.mat, MATLAB v7.3; splits.mat) to "
        "the NYUD-MT layout: images, labels mapped 894 -> 40 (or 13) classes, depth in metres, normals (the Eigen "
        "release with --normals, else derived from depth), semantic edges, gt_sets/train.txt and val.txt, meta.json.",
        epilog="Example:\n  mtdense data convert nyud --mat nyu_depth_v2_labeled.mat --splits splits.mat \\\n"
        "      --out data/NYUD_MT",
    )
    cn.add_argument("--mat", required=True, help="nyu_depth_v2_labeled.mat")
    cn.add_argument("--splits", required=True, help="splits.mat (trainNdxs, testNdxs; 1-based)")
    cn.add_argument("--out", required=True, help="output folder (new, empty or a previous conversion)")
    cn.add_argument("--normals", default=None, help="Eigen & Fergus normals: DIR/normals/%%04d.png, DIR/masks/")
    cn.add_argument("--classes", type=int, choices=[40, 13], default=40, help="label protocol (default 40)")
    ck = dsub.add_parser(
        "check",
        help="verify a dataset and draw a few samples",
        formatter_class=fmt,
        description="Read every sample of every split of a dataset and check it (split counts, sizes, value ranges, "
        "label ids within the protocol, missing files); write a figure of a few samples with every target. "
        "Exits 2 when a problem is found.",
        epilog="Example:\n  mtdense data check data/NYUD_MT --dataset nyud_mt",
    )
    ck.add_argument("root", help="dataset folder")
    ck.add_argument("--dataset", default=None, help="registered dataset name (default: detected from the folder)")
    ck.add_argument("--figure", default=None, help="figure path (default ROOT/data_check.png)")
    ck.add_argument("--samples", type=int, default=4, help="samples in the figure")
    ck.add_argument("--limit", type=int, default=None, help="check only the first N samples of each split")

    m = sub.add_parser(
        "demo",
        help="train and evaluate single-task and multi-task models on the synthetic benchmark",
        formatter_class=fmt,
        description="Render the synthetic benchmark, train the single-task models and the multi-task model of "
        "the packaged config `demo`, evaluate them, and write OUT/results.json, OUT/results.md and "
        "OUT/predictions.png. The dataset goes to the config's data.root, relative to the current folder.",
        epilog="Example:\n  mtdense demo --out runs/demo",
    )
    m.add_argument(
        "--config", default=None, help="demo config: a YAML file or packaged name (default: the packaged `demo`)"
    )
    m.add_argument("--out", default="runs/demo")
    m.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="parallel training processes of one thread each (default 2, as `mtdense bench synthetic-demo --jobs 2`); "
        "1: one run after the other in this process with the config's train.threads",
    )
    m.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")

    c = sub.add_parser(
        "complexity",
        help="parameters, FLOPs and speed of a model",
        formatter_class=fmt,
        description="Parameters (total and per top-level module), forward GFLOPs per image, and with --time the "
        "median train-step and inference seconds; compares a multi-task model with the sum of its single-task "
        "models. Needs no dataset.",
        epilog="Example:\n  mtdense complexity nyud/mtinet_hrnet18s --size 288x384 --time --json",
    )
    c.add_argument("config", help=CONFIG_HELP)
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.add_argument("--size", type=_size, required=True, help="HxW")
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--time", action="store_true", help="also time train steps and inference")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument("--bf16", action="store_true", help="time under bf16 autocast")
    c.add_argument("--no-stl", action="store_true", help="skip the single-task comparison")

    b = sub.add_parser(
        "bench",
        help="train and evaluate a benchmark suite over seeds; mean ± std table and figures",
        formatter_class=fmt,
        description="Train the single-task references and then every method of SUITE (a packaged suite name, "
        "e.g. synthetic-2a, or a suite YAML) for every seed, evaluate them, and write OUT/results.json, "
        "OUT/results.md (mean ± std over seeds of each task's metric, Δm with its std, params, GFLOPs, "
        "train-step time) and OUT/figures/ (Δm vs GFLOPs, per-task bars, learning curves). A finished run is "
        "reused when its resolved config equals the one asked for; an unfinished one is resumed.",
        epilog="Example:\n  mtdense bench synthetic-2a --seeds 0 1 2 --jobs 2 --out runs/bench/2a train.max_steps=600",
    )
    b.add_argument("suite", help="packaged suite name (synthetic-2a, synthetic-trl, ...) or suite YAML file")
    b.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: the suite's)")
    b.add_argument("--jobs", type=_positive_int, default=1, help="parallel runs, one thread each (default 1)")
    b.add_argument("--out", default=None, help="output folder (default runs/bench/<suite>)")
    b.add_argument(
        "--methods", nargs="+", default=None, help="run only these methods of the suite (and the references they need)"
    )
    b.add_argument(
        "--task-sets",
        nargs="+",
        default=None,
        help="run only these task sets of the suite's methods expanded over task sets (e.g. sd sdn)",
    )
    b.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides for every run")

    an = sub.add_parser("analyze", help="analyses of datasets", description="Analyses of datasets.")
    ansub = an.add_subparsers(dest="analyze_command", required=True, metavar="ANALYSIS")
    af = ansub.add_parser(
        "affinity",
        help="cross-task agreement of label affinities vs kernel dilation (MTI-Net Fig. 2b)",
        formatter_class=fmt,
        description="On the label maps of a dataset, call each pixel pair of a 3x3 kernel at dilation d similar "
        "or not per task (semseg: same class; depth: relative difference below --depth-threshold; edge: no edge "
        "pixel between them), and measure how often the tasks agree as d grows (MTI-Net Fig. 2b). Writes "
        "OUT/affinity.json and OUT/affinity.png.",
        epilog="Example:\n  mtdense analyze affinity data/NYUD_MT --tasks semseg depth edge --dilations 1 2 4 8 16",
    )
    af.add_argument("root", help="dataset folder")
    af.add_argument("--dataset", default=None, help="registered dataset name (default: detected from the folder)")
    af.add_argument("--tasks", nargs="+", default=["semseg", "depth", "edge"], help="tasks (at least two)")
    af.add_argument("--dilations", type=_positive_int, nargs="+", default=[1, 2, 4, 8, 16], help="kernel dilations")
    af.add_argument("--split", default="val", help="dataset split (default val)")
    af.add_argument("--limit", type=_positive_int, default=None, help="only the first N images of the split")
    af.add_argument("--depth-threshold", type=float, default=0.1, help="relative depth difference of similar pairs")
    af.add_argument("--out", default=None, help="output folder (default ROOT/analysis)")

    sub.add_parser(
        "configs",
        help="list the configs shipped with the package",
        formatter_class=fmt,
        description="List the packaged configs by name, with the first comment line of each. A name goes "
        "wherever a CONFIG file does; data roots in them (e.g. data/synth_indoor_72x96) are relative to the "
        "current folder.",
        epilog="Example:\n  mtdense configs\n  mtdense train synthetic/mtinet_hrnet18s --out runs/mtinet",
    )
    return p


def cmd_train(args: argparse.Namespace) -> int:
    from mtdense.config import load_config
    from mtdense.engine.inference import check_output_folder
    from mtdense.engine.report import format_results
    from mtdense.engine.trainer import Trainer, TrainingInterrupted

    overrides = list(args.overrides) + ([f"train.max_steps={args.max_steps}"] if args.max_steps else [])
    cfg = load_config(args.config, overrides)
    check_output_folder(args.out)  # a file named like the run directory is an error, not a traceback
    try:
        result = Trainer(cfg, args.out, resume=args.resume).train()
    except TrainingInterrupted as e:  # checkpointed on SIGTERM/SIGINT: exit 128 + signal, as shells do
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if result.results:
        print(format_results(result.results, title=f"results at step {result.step}"))
    print(f"run directory: {result.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mtdense.engine.evaluation import evaluate_run
    from mtdense.engine.report import format_results

    results, path = evaluate_run(
        args.run,
        split=args.split,
        baseline=args.baseline,
        data_root=args.data_root,
        out=args.out,
        device=args.device,
        precise_bn=args.precise_bn,
    )
    print(format_results(results, title=f"{args.run} [{args.split}]"))
    print(f"wrote {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mtdense.engine.inference import (
        check_output_folder,
        find_images,
        load_run,
        pick_device,
        predict_image,
        read_rgb,
        save_predictions,
    )

    images = find_images(args.images)
    out = check_output_folder(args.out)
    if str(args.run).lower().endswith(".onnx"):  # an ONNX export runs with ONNX Runtime on the CPU
        from mtdense.engine.export import load_onnx_run

        if args.compile:
            raise MtdenseError(f"--compile applies to PyTorch models, not to the ONNX file {args.run}")
        run = load_onnx_run(args.run)
    else:
        run = load_run(args.run, device=pick_device(args.device))
    if args.compile:
        from mtdense.engine.compile import compile_for_inference

        run.model = compile_for_inference(run.model, device=next(run.model.parameters()).device)
    for path in tqdm(images, desc="predict", dynamic_ncols=True):
        rgb = read_rgb(path)
        save_predictions(run, path, rgb, predict_image(run, rgb, max_side=args.max_side), out)
    print(f"wrote predictions of {len(images)} image(s) to {out}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from mtdense.engine.explain import explain_images

    written = explain_images(args.run, args.images, args.out, max_side=args.max_side, device=args.device)
    print(f"wrote {len(written)} file(s) to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mtdense.engine.export import export_run, format_for_path

    fmt = args.format or (format_for_path(args.out) if args.out else None) or "safetensors"
    path = export_run(args.run, fmt=fmt, out=args.out, size=args.size, dynamic=args.dynamic, overwrite=args.overwrite)
    print(f"wrote {path} ({fmt}{', dynamic batch/height/width' if args.dynamic else ''})")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    return DATA_COMMANDS[args.data_command](args)


def cmd_data_convert(args: argparse.Namespace) -> int:
    from mtdense.data.nyud_convert import convert_nyud

    out = convert_nyud(args.mat, args.splits, args.out, normals=args.normals, classes=args.classes, progress=True)
    print(f"wrote NYUD-v2 ({args.classes} classes) in the NYUD-MT layout to {out}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from mtdense.data.check import check_dataset
    from mtdense.errors import DataError

    report = check_dataset(args.root, args.dataset, figure=args.figure, samples=args.samples, limit=args.limit)
    print(report.format())
    if not report.ok:
        raise DataError(f"{args.root}: {len(report.problems)} problem(s) found (listed above)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mtdense.data.synthetic import write_synthetic_dataset

    out = write_synthetic_dataset(
        args.out,
        train=args.train,
        val=args.val,
        size=args.size,
        seed=args.seed,
        family=args.family,
        style=args.style,
        progress=True,
        workers=args.workers,
    )
    print(f"wrote the synthetic {args.family} benchmark (style {args.style}) to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mtdense.engine.demo import run_demo

    run_demo(config=args.config, out=args.out, overrides=list(args.overrides), jobs=args.jobs)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from mtdense.engine.bench import run_bench

    run_bench(
        args.suite,
        out=args.out,
        seeds=args.seeds,
        jobs=args.jobs,
        overrides=list(args.overrides),
        methods=args.methods,
        task_sets=args.task_sets,
    )
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    return ANALYZE_COMMANDS[args.analyze_command](args)


def cmd_analyze_affinity(args: argparse.Namespace) -> int:
    from mtdense.engine.affinity import analyze_affinity

    result = analyze_affinity(
        args.root,
        dataset=args.dataset,
        tasks=args.tasks,
        dilations=args.dilations,
        split=args.split,
        limit=args.limit,
        depth_threshold=args.depth_threshold,
        out=args.out,
    )
    print(f"pairs matched across tasks (%) on {result['images']} image(s), by dilation {result['dilations']}:")
    for pair, values in result["pairs"].items():
        cells = "  ".join("–" if v is None else f"{100 * v:5.1f}" for v in values["agreement"])
        print(f"  {pair:<14} {cells}")
    out = args.out or f"{args.root}/analysis"
    print(f"wrote {out}/affinity.json and {out}/affinity.png")
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from mtdense.config import list_configs

    configs = list_configs()
    width = max(len(name) for name, _ in configs)
    for name, description in configs:
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_complexity(args: argparse.Namespace) -> int:
    from mtdense.engine.complexity import complexity_report, format_complexity

    report = complexity_report(
        args.config,
        overrides=list(args.overrides),
        size=args.size,
        batch=args.batch,
        time=args.time,
        bf16=args.bf16,
        compare_stl=not args.no_stl,
    )
    print(json.dumps(report, indent=2) if args.json else format_complexity(report))
    return 0


DATA_COMMANDS = {"synth": cmd_data_synth, "convert": cmd_data_convert, "check": cmd_data_check}

COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "explain": cmd_explain,
    "export": cmd_export,
    "data": cmd_data,
    "demo": cmd_demo,
    "complexity": cmd_complexity,
    "configs": cmd_configs,
    "bench": cmd_bench,
    "analyze": cmd_analyze,
}

ANALYZE_COMMANDS = {"affinity": cmd_analyze_affinity}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # overrides may stand anywhere (also after --out DIR), which one argparse pass cannot take
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return COMMANDS[args.command](args)
    except MtdenseError as e:
        if args.debug:
            raise
        print("error: " + textwrap.indent(str(e), "  ").lstrip(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
