"""Train-step time of small models with 1 and 2 intra-op threads, each setting in a fresh process.

On the 2-vCPU machine this project is developed on, a second OpenMP thread made small models at small
inputs slower, and in some processes (not reproducibly) up to 40x slower; this script measures it so that
configs can choose ``train.threads``. Each run: ``mtdense.engine.trainer.Trainer`` on the demo config's
synthetic data, 2 warm-up steps, then the mean of the next 6 steps; repeated ``--repeats`` times.

    python benchmarks/bench_threads.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

CHILD = r"""
import json, shutil, sys, tempfile, time, torch
from mtdense.config import load_config
from mtdense.engine.trainer import Trainer
threads, model, tasks = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = tempfile.mkdtemp()
cfg = load_config("demo", [f"model.name={model}", f"data.tasks=[{tasks}]", f"train.threads={threads}",
                                         "train.max_steps=100", "train.log_every=1000"])
tr = Trainer(cfg, out + "/run", progress=False)
tr.run_eval = lambda: {}
tr.save = lambda: None
tr.train(stop_after=2)
t0 = time.perf_counter(); tr.train(stop_after=8); dt = (time.perf_counter() - t0) / 6
shutil.rmtree(out)
print(json.dumps({"step_s": dt}))
"""

CASES = [("stl", "semseg"), ("mtl", "semseg,depth,normals,edge"), ("mtinet", "semseg,depth,normals,edge")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    root = Path(__file__).resolve().parents[1]
    rows = []
    for model, tasks in CASES:
        cells = []
        for threads in (1, 2):
            times = []
            for _ in range(args.repeats):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(threads), model, tasks],
                    cwd=root, capture_output=True, text=True, check=True,
                )
                times.append(json.loads(out.stdout.strip().splitlines()[-1])["step_s"])
            cells.append(" / ".join(f"{t:.2f}" for t in times))
            print(model, threads, times, flush=True)
        rows.append(f"| {model} | {tasks} | {cells[0]} | {cells[1]} |")
    body = (
        "Demo config (`configs/demo.yaml`: HRNet-W18-small-v2, 72×96, batch 8, bf16 autocast), seconds per train "
        f"step in {args.repeats} separate processes per setting (mean of steps 3–8 of each).\n\n"
        "| model | tasks | 1 thread (s) | 2 threads (s) |\n|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("Threads", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
