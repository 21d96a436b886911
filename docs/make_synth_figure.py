"""Make ``docs/figures/synth_samples.png``: samples of both synthetic families with their ground truth.

Columns: RGB | semantic labels (family palette) | depth (inverse-depth colour map, black = invalid) |
normals (``(n + 1) / 2`` as RGB, black = invalid) | edges.

Usage: ``python docs/make_synth_figure.py [--rows 3] [--size 192x256] [--seed 0] [--out PATH]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mtdense.data.synthetic import FAMILIES, render_sample  # noqa: E402


def _depth_rgb(depth: np.ndarray) -> np.ndarray:
    valid = depth > 0
    inv = np.zeros_like(depth)
    inv[valid] = 1.0 / depth[valid]
    if valid.any():
        lo, hi = np.percentile(inv[valid], [1, 99])
        inv = np.clip((inv - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = plt.get_cmap("magma")(inv)[..., :3]
    rgb[~valid] = 0
    return rgb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3, help="samples per family")
    ap.add_argument("--size", default="192x256")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "figures" / "synth_samples.png")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    rows = [(fam, i) for fam in ("indoor", "street") for i in range(args.rows)]
    cols = ("RGB", "labels", "depth", "normals", "edges")
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols), 2.6 * h / w * len(rows) + 0.4))
    for r, (fam, i) in enumerate(rows):
        s = render_sample(fam, args.seed, i, size=(h, w))
        palette = np.array(FAMILIES[fam].palette, np.uint8)
        labels = palette[np.minimum(s["semseg"], len(palette) - 1)]
        normals = np.where(np.any(s["normals"] != 0, -1, keepdims=True), (s["normals"] + 1) / 2, 0)
        panels = (s["image"], labels, _depth_rgb(s["depth"]), normals, s["edge"])
        for c, img in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{fam} #{i}", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
