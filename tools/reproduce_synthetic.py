"""Rerun the MTI-Net Table 2a set (configs/synthetic/) on the synthetic benchmark and write docs/results.md.

Trains every config (single-task models first, they are the Δm baseline), for each seed, through the
same library calls as ``mtdense train``; finished runs (``results.json`` present) are reused, so the
script can be stopped and restarted. Example::

    python tools/reproduce_synthetic.py --seeds 0 1 2 --out runs/synthetic
    python tools/reproduce_synthetic.py --seeds 0 train.max_steps=300   # a shorter schedule

Overrides (``key=value``) apply to every config and are written into docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "mtdense" / "configs" / "synthetic"
STL = {"semseg": "stl_semseg_hrnet18s", "depth": "stl_depth_hrnet18s"}
MULTI = [
    ("MTL", "mtl_hrnet18s"),
    ("PAD-Net", "padnet_hrnet18s"),
    ("PAD-Net (N+E)", "padnet_hrnet18s_aux"),
    ("MTI-Net w/o FPM", "mtinet_hrnet18s_nofpm"),
    ("MTI-Net w/ FPM", "mtinet_hrnet18s"),
    ("MTI-Net w/ FPM (N+E)", "mtinet_hrnet18s_aux"),
]


def train(name: str, seed: int, out: Path, overrides: list[str]) -> dict:
    from mtdense.config import load_config
    from mtdense.engine.trainer import Trainer

    run = out / f"{name}_seed{seed}"
    if (run / "results.json").is_file():
        return json.loads((run / "results.json").read_text())
    if run.exists():
        import shutil

        shutil.rmtree(run)  # an unfinished run of this script
    cfg = load_config(CONFIGS / f"{name}.yaml", [*overrides, f"seed={seed}"])
    return Trainer(cfg, run, progress=False).train().results or {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "synthetic")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "results.md")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)

    from mtdense.metrics import multitask_delta

    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        baseline = {}
        for task, name in STL.items():
            res = train(name, seed, args.out, args.overrides)
            baseline[task] = res[task]
            print(f"seed {seed} {name}: {res[task]}", flush=True)
        rows.setdefault("Single task", []).append({**baseline, "delta_m": 0.0})
        for label, name in MULTI:
            res = train(name, seed, args.out, args.overrides)
            res = {t: res[t] for t in STL}
            res["delta_m"] = multitask_delta(res, baseline)
            rows.setdefault(label, []).append(res)
            print(f"seed {seed} {name}: Δm {res['delta_m']:+.2f}", flush=True)

    def cell(values: list[float], fmt: str) -> str:
        if len(values) == 1:
            return format(values[0], fmt)
        return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"

    lines = [
        "| method | Seg mIoU ↑ | Dep rmse ↓ | Δm % ↑ |",
        "|---|---|---|---|",
    ]
    for label, rs in rows.items():
        lines.append(
            f"| {label} | {cell([r['semseg']['mIoU'] for r in rs], '.2f')} | "
            f"{cell([r['depth']['rmse'] for r in rs], '.4f')} | {cell([r['delta_m'] for r in rs], '+.2f')} |"
        )
    command = "python tools/reproduce_synthetic.py " + " ".join(sys.argv[1:])
    table = "\n".join(lines)
    text = args.doc.read_text() if args.doc.exists() else "# Results\n"
    start, end = "<!-- table:synthetic-2a -->", "<!-- /table:synthetic-2a -->"
    block = f"{start}\nCommand: `{command}` (seeds {args.seeds})\n\n{table}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    args.doc.write_text(text)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
