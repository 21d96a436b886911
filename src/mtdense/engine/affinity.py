"""Cross-task agreement of local pixel affinities as a function of kernel dilation (MTI-Net Fig. 2b).

MTI-Net (Vandenhende et al., ECCV 2020, Sec. 2.2 and Fig. 2b) measures, on the *label* space of each task,
whether pairs of pixels in local patches are similar, with a 3×3 kernel whose dilation sets the
receptive field, and then "how well similar and dissimilar pairs are matched across tasks" as the
dilation grows. ``mtdense analyze affinity`` does this on any dataset of :func:`mtdense.data.open_dataset`.

Pairs. A 3×3 kernel of dilation ``d`` pairs its centre ``p`` with the 8 pixels ``p ± d·v`` for
``v`` in {(0, 1), (1, 0), (1, 1), (1, −1)} (row, column). Each unordered pair is counted once (the
four directions above; ``p − d·v`` is the pair of another centre), over every centre whose partner
lies inside the image.

Affinity of a pair (the paper defines semseg and depth in words only; the choices below are ours):

* ``semseg``: similar when both pixels have the same class; a pair touching an ignore pixel (255) is
  not counted (paper: "both pixels belong to the same category");
* ``depth``: similar when the relative difference ``|a − b| / max(a, b)`` is below ``depth_threshold``
  (default 0.1, i.e. 10 %); symmetric in ``a`` and ``b``, and scale-free so near and far surfaces are
  treated alike. Pairs touching invalid depth (0) are not counted (paper: "we threshold the relative
  difference between pairs of pixels; pixels below the threshold are similar", no value given);
* ``edge``: similar ("on the same side") when no edge pixel lies on the straight segment between
  them, endpoints included (the segment is the pixels ``p + k·v``, ``k = 0…d``, exact on the kernel's
  axes and diagonals). A pixel on an edge therefore belongs to no side: every pair touching one is
  dissimilar. Pairs whose segment crosses an ignore pixel (255) are not counted. The paper names edges
  among its tasks without a definition.

Agreement between tasks ``A`` and ``B`` at dilation ``d``, pooled over every image (pair counts are
summed, so a large image weighs more), over the pairs counted for both tasks:

* ``agreement``: the fraction of pairs that both tasks call similar or both call dissimilar;
* ``dissimilar_iou``: |dissimilar in A and in B| / |dissimilar in A or in B|. The plain agreement is
  dominated by flat regions, where every task calls neighbours similar; this second score only looks
  at the structure (boundaries) and is 0 when the tasks' boundaries never coincide.

Everything is vectorised over pixels with numpy (the loops run over directions and dilations only).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtdense.errors import ConfigError, DataError

DIRECTIONS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (1, -1))
"""Half of a 3×3 kernel's 8 neighbour offsets (row, column): each unordered pair once."""

IGNORE = 255


