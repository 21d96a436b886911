"""Throughput of the synthetic benchmark generator, and where its time goes.

For each family: images per second of ``mtdense data synth`` end to end (a fresh process: rendering
plus writing the five files per image, with ``--workers`` processes; wall clock of the command,
interpreter and pool start-up included) and the CPU time of all its processes per image; then a
per-stage breakdown of the CPU time of one image, measured in this process.

``--reference SRC`` also times another version of the package, e.g. the last commit
(``git archive HEAD src | tar -x -C /tmp/ref`` then ``--reference /tmp/ref/src``), in the same run:
the two alternate run by run over ``--passes`` passes and each keeps its best pass (other processes
on a shared machine only ever add time), and ``--check`` renders a few fixed-seed images with both
and says whether the outputs are identical. The 1-minute load average before and after is recorded.
Writes the section "Synthetic data generation" of ``docs/benchmarks.md``.

Usage: ``python benchmarks/bench_synth.py [--n 300] [--size 192x256] [--workers 2] [--passes 3]
[--reference /tmp/ref/src]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

from mtdense._allocator import reuse_freed_memory  # noqa: E402
from mtdense.data._io import encode_png  # noqa: E402
from mtdense.data.synthetic import make_scene, render_scene  # noqa: E402
from mtdense.data.synthetic.writer import IMAGE_PNG_LEVEL, LABEL_PNG_LEVEL  # noqa: E402

FAMILIES = ("indoor", "street")


_CHILD = r"""
import json, resource, sys, time
def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
t0, c0 = time.perf_counter(), cpu()
from mtdense.cli.main import main
import mtdense.data.synthetic  # what `data synth` imports before rendering
t1, c1 = time.perf_counter(), cpu()
assert main(sys.argv[1:]) == 0
t2, c2 = time.perf_counter(), cpu()
print(json.dumps({"import_wall": t1 - t0, "import_cpu": c1 - c0, "wall": t2 - t1, "cpu": c2 - c1}))
"""


def _cli_synth(src: Path | None, out: str, *, family: str, n: int, size: tuple[int, int], workers: int) -> dict:
    """``mtdense data synth`` in a fresh interpreter importing mtdense from ``src`` (``None``: the installed
    one): wall and CPU seconds (all processes) of the imports and of the command itself."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    argv = ["data", "synth", out, "--train", str(n), "--val", "0", "--size", f"{size[0]}x{size[1]}",
            "--family", family, "--workers", str(workers)]  # fmt: skip
    run = subprocess.run([sys.executable, "-c", _CHILD, *argv], env=env, check=True, capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def throughput(src: Path | None, family: str, n: int, size: tuple[int, int], workers: int) -> dict:
    """``{"ips", "cpu_ms", "e2e_ips", "import_s", "import_cpu_s"}``: images per second and CPU ms per image
    (every process) of rendering and writing, the end-to-end rate of the command with its imports, and
    the imports' wall and CPU seconds."""
    with tempfile.TemporaryDirectory() as d:
        r = _cli_synth(src, str(Path(d, "out")), family=family, n=n, size=size, workers=workers)
    return {
        "ips": n / r["wall"],
        "cpu_ms": 1000 * r["cpu"] / n,
        "e2e_ips": n / (r["wall"] + r["import_wall"]),
        "import_s": r["import_wall"],
        "import_cpu_s": r["import_cpu"],
    }


def same_outputs(reference: Path, size: tuple[int, int]) -> bool:
    """Whether this tree and ``reference`` render identical arrays for a few fixed (family, seed, index)."""
    code = (
        "import sys, hashlib; from mtdense.data.synthetic import render_sample\n"
        "h = hashlib.sha256()\n"
        "for fam in ('indoor', 'street'):\n"
        "    for i in (0, 1, 5):\n"
        f"        s = render_sample(fam, 0, i, {tuple(size)})\n"
        "        for k in sorted(s): h.update(k.encode()); h.update(s[k].tobytes())\n"
        "print(h.hexdigest())"
    )
    digests = []
    for src in (None, reference):
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src)
        digests.append(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                      text=True).stdout.strip())  # fmt: skip
    return digests[0] == digests[1]


