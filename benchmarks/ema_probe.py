"""Does scoring an exponential moving average (EMA) of the weights shrink the seed-to-seed spread of Δm?
(issue 11 item 2; the study "Which protocol ranks the methods" in docs/results.md.)

``train RUN OUT`` retrains the run whose resolved config is ``RUN/config.yaml`` (a run folder of ``mtdense bench``)
into ``OUT`` exactly as the trainer does, and keeps, beside the weights it trains, one EMA of them per decay in
``DECAYS`` (updated after every optimiser step; weight averaging as in Polyak & Juditsky 1992, with the exponential
form timm's ``ModelEmaV2`` uses). At every evaluation from step 600 on, each EMA is scored as the run's own weights
are (``eval.precise_bn`` re-estimates the BN statistics for the averaged weights; the model's own state is restored
afterwards, so the training is the run's: the raw scores equal those of ``RUN``). One JSON line per evaluation goes
to ``OUT/ema.jsonl``: ``{"step", "raw": results, "<decay>": results, ...}``.

``summary ROOT --method M`` prints, per weight set (raw and each decay) and step, the references' mean ± std and
M's Δm (MTI-Net eq. 2, :func:`mtdense.metrics.multitask_delta`) against the same-seed references trained the same
way, mean ± std over the seeds found under ``ROOT/<name>/seed<S>``.

The probe is not an engine feature: the EMA did not help (docs/results.md), so the trainer has no option for it.

Usage (the study's probe: the references and MTI-Net (N+E) of the Table 2a protocol, three seeds)::

    for m in stl_semseg stl_depth mtinet_aux; do for s in 0 1 2; do
        OMP_NUM_THREADS=1 python benchmarks/ema_probe.py train \\
            runs/bench/2a-48x64-1000-val1000-pbn60/$m/seed$s runs/ema-probe/$m/seed$s; done; done
    python benchmarks/ema_probe.py summary runs/ema-probe --method mtinet_aux
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from mtdense.config.load import read_yaml, validate_config
from mtdense.engine.trainer import Trainer
from mtdense.metrics import multitask_delta
from mtdense.tasks import TASKS

DECAYS = (0.99, 0.995, 0.998)
FROM_STEP = 600


class EmaTrainer(Trainer):
    """The trainer, plus one EMA of the model's parameters per decay, scored at each evaluation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.emas = {d: {n: p.detach().clone().float() for n, p in self.model.named_parameters()} for d in DECAYS}

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        log = super().train_step(batch)
        with torch.no_grad():
            for d, ema in self.emas.items():
                for n, p in self.model.named_parameters():
                    ema[n].mul_(d).add_(p.detach().float(), alpha=1 - d)
        return log

    def run_eval(self) -> dict[str, dict[str, float]]:
        raw = super().run_eval()
        if self.step < FROM_STEP:
            return raw
        own = copy.deepcopy(self.model.state_dict())
        record: dict[str, Any] = {"step": self.step, "raw": raw}
        for d, ema in self.emas.items():
            with torch.no_grad():
                for n, p in self.model.named_parameters():
                    p.copy_(ema[n])
            record[str(d)] = super().run_eval()
            self.model.load_state_dict(own)
        with (self.out / "ema.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        return raw


def train(run: Path, out: Path) -> None:
    raw = read_yaml(run / "config.yaml")
    EmaTrainer(validate_config(raw, source=str(run / "config.yaml")), out, progress=False).train()


def _records(folder: Path) -> dict[int, dict[str, Any]]:
    lines = (folder / "ema.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


def _fmt(values: list[float], digits: int) -> str:
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summary(root: Path, method: str, refs: dict[str, str]) -> None:
    seeds = sorted(int(p.name[4:]) for p in (root / method).glob("seed*") if (p / "ema.jsonl").is_file())
    runs = {name: {s: _records(root / name / f"seed{s}") for s in seeds} for name in [method, *refs.values()]}
    steps = sorted(runs[method][seeds[0]])
    for key in ["raw", *map(str, DECAYS)]:
        for step in steps:
            base = {s: {t: runs[r][s][step][key][t] for t, r in refs.items()} for s in seeds}
            deltas = [multitask_delta(runs[method][s][step][key], base[s], tasks=list(refs)) for s in seeds]
            ref_cols = "  ".join(
                f"{t} {_fmt([runs[r][s][step][key][t][m] for s in seeds], 4 if m == 'rmse' else 2)}"
                for t, r in refs.items()
                for m in [TASKS[t].primary_metric.name]
            )
            per_seed = ", ".join(f"{d:+.2f}" for d in deltas)
            print(f"{key:>6} step {step:>5}  refs {ref_cols}  Δm {method} {_fmt(deltas, 2)} ({per_seed})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="retrain RUN into OUT, scoring EMAs of its weights")
    t.add_argument("run", type=Path)
    t.add_argument("out", type=Path)
    s = sub.add_parser("summary", help="Δm of METHOD per weight set and step, over seeds")
    s.add_argument("root", type=Path)
    s.add_argument("--method", required=True)
    args = p.parse_args()
    if args.command == "train":
        train(args.run, args.out)
    else:
        summary(args.root, args.method, {"semseg": "stl_semseg", "depth": "stl_depth"})


if __name__ == "__main__":
    main()
