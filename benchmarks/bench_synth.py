"""Throughput of the synthetic benchmark generator, and where its time goes.

For each family: images per second of :func:`write_synthetic_dataset` end to end (rendering plus
writing the five files per image, with a pool of ``--workers`` processes, wall clock, pool start-up
included), then a per-stage breakdown of the CPU time of one image, measured in this process.
Writes the section "Synthetic data generation" of ``docs/benchmarks.md``.

Usage: ``python benchmarks/bench_synth.py [--n 400] [--size 192x256] [--workers 1 2]``
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

from mtdense.data._io import encode_png  # noqa: E402
from mtdense.data.synthetic import make_scene, render_scene, write_synthetic_dataset  # noqa: E402
from mtdense.data.synthetic.writer import IMAGE_PNG_LEVEL, LABEL_PNG_LEVEL  # noqa: E402

FAMILIES = ("indoor", "street")


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def throughput(family: str, n: int, size: tuple[int, int], workers: int) -> tuple[float, float, float]:
    """Images per second (wall), CPU ms per image (all processes), and the share of ``workers`` cores
    the run actually got (CPU time / (wall time × workers); below 1 when other processes compete)."""
    with tempfile.TemporaryDirectory() as d:
        c0, t0 = _cpu_seconds(), time.perf_counter()
        write_synthetic_dataset(
            d, train=n, val=0, size=size, seed=0, family=family, progress=False, workers=workers
        )
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return n / wall, 1000 * cpu / n, cpu / (wall * workers)


def breakdown(family: str, n: int, size: tuple[int, int]) -> dict[str, float]:
    """Mean CPU milliseconds per image and stage (scene generation, renderer stages, encoding + writing)."""
    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            t = time.process_time()
            scene = make_scene(family, 0, 1000 + i)
            stages["scene generation"] = stages.get("scene generation", 0.0) + time.process_time() - t
            s = render_scene(scene, size, np.random.default_rng(i), timings=stages)
            t = time.process_time()
            Path(d, "a.png").write_bytes(encode_png(s["image"], level=IMAGE_PNG_LEVEL))
            Path(d, "b.png").write_bytes(encode_png(s["semseg"], level=LABEL_PNG_LEVEL))
            stages["write PNGs"] = stages.get("write PNGs", 0.0) + time.process_time() - t
            t = time.process_time()
            np.save(Path(d, "c.npy"), s["depth"])
            np.save(Path(d, "d.npy"), s["normals"])
            np.save(Path(d, "e.npy"), s["edge"].astype(np.float32))
            stages["write npy"] = stages.get("write npy", 0.0) + time.process_time() - t
    return {k: 1000 * v / n for k, v in stages.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="images per throughput run")
    ap.add_argument("--size", default="192x256", help="HxW")
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--profile-n", type=int, default=40, help="images for the stage breakdown")
    ap.add_argument("--no-report", action="store_true", help="print only, do not touch docs/benchmarks.md")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    load_before = os.getloadavg()[0]

    rows = []
    for fam in FAMILIES:
        throughput(fam, 8, size, max(args.workers))  # warm caches and the file system
        for w in args.workers:
            ips, cpu_ms, share = throughput(fam, args.n, size, w)
            rows.append((fam, w, ips, cpu_ms, share, w * 1000 / cpu_ms))
            print(
                f"{fam:7s} workers={w}: {ips:6.1f} images/s, {cpu_ms:.1f} CPU ms/image, "
                f"got {share:.0%} of {w} core(s), {w * 1000 / cpu_ms:.1f} images/s on {w} idle core(s)"
            )
    prof = {fam: breakdown(fam, args.profile_n, size) for fam in FAMILIES}
    for fam, st in prof.items():
        print(fam, {k: round(v, 2) for k, v in st.items()}, "total", round(sum(st.values()), 1), "ms")
    load_after = os.getloadavg()[0]

    stage_names = list(dict.fromkeys(k for st in prof.values() for k in st))
    lines = [
        f"Images {size[0]}×{size[1]}, `write_synthetic_dataset` end to end (render + write images/*.png, "
        "segmentation/*.png, depth/normals/edge *.npy), wall clock including pool start-up; "
        f"{args.n} images per run. 1-minute load average before / after: "
        f"{load_before:.2f} / {load_after:.2f} (the machine is shared: other load lowers these figures).",
        "",
        "CPU ms/image counts every process of the run; *share* is CPU time / (wall time × workers), the "
        "fraction of the cores the run actually got; *idle-core rate* = workers × 1000 / CPU ms, the rate "
        "the same work reaches when the cores are not shared.",
        "",
        "| family | workers | images/s | CPU ms/image | share of the cores | idle-core rate (images/s) |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {fam} | {w} | {ips:.1f} | {cpu:.1f} | {share:.0%} | {ideal:.1f} |"
            for fam, w, ips, cpu, share, ideal in rows
        ),
        "",
        f"CPU time per image by stage (ms, mean of {args.profile_n} images, one process; renderer stages "
        "sum the primary and the anti-aliasing pass):",
        "",
        "| stage | " + " | ".join(FAMILIES) + " |",
        "|---|" + "---:|" * len(FAMILIES),
        *(
            f"| {k} | " + " | ".join(f"{prof[f].get(k, 0.0):.2f}" for f in FAMILIES) + " |"
            for k in stage_names
        ),
        "| **total** | " + " | ".join(f"**{sum(prof[f].values()):.1f}**" for f in FAMILIES) + " |",
    ]
    if not args.no_report:
        write_section("Synthetic data generation", "\n".join(lines))
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