def breakdown(family: str, n: int, size: tuple[int, int]) -> dict[str, float]:
    """Mean CPU milliseconds per image and stage (scene generation, renderer stages, encoding + writing)."""
    reuse_freed_memory()  # as the writer's render processes do
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
    ap.add_argument("--n", type=int, default=300, help="images per throughput run")
    ap.add_argument("--size", default="192x256", help="HxW")
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--passes", type=int, default=3, help="runs per version and setting; the best is kept")
    ap.add_argument("--reference", type=Path, help="src/ folder of another version to time side by side")
    ap.add_argument("--reference-label", default="the package in --reference", help="what the reference is")
    ap.add_argument("--profile-n", type=int, default=40, help="images for the stage breakdown")
    ap.add_argument("--no-report", action="store_true", help="print only, do not touch docs/benchmarks.md")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    versions: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.reference is not None:
        versions.append(("reference", args.reference.resolve()))
    load_before = os.getloadavg()[0]

    # runs[(family, workers, version)] = every run's figures; each column keeps its best run
    runs: dict[tuple[str, int, str], list[dict]] = {}
    for fam in FAMILIES:
        throughput(None, fam, 8, size, max(args.workers))  # warm caches and the file system
        for w in args.workers:
            for p in range(args.passes):
                for name, src in versions if p % 2 == 0 else versions[::-1]:  # alternate who goes first
                    r = throughput(src, fam, args.n, size, w)
                    runs.setdefault((fam, w, name), []).append(r)
                    print(f"{fam:7s} workers={w} {name:10s} pass {p + 1}: {r['ips']:6.1f} images/s, "
                          f"{r['cpu_ms']:.1f} CPU ms/image, end to end {r['e2e_ips']:.1f} images/s "
                          f"(imports {r['import_s']:.1f} s, {r['import_cpu_s']:.1f} CPU s), "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    best = {
        k: {
            "ips": max(r["ips"] for r in rs),
            "cpu_ms": min(r["cpu_ms"] for r in rs),
            "e2e_ips": max(r["e2e_ips"] for r in rs),
            "import_cpu_s": min(r["import_cpu_s"] for r in rs),
        }
        for k, rs in runs.items()
    }
    identical = same_outputs(args.reference, size) if args.reference is not None else None
    prof = {fam: breakdown(fam, args.profile_n, size) for fam in FAMILIES}
    for fam, st in prof.items():
        print(fam, {k: round(v, 2) for k, v in st.items()}, "total", round(sum(st.values()), 1), "ms")
    load_after = os.getloadavg()[0]

    ref_cols = args.reference is not None
    head = "| family | workers | images/s | CPU ms/image | end to end images/s | imports CPU s |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if ref_cols:
        head += " reference images/s | reference CPU ms/image | reference end to end | speed-up: images/s | CPU |"
        rule += "---:|---:|---:|---:|---:|"
    rows = []
    for fam in FAMILIES:
        for w in args.workers:
            b = best[(fam, w, "this tree")]
            row = f"| {fam} | {w} | {b['ips']:.1f} | {b['cpu_ms']:.1f} | {b['e2e_ips']:.1f} | {b['import_cpu_s']:.1f} |"
            if ref_cols:
                r = best[(fam, w, "reference")]
                row += (
                    f" {r['ips']:.1f} | {r['cpu_ms']:.1f} | {r['e2e_ips']:.1f} | {b['ips'] / r['ips']:.2f}× | "
                    f"{r['cpu_ms'] / b['cpu_ms']:.2f}× |"
                )
            rows.append(row)
    stage_names = list(dict.fromkeys(k for st in prof.values() for k in st))
    lines = [
        f"Images {size[0]}×{size[1]} through `mtdense data synth` (`mtdense.cli.main.main`, a fresh process per "
        "run: render + write images/*.png, segmentation/*.png, depth/normals/edge *.npy, pool start-up "
        f"included), {args.n} images per run, best of {args.passes} runs per version and setting. *images/s* "
        "and *CPU ms/image* (every process) cover the command once its modules are imported; *end to end* adds "
        "the imports of the CLI and the renderer (NumPy and Pillow; torch is not imported on this path), whose "
        "CPU seconds are listed separately. "
        f"1-minute load average before / after: {load_before:.2f} / {load_after:.2f} on "
        f"{os.cpu_count()} cores shared with other jobs: wall-clock rates are lowered by that load, the CPU "
        "time much less so.",
    ]
    if ref_cols:
        lines += [
            "",
            f"*Reference*: {args.reference_label}, run alternately with this "
            "tree in the same session. Rendered outputs of the two for fixed seeds (both families, 3 images "
            f"each): {'identical' if identical else 'DIFFERENT'}.",
        ]
    lines += [
        "",
        head,
        rule,
        *rows,
        "",
        f"CPU time per image by stage (ms, mean of {args.profile_n} images, one process, this tree; renderer "
        "stages sum the primary and the anti-aliasing pass):",
        "",
        "| stage | " + " | ".join(FAMILIES) + " |",
        "|---|" + "---:|" * len(FAMILIES),
        *(f"| {k} | " + " | ".join(f"{prof[f].get(k, 0.0):.2f}" for f in FAMILIES) + " |" for k in stage_names),
        "| **total** | " + " | ".join(f"**{sum(prof[f].values()):.1f}**" for f in FAMILIES) + " |",
    ]
    if not args.no_report:
        write_section("Synthetic data generation", "\n".join(lines))
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
