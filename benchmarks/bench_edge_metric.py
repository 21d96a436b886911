"""Speed of the exact BSDS edge evaluation (:class:`mtdense.metrics.EdgeMeter`) on detector-like maps.

Images of 480x640 (NYUD size) from a fixed seed: the ground truth is the 1-2 pixel boundary map of a
random smooth segmentation (about 4-5 % of the pixels); the "prediction" looks like a sigmoid output of an
edge detector: a Gaussian ridge (sigma 2 px) along ~75 % of the ground-truth boundaries, displaced by a
smooth field of about 1 px, weaker ridges along spurious texture edges, smooth low-level noise, and a
background of about 0.01 (so that the lowest thresholds keep half of the image, the expensive case for
thinning). Every image is evaluated at 99 thresholds with max_dist 0.0075 (radius 6 px), single process,
one torch / BLAS thread; the target is 100 images in at most 2 minutes on the 2-core development
machine. The fast approximate meter (:class:`mtdense.metrics.FastEdgeMeter`) is timed on the same maps.

Usage::

    python benchmarks/bench_edge_metric.py             # 100 images, writes docs/benchmarks.md
    python benchmarks/bench_edge_metric.py --images 10 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402

from mtdense.metrics import EdgeMeter, FastEdgeMeter  # noqa: E402


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return (f - f.mean()) / f.std()


def _boundaries(labels: np.ndarray) -> np.ndarray:
    b = np.zeros(labels.shape, bool)
    b[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    b[1:, :] |= labels[1:, :] != labels[:-1, :]
    return b


def make_pair(rng: np.random.Generator, height: int = 480, width: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """(probability map float32 (H, W) in [0, 1], ground-truth boundaries float32 (H, W) in {0, 1})."""
    shape = (height, width)
    labels = np.digitize(_smooth(rng, shape, 24), [-0.8, 0.0, 0.8]) * 2 + (_smooth(rng, shape, 48) > 0)
    gt = _boundaries(labels)
    detected = gt & (_smooth(rng, shape, 16) > -0.7)  # ~25 % of the boundaries are missed
    yy, xx = np.mgrid[:height, :width].astype(float)
    dist_true = ndi.distance_transform_edt(~detected)
    dist_true = ndi.map_coordinates(
        dist_true, [yy + _smooth(rng, shape, 40), xx + _smooth(rng, shape, 40)], order=1
    )
    dist_fake = ndi.distance_transform_edt(~_boundaries(_smooth(rng, shape, 10) > 1.2))
    strength = 0.75 + 0.25 * _smooth(rng, shape, 8)
    logit = (
        -5.0
        + 7.5 * strength * np.exp(-(dist_true**2) / (2 * 2.0**2))
        + 4.5 * (0.5 + 0.5 * _smooth(rng, shape, 8)) * np.exp(-(dist_fake**2) / (2 * 2.5**2))
        + 0.8 * _smooth(rng, shape, 3)
        + 0.3 * rng.standard_normal(shape)
    )
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32), gt.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rng = np.random.default_rng(args.seed)
    pairs = [make_pair(rng, args.height, args.width) for _ in range(args.images)]
    coverage = np.mean([[(p >= t).mean() for t in (0.01, 0.5, 0.99)] for p, _ in pairs], axis=0)
    gt_share = np.mean([g.mean() for _, g in pairs])

    exact = EdgeMeter()
    per_image = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    for prob, gt in pairs:
        t0 = time.perf_counter()
        exact.update(torch.from_numpy(prob)[None, None], torch.from_numpy(gt)[None, None])
        per_image.append(time.perf_counter() - t0)
    result = exact.compute()
    total = time.perf_counter() - start
    cpu_total = time.process_time() - cpu_start

    fast = FastEdgeMeter()
    start = time.perf_counter()
    for prob, gt in pairs:
        fast.update(torch.from_numpy(prob)[None, None], torch.from_numpy(gt)[None, None])
    fast_result = fast.compute()
    fast_total = time.perf_counter() - start

    per_image_ms = 1000 * np.asarray(per_image)
    exact_row = (
        f"| `EdgeMeter` (exact) | {total:.1f} s | {cpu_total:.1f} s | {np.median(per_image_ms):.0f} / "
        f"{per_image_ms.max():.0f} ms | {result['odsF']:.2f} | {result['oisF']:.2f} | {result['ap']:.2f} |"
    )
    fast_row = (
        f"| `FastEdgeMeter` (approximate) | {fast_total:.1f} s | | {1000 * fast_total / args.images:.0f} ms "
        f"(mean) | {fast_result['odsF']:.2f} | {fast_result['oisF']:.2f} | {fast_result['ap']:.2f} |"
    )
    body = f"""
Exact BSDS evaluation (`EdgeMeter`: 99 thresholds, max_dist 0.0075, GT and every binarised prediction
thinned, exact one-to-one matching) of {args.images} synthetic detector-like maps of
{args.height}x{args.width} (seed {args.seed}; ground-truth boundaries {100 * gt_share:.1f} % of the pixels;
prediction >= 0.01 / 0.5 / 0.99 on {100 * coverage[0]:.0f} / {100 * coverage[1]:.0f} /
{100 * coverage[2]:.1f} % of the pixels), single process, one thread. Target: 100 images in at most 120 s.
Wall-clock time depends on what else runs on the machine; the process CPU time does not (load average
when the run ended: {os.getloadavg()[0]:.1f}).

| meter | wall total | CPU total | wall per image (median / max) | odsF | oisF | AP |
|---|---|---|---|---|---|---|
{exact_row}
{fast_row}
"""
    print(body)
    if not args.no_write:
        write_section("Edge metric (BSDS odsF / oisF / AP)", body)


if __name__ == "__main__":
    main()
