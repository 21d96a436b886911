"""Peak memory and time of one PSD layer (forward + backward) against the number of pixels, ours vs. dense.

PSD (Zhou et al., CVPR 2020, Sec. 3.3) claims ``O(l^2 T |V| C)`` time and ``O(l^2 |V| C)`` memory for its
graphlet diffusion, against ``O(|V|^2 C)`` memory for a dense affinity over all pixels. This script measures
both on the same input:

* **ours**: :class:`mtdense.models.psd.PSDLayer` (intra- then inter-task PSD for three tasks), whose window
  affinities are ``l*l`` shifted maps and never form a ``|V| x |V|`` matrix;
* **dense**: the same layer, with the same parameters, computed with dense ``|V| x |V|`` affinity matrices
  (the window of Eq. 1 as a mask over all pixel pairs, Eq. 6 and Eq. 8 as matrix products). Before any
  measurement the script checks that both give the same output on a small input.

Each measurement runs in a fresh process (so one point's memory cannot hide in another's): peak memory is
the rise of the process's resident-set high-water mark during one forward + backward pass, from the
resident size just before it (``MALLOC_MMAP_THRESHOLD_`` is lowered so that freed tensors leave the
process at once); time is the median of ``--repeats`` passes, the first being the measured one. Dense
points whose affinities alone would exceed ``--dense-cap-mb`` are not run; for those the table gives the
computed size of the dense affinities (``3 |V|^2`` float32 values, one matrix per task), a lower bound.

    python benchmarks/bench_psd.py                    # writes its section of docs/benchmarks.md
    python benchmarks/bench_psd.py --sizes 16 32 --no-write
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

TASKS = ("semseg", "depth", "normals")


# ----------------------------------------------------------------------------------------------
# The dense reference (benchmark only)
# ----------------------------------------------------------------------------------------------
def dense_affinity(x, size: int, sigma2: float):  # noqa: ANN001, ANN201 - torch imported in the worker
    """``(B, C, H, W) -> (B, |V|, |V|)``: Eq. 1 for every pixel pair inside the ``size x size`` window
    (channel-summed squared distance), zero elsewhere, rows normalised (Eq. 4)."""
    import torch

    _, _, h, w = x.shape
    f = x.flatten(2).transpose(1, 2)  # (B, V, C)
    sq = f.square().sum(-1)
    d2 = (sq[:, :, None] + sq[:, None, :] - 2 * f @ f.transpose(1, 2)).clamp_min(0)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    r = size // 2
    window = ((ys[:, None] - ys[None, :]).abs() <= r) & ((xs[:, None] - xs[None, :]).abs() <= r)
    a = torch.exp(d2 / -sigma2) * window
    return a / a.sum(-1, keepdim=True)


def dense_propagate(x, a):  # noqa: ANN001, ANN201
    """``sum_q A_pq x_q`` as a matrix product: ``(B, C, H, W), (B, V, V) -> (B, C, H, W)``."""
    return (x.flatten(2) @ a.transpose(1, 2)).view_as(x)


def dense_forward(layer, feats):  # noqa: ANN001, ANN201
    """:class:`PSDLayer`'s forward with dense ``|V| x |V|`` affinities and the layer's own parameters."""
    import torch

    aff = {t: dense_affinity(feats[t], layer.graphlet_size, layer.sigma2) for t in layer.tasks}
    x = {}
    for t in layer.tasks:
        intra, v, states = layer.intra[t], feats[t], []
        for _ in range(intra.steps):
            v = v + intra.beta * dense_propagate(v, aff[t])
            states.append(v)
        x[t] = intra.relu(intra.fuse(torch.cat(states, dim=1)))
    out = {}
    for s in layer.tasks:
        inter = layer.inter[s]
        combined = 0
        for d in layer.tasks:
            if d != s:
                prod = aff[s] * aff[d]
                combined = combined + inter.beta * prod / prod.sum(-1, keepdim=True)
        diffused = x[s] + dense_propagate(x[s], combined)
        out[s] = inter.relu(inter.fuse(torch.cat([x[s], diffused], dim=1)))
    return out


# ----------------------------------------------------------------------------------------------
# One measurement (in a fresh process)
# ----------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(method: str, side: int, channels: int, repeats: int) -> dict[str, float]:
    import time

    import torch

    from mtdense.models.psd import PSDLayer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = PSDLayer(TASKS, channels, graphlet_size=3, steps=9)
    forward = layer if method == "ours" else (lambda feats: dense_forward(layer, feats))

    def run(s: int) -> None:
        feats = {t: torch.rand(1, channels, s, s, requires_grad=True) for t in TASKS}
        out = forward(feats)
        sum(o.sum() for o in out.values()).backward()
        layer.zero_grad(set_to_none=True)

    run(4)  # warm-up: kernels, parameter gradients
    feats = {t: torch.rand(1, channels, side, side, requires_grad=True) for t in TASKS}
    before, hwm_before = _rss_bytes(), _hwm_bytes()
    t0 = time.perf_counter()
    out = forward(feats)
    sum(o.sum() for o in out.values()).backward()
    times = [time.perf_counter() - t0]
    hwm_after = _hwm_bytes()
    del out, feats
    layer.zero_grad(set_to_none=True)
    for _ in range(repeats - 1):
        feats = {t: torch.rand(1, channels, side, side, requires_grad=True) for t in TASKS}
        t0 = time.perf_counter()
        out = forward(feats)
        sum(o.sum() for o in out.values()).backward()
        times.append(time.perf_counter() - t0)
        del out, feats
        layer.zero_grad(set_to_none=True)
    return {
        "peak_mb": (hwm_after - before) / 2**20,
        "resolution_mb": max(0, hwm_before - before) / 2**20,  # rises below this are not seen
        "time_ms": 1000 * statistics.median(times),
    }


def check_dense_matches(channels: int) -> float:
    """Largest absolute difference between ours and the dense layer on a 9x11 input, in float64."""
    import torch

    from mtdense.models.psd import PSDLayer

    torch.manual_seed(0)
    layer = PSDLayer(TASKS, channels, graphlet_size=3, steps=9).double()
    feats = {t: torch.rand(1, channels, 9, 11, dtype=torch.float64) for t in TASKS}
    with torch.no_grad():
        ours, dense = layer(feats), dense_forward(layer, feats)
    return max((ours[t] - dense[t]).abs().max().item() for t in TASKS)


def measure(method: str, side: int, channels: int, repeats: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, __file__, "--worker", method, str(side), str(channels), str(repeats)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _slope(points: list[tuple[int, float]]) -> float | None:
    """Log-log slope between the two largest points (1: linear in |V|, 2: quadratic)."""
    pts = [(v, y) for v, y in points if y > 0]
    if len(pts) < 2:
        return None
    (v0, y0), (v1, y1) = pts[-2], pts[-1]
    return math.log(y1 / y0) / math.log(v1 / v0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 48, 64, 96, 128])
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1, help="passes timed per point (median)")
    p.add_argument("--dense-cap-mb", type=float, default=100.0, help="largest dense affinity set to run")
    p.add_argument("--no-write", action="store_true", help="print only, do not touch docs/benchmarks.md")
    p.add_argument("--worker", nargs=4, metavar=("METHOD", "SIDE", "CHANNELS", "REPEATS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        method, side, channels, repeats = args.worker
        print(json.dumps(worker(method, int(side), int(channels), int(repeats))))
        return 0

    diff = check_dense_matches(args.channels)
    if diff > 1e-6:
        raise SystemExit(f"dense reference disagrees with PSDLayer: max |diff| = {diff:.3g}")
    load = [os.getloadavg()[0]]
    rows, ours_mem, dense_mem, ours_t, dense_t, resolution = [], [], [], [], [], []
    for side in args.sizes:
        v = side * side
        dense_aff_mb = len(TASKS) * v * v * 4 / 2**20
        ours = measure("ours", side, args.channels, args.repeats)
        ours_mem.append((v, ours["peak_mb"]))
        ours_t.append((v, ours["time_ms"]))
        resolution.append(ours["resolution_mb"])
        if dense_aff_mb <= args.dense_cap_mb:
            dense = measure("dense", side, args.channels, args.repeats)
            dense_mem.append((v, dense["peak_mb"]))
            dense_t.append((v, dense["time_ms"]))
            resolution.append(dense["resolution_mb"])
            dense_cells = f"{dense['time_ms']:.0f} | {dense['peak_mb']:.1f}"
        else:
            dense_cells = "not run | not run"
        rows.append(
            f"| {side}x{side} | {v} | {ours['time_ms']:.0f} | {ours['peak_mb']:.1f} | {dense_cells} | "
            f"{dense_aff_mb:,.1f} |"
        )
        print(rows[-1], flush=True)
        load.append(os.getloadavg()[0])

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    body = f"""One PSD layer (`mtdense.models.psd.PSDLayer`: intra-task PSD with T = 9 iterations, then inter-task
PSD, for three tasks), 3x3 graphlets, C = {args.channels} channels, batch 1, float32, forward + backward, one
thread, each point in a fresh process. "ours" never forms a |V| x |V| matrix; "dense" is the same layer with
the same parameters on dense |V| x |V| affinities (checked equal to ours before measuring: max |diff| =
{diff:.1e} in float64). Peak: rise of the resident-set high-water mark over one pass; time: median of
{args.repeats} pass(es). Dense points whose affinities alone exceed
{args.dense_cap_mb:.0f} MB were not run; the last column is that computed size (3 |V|^2 float32), a lower
bound on what the dense layer needs. Load average (1 min) during the run: {min(load):.1f}-{max(load):.1f} on
{os.cpu_count()} cores shared with other jobs, so times are noisy; memory is not affected. (A rise is seen only
above the gap between the process's earlier high-water mark and its resident size before the pass: at most
{max(resolution):.1f} MB here.)

| input | pixels \\|V\\| | ours ms | ours peak MB | dense ms | dense peak MB | dense affinities MB (computed) |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Growth between the two largest measured points (log-log slope; 1 = linear, 2 = quadratic): ours memory
{fmt(_slope(ours_mem))}, time {fmt(_slope(ours_t))}; dense memory {fmt(_slope(dense_mem))}, time
{fmt(_slope(dense_t))}. Ours is the line the paper promises (O(l^2 T |V| C) time, O(l^2 |V| C) memory); the
dense affinity is the parabola.
"""
    print(body)
    if not args.no_write:
        write_section("PSD layer: graphlet vs. dense affinity", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
