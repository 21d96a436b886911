"""The ``mtdense`` command line: argument parsing only; the work happens in the library.

Errors caused by the user (:class:`mtdense.errors.MtdenseError`) print ``error: <message>`` and exit
with code 2, without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from mtdense.errors import MtdenseError


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 192x256), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


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
        "TensorBoard events, checkpoints/last.pt, results.json).",
        epilog="Example:\n  mtdense train configs/demo.yaml --out runs/mtl --max-steps 200 train.lr=1e-3",
    )
    t.add_argument("config", help="YAML config file")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--max-steps", type=int, help="override train.max_steps")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")

    e = sub.add_parser(
        "eval",
        help="evaluate a trained run on a split",
        formatter_class=fmt,
        description="Evaluate a run directory or checkpoint; prints a metrics table and writes results JSON "
        "(RUN/results.json for the val split, RUN/results_<split>.json otherwise).",
        epilog="Example:\n  mtdense eval runs/mtl --split val --baseline runs/stl/results.json",
    )
    e.add_argument("run", help="run directory, checkpoint .pt or exported .safetensors")
    e.add_argument("--split", default="val")
    e.add_argument("--baseline", help="single-task results JSON for Δm (MTI-Net eq. 2)")
    e.add_argument("--data-root", help="dataset folder (default: the one in the run's config)")
    e.add_argument("--out", help="where to write the results JSON")

    pr = sub.add_parser(
        "predict",
        help="predict every task on any image(s)",
        formatter_class=fmt,
        description="Per image and task a coloured PNG and the raw .npy array, plus a side-by-side figure.",
        epilog="Example:\n  mtdense predict runs/mtl photo.jpg more_photos/ --out preds",
    )
    pr.add_argument("run", help="run directory, checkpoint .pt or exported .safetensors")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--max-side", type=int, default=1024, help="downscale larger photos to this longer side")

    x = sub.add_parser(
        "export",
        help="write release weights as safetensors",
        formatter_class=fmt,
        description="Write the model weights (no optimiser state) with the config as metadata; "
        "`predict` and `pretrained:` accept the file.",
        epilog="Example:\n  mtdense export runs/mtl --out mtl.safetensors",
    )
    x.add_argument("run", help="run directory or checkpoint")
    x.add_argument("--out", required=True, help="output .safetensors file")

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
    s.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")

    m = sub.add_parser(
        "demo",
        help="train and evaluate single-task and multi-task models on the synthetic benchmark",
        formatter_class=fmt,
        description="Render the synthetic benchmark, train the single-task models and the multi-task model of "
        "configs/demo.yaml, evaluate them, and write OUT/results.json, OUT/results.md and OUT/predictions.png.",
        epilog="Example:\n  mtdense demo --out runs/demo",
    )
    m.add_argument(
        "--config", default=None, help="demo config (default: configs/demo.yaml or the packaged one)"
    )
    m.add_argument("--out", default="runs/demo")
    m.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")

    c = sub.add_parser(
        "complexity",
        help="parameters, FLOPs and speed of a model",
        formatter_class=fmt,
        description="Parameters (total and per top-level module), forward GFLOPs per image, and with --time the "
        "median train-step and inference seconds; compares a multi-task model with the sum of its single-task "
        "models. Needs no dataset.",
        epilog="Example:\n  mtdense complexity configs/nyud/mtinet_hrnet18s.yaml --size 288x384 --time --json",
    )
    c.add_argument("config")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.add_argument("--size", type=_size, required=True, help="HxW")
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--time", action="store_true", help="also time train steps and inference")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument("--bf16", action="store_true", help="time under bf16 autocast")
    c.add_argument("--no-stl", action="store_true", help="skip the single-task comparison")
    return p


def cmd_train(args: argparse.Namespace) -> int:
    from mtdense.config import load_config
    from mtdense.engine.report import format_results
    from mtdense.engine.trainer import Trainer

    overrides = list(args.overrides) + ([f"train.max_steps={args.max_steps}"] if args.max_steps else [])
    cfg = load_config(args.config, overrides)
    result = Trainer(cfg, args.out, resume=args.resume).train()
    if result.results:
        print(format_results(result.results, title=f"results at step {result.step}"))
    print(f"run directory: {result.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mtdense.engine.evaluation import evaluate_run
    from mtdense.engine.report import format_results

    results, path = evaluate_run(
        args.run, split=args.split, baseline=args.baseline, data_root=args.data_root, out=args.out
    )
    print(format_results(results, title=f"{args.run} [{args.split}]"))
    print(f"wrote {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mtdense.engine.inference import find_images, load_run, predict_image, read_rgb, save_predictions

    run = load_run(args.run)
    images = find_images(args.images)
    out = Path(args.out)
    for path in tqdm(images, desc="predict", dynamic_ncols=True):
        rgb = read_rgb(path)
        save_predictions(run, path, rgb, predict_image(run, rgb, max_side=args.max_side), out)
    print(f"wrote predictions of {len(images)} image(s) to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mtdense.engine.inference import export_safetensors

    print(f"wrote {export_safetensors(args.run, args.out)}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from mtdense.data.synthetic import write_synthetic_dataset

    out = write_synthetic_dataset(
        args.out,
        train=args.train,
        val=args.val,
        size=args.size,
        seed=args.seed,
        family=args.family,
        progress=True,
        workers=args.workers,
    )
    print(f"wrote the synthetic {args.family} benchmark to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mtdense.engine.demo import run_demo

    run_demo(config=args.config, out=args.out, overrides=list(args.overrides))
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


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "export": cmd_export,
    "data": cmd_data,
    "demo": cmd_demo,
    "complexity": cmd_complexity,
}


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