def _ends(shape: tuple[int, int], dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Slices ``(first, second)`` such that ``x[first]`` and ``x[second]`` are the two ends of every pair
    ``(p, p + (dy, dx))`` inside an ``(H, W)`` image; ``None`` when the offset leaves the image."""
    h, w = shape
    if abs(dy) >= h or abs(dx) >= w:
        return None
    rows = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    cols = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return (rows[0], cols[0]), (rows[1], cols[1])


def semseg_affinity(labels: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """``(similar, valid)`` of the pairs ``(p, p + (dy, dx))`` of an ``(H, W)`` integer label map
    (255 = ignore); both boolean arrays of the pairs' shape (module docstring)."""
    ends = _ends(labels.shape, dy, dx)
    if ends is None:
        return np.zeros((0, 0), bool), np.zeros((0, 0), bool)
    a, b = labels[ends[0]], labels[ends[1]]
    return a == b, (a != IGNORE) & (b != IGNORE)


def depth_affinity(depth: np.ndarray, dy: int, dx: int, *, threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``(similar, valid)`` of the pairs of an ``(H, W)`` depth map in metres (0 = invalid): similar when
    ``|a − b| / max(a, b) < threshold``."""
    ends = _ends(depth.shape, dy, dx)
    if ends is None:
        return np.zeros((0, 0), bool), np.zeros((0, 0), bool)
    a, b = depth[ends[0]].astype(np.float64), depth[ends[1]].astype(np.float64)
    valid = (a > 0) & (b > 0) & np.isfinite(a) & np.isfinite(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(a - b) / np.maximum(a, b)
    return valid & (rel < threshold), valid


def edge_affinity(edge: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """``(similar, valid)`` of the pairs ``(p, p + (dy, dx))`` of an ``(H, W)`` edge map (1 = edge,
    0 = none, 255 = ignore), ``(dy, dx) = d·v`` with ``v`` a kernel direction: similar when no edge pixel
    lies on the segment ``p + k·v``, ``k = 0…d`` (module docstring)."""
    d = max(abs(dy), abs(dx))
    if d == 0 or dy % d or dx % d:
        raise ConfigError(f"edge affinity: offset ({dy}, {dx}) is not a dilated 3×3 kernel offset d·v")
    ends = _ends(edge.shape, dy, dx)
    if ends is None:
        return np.zeros((0, 0), bool), np.zeros((0, 0), bool)
    vy, vx = dy // d, dx // d
    (r0, c0), _ = ends
    crossed = np.zeros((r0.stop - r0.start, c0.stop - c0.start), bool)
    ignored = np.zeros_like(crossed)
    for k in range(d + 1):  # over the segment's d + 1 pixels, each a shifted view of the whole map
        rows = slice(r0.start + k * vy, r0.stop + k * vy)
        cols = slice(c0.start + k * vx, c0.stop + k * vx)
        seg = edge[rows, cols]
        ignored |= seg == IGNORE
        crossed |= (seg != IGNORE) & (seg > 0.5)
    return ~crossed, ~ignored


def _depth(threshold: float) -> Callable[[np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]:
    return lambda x, dy, dx: depth_affinity(x, dy, dx, threshold=threshold)


def affinity_functions(depth_threshold: float = 0.1) -> dict[str, Callable[[np.ndarray, int, int], Any]]:
    """Task → ``f(label map (H, W), dy, dx) -> (similar, valid)``; the tasks this analysis knows."""
    return {"semseg": semseg_affinity, "depth": _depth(depth_threshold), "edge": edge_affinity}


class AffinityCounter:
    """Accumulates, over images, the pair counts behind :func:`summary` for every task pair and dilation."""

    def __init__(self, tasks: Sequence[str], dilations: Sequence[int], *, depth_threshold: float = 0.1) -> None:
        funcs = affinity_functions(depth_threshold)
        unknown = [t for t in tasks if t not in funcs]
        if unknown:
            raise ConfigError(f"--tasks: no label affinity defined for {unknown}; expected some of {', '.join(funcs)}")
        if len(tasks) < 2 or len(set(tasks)) != len(tasks):
            raise ConfigError(f"--tasks: expected at least two distinct tasks, got {list(tasks)}")
        bad = [d for d in dilations if not isinstance(d, int) or d < 1]
        if bad or not dilations:
            raise ConfigError(f"--dilations: expected positive integers, got {list(dilations)}")
        self.tasks, self.dilations, self.funcs = list(tasks), list(dilations), funcs
        self.pairs = [(a, b) for i, a in enumerate(self.tasks) for b in self.tasks[i + 1 :]]
        n = len(self.dilations)
        self.counts = {
            p: {k: np.zeros(n, np.int64) for k in ("valid", "agree", "dis_and", "dis_or")} for p in self.pairs
        }
        self.similar = {t: np.zeros(n, np.int64) for t in self.tasks}
        self.valid = {t: np.zeros(n, np.int64) for t in self.tasks}
        self.images = 0

    def add(self, maps: dict[str, np.ndarray]) -> None:
        """Count the pairs of one image: ``maps[task]`` is its ``(H, W)`` label map (all the same size)."""
        shapes = {t: maps[t].shape for t in self.tasks}
        if len(set(shapes.values())) != 1 or any(len(s) != 2 for s in shapes.values()):
            raise DataError(f"affinity: expected (H, W) label maps of one size, got {shapes}")
        for j, d in enumerate(self.dilations):
            for vy, vx in DIRECTIONS:
                aff = {t: self.funcs[t](maps[t], d * vy, d * vx) for t in self.tasks}
                for t, (sim, val) in aff.items():
                    self.similar[t][j] += int((sim & val).sum())
                    self.valid[t][j] += int(val.sum())
                for a, b in self.pairs:
                    (sa, va), (sb, vb) = aff[a], aff[b]
                    both = va & vb
                    c = self.counts[(a, b)]
                    c["valid"][j] += int(both.sum())
                    c["agree"][j] += int((both & (sa == sb)).sum())
                    c["dis_and"][j] += int((both & ~sa & ~sb).sum())
                    c["dis_or"][j] += int((both & (~sa | ~sb)).sum())
        self.images += 1

    def summary(self) -> dict[str, Any]:
        """``{"dilations", "tasks", "images", "pairs": {"A-B": {agreement, dissimilar_iou, pairs}},
        "similar_fraction": {task: [...]}}``; a ratio with no pair to count is ``None``."""

        def ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
            return [float(n / m) if m else None for n, m in zip(num, den, strict=True)]

        return {
            "tasks": self.tasks,
            "dilations": self.dilations,
            "images": self.images,
            "pairs": {
                f"{a}-{b}": {
                    "agreement": ratio(c["agree"], c["valid"]),
                    "dissimilar_iou": ratio(c["dis_and"], c["dis_or"]),
                    "pairs": [int(v) for v in c["valid"]],
                }
                for (a, b), c in self.counts.items()
            },
            "similar_fraction": {t: ratio(self.similar[t], self.valid[t]) for t in self.tasks},
        }


def _label_map(sample: dict[str, Any], task: str) -> np.ndarray:
    x = sample[task]
    arr = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    return arr[0] if arr.ndim == 3 else arr


def analyze_affinity(
    root: str | Path,
    *,
    dataset: str | None = None,
    tasks: Sequence[str] = ("semseg", "depth", "edge"),
    dilations: Sequence[int] = (1, 2, 4, 8, 16),
    split: str = "val",
    limit: int | None = None,
    depth_threshold: float = 0.1,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Run the analysis on ``split`` of the dataset at ``root`` (``dataset``: a registered name, default
    detected from the folder) and write ``OUT/affinity.json`` and ``OUT/affinity.png`` (``out`` default:
    ``ROOT/analysis``). Returns the JSON's content."""
    from mtdense.data.registry import detect_dataset, open_dataset

    if not 0 < depth_threshold:
        raise ConfigError(f"--depth-threshold: expected a positive relative difference, got {depth_threshold}")
    counter = AffinityCounter(tasks, dilations, depth_threshold=depth_threshold)
    name = dataset or detect_dataset(root)
    data = open_dataset(name, root, split=split, tasks=list(tasks))
    n = len(data) if limit is None else min(limit, len(data))
    if n == 0:
        raise DataError(f"{root}: split {split!r} of dataset {name!r} has no images")
    for i in range(n):
        counter.add({t: _label_map(data[i], t) for t in tasks})
    result = {
        "dataset": name,
        "root": str(root),
        "split": split,
        "depth_threshold": depth_threshold,
        **counter.summary(),
    }
    out = Path(out) if out is not None else Path(root) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    (out / "affinity.json").write_text(json.dumps(result, indent=2))
    plot_affinity(result, out / "affinity.png")
    return result


def plot_affinity(result: dict[str, Any], path: Path) -> Path:
    """Two panels vs dilation (log₂ axis): the agreement and the dissimilar-pair IoU of each task pair."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    x = result["dilations"]
    for key, ax, label in (
        ("agreement", axes[0], "pairs matched (both similar or both dissimilar)"),
        ("dissimilar_iou", axes[1], "IoU of dissimilar pairs"),
    ):
        for pair, values in result["pairs"].items():
            y = [np.nan if v is None else 100 * v for v in values[key]]
            ax.plot(x, y, marker="o", label=pair)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(d) for d in x])
        ax.set_xlabel("kernel dilation (3×3 kernel)")
        ax.set_ylabel(f"{label} (%)")
        ax.legend()
    fig.suptitle(
        f"label affinity agreement across tasks: {result['dataset']} {result['split']} ({result['images']} images)"
    )
    fig.savefig(path, dpi=120)
    return path
