"""``mtdense data check ROOT [--dataset NAME]``: verify that a downloaded or converted dataset reads right.

:func:`check_dataset` opens every split present (``train``, ``val``, ``test``) through
:func:`mtdense.data.open_dataset` with every task the dataset carries, decodes every sample (or the first
``limit``) and checks it against the data contract: image ``(3, H, W)`` in [0, 1]; each target the
image's size; semseg ids within the protocol (``0..num_classes − 1`` or 255 = ignore); depth finite,
non-negative and below :data:`MAX_PLAUSIBLE_DEPTH` (a larger value means wrong units); valid normals of
unit length and, over the split, facing the camera (:data:`MIN_FACING_SHARE`) with horizontal surfaces mostly
facing up (:data:`MIN_UP_SHARE`); edges in {0, 1} (or 255 = ignore). When a dataset has depth, normals and
intrinsics (its ``meta``), the stored normals of the first :data:`AXES_FIT_SAMPLES` samples are compared with
normals derived from the depth (:func:`~mtdense.data._geometry.normals_from_depth`):
:func:`~mtdense.data.nyud_convert.fit_normal_axes` finds the signed axis permutation that maps the first onto the
second, and one other than the identity is a problem naming the matrix (for NYUD-MT, ``normals_to_camera`` in
``meta.json``), which establishes a release's axis convention from its own files.
Missing or undecodable files are problems naming the file (the readers'
:class:`~mtdense.errors.DataError`). The report lists split counts, image sizes and
value ranges, and every problem. A figure (``data_check.png`` by default) shows a few samples of the
first split with every target, drawn by each task's ``visualize``, so a user sees at once that e.g.
labels and depth line up with the image.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .registry import detect_dataset, list_datasets, open_dataset

SPLITS = ("train", "val", "test")
CANDIDATE_TASKS = ("semseg", "depth", "normals", "edge", "parts", "saliency")
MAX_PLAUSIBLE_DEPTH = 1000.0
"""Metres; a larger depth in a dataset of scenes means the file's units were not converted."""
NORMAL_TOLERANCE = 1e-2
MIN_FACING_SHARE = 0.5
"""Least share of valid normals facing the camera over a split. A visible surface faces the camera, ``n · P < 0``
for the 3-D point ``P`` it sits on (with the intrinsics in the dataset's ``meta``; ``n_z < 0`` without them), so
in the data contract's frame (x right, y down, z forward) nearly every valid normal does; a share below one half
means a release stored in another axis convention was read without converting it."""
MIN_UP_SHARE = 0.5
"""Least share, among the valid normals of horizontal surfaces (``|n_y| > HORIZONTAL_NY``), of those facing up
(``n_y < 0``, y pointing down). Photographs of rooms and streets show more floor, ground and table tops than
ceilings (87 % and 99 % up-facing on the synthetic indoor and street scenes), so a lower share means a release
whose y axis points up was read without flipping it. Together with :data:`MIN_FACING_SHARE` (the sign of z) and
a release's own flip and rotation augmentation (the sign and handedness of x), this establishes a stored
normal map's axis convention from its files."""
HORIZONTAL_NY = 0.8
AXES_FIT_SAMPLES = 8
"""Samples of a split whose stored normals are compared with normals derived from their depth (module docstring)."""
MAX_LISTED_PROBLEMS = 20


@dataclass
class SplitStats:
    """What :func:`check_dataset` found in one split."""

    count: int = 0
    checked: int = 0
    sizes: Counter = field(default_factory=Counter)
    ranges: dict[str, list[float]] = field(default_factory=dict)
    label_ids: set[int] = field(default_factory=set)
    normals_valid: int = 0
    normals_facing: int = 0
    normals_horizontal: int = 0
    normals_up: int = 0
    axes_pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def widen(self, key: str, lo: float, hi: float) -> None:
        old = self.ranges.get(key)
        self.ranges[key] = [lo, hi] if old is None else [min(old[0], lo), max(old[1], hi)]


@dataclass
class CheckReport:
    """The result of :func:`check_dataset`; ``problems`` empty means the dataset reads right."""

    dataset: str
    root: Path
    tasks: tuple[str, ...]
    splits: dict[str, SplitStats] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    figure: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"dataset {self.dataset} at {self.root}; tasks: {', '.join(self.tasks) or 'none'}"]
        for split, st in self.splits.items():
            sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in st.sizes.most_common(3))
            lines.append(f"  {split}: {st.count} samples, {st.checked} checked; sizes {sizes}")
            for key, (lo, hi) in st.ranges.items():
                lines.append(f"    {key}: {lo:.4g} .. {hi:.4g}")
            if st.label_ids:
                ids = sorted(st.label_ids)
                lines.append(f"    semseg ids: {len(ids)} distinct, {ids[0]}..{ids[-1]}")
        for split, why in self.absent.items():
            lines.append(f"  {split}: absent ({why})")
        if self.figure is not None:
            lines.append(f"  figure: {self.figure}")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems[:MAX_LISTED_PROBLEMS]]
            if len(self.problems) > MAX_LISTED_PROBLEMS:
                lines.append(f"  ... and {len(self.problems) - MAX_LISTED_PROBLEMS} more")
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def _supported_tasks(name: str, root: Path, split: str) -> tuple[str, ...]:
    """The tasks the dataset carries: those it opens with, minus the ones its meta says it only fills."""
    from mtdense.tasks import TASKS

    tasks = []
    meta: dict[str, Any] = {}
    for t in CANDIDATE_TASKS:
        if t not in TASKS:
            continue
        try:
            meta = getattr(open_dataset(name, root, split=split, tasks=(t,)), "meta", {}) or meta
        except ConfigError:
            continue
        tasks.append(t)
    provides = meta.get("provides")
    return tuple(t for t in tasks if provides is None or t in provides)


def _check_sample(sample: dict[str, Any], st: SplitStats, meta: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    image = sample["image"]
    if image.ndim != 3 or image.shape[0] != 3:
        return [f"{where}: image: expected (3, H, W), got {tuple(image.shape)}"]
    h, w = image.shape[-2:]
    st.sizes[(h, w)] += 1
    st.widen("image", float(image.min()), float(image.max()))
    if float(image.min()) < 0 or float(image.max()) > 1:
        problems.append(f"{where}: image values outside [0, 1]")
    for key, value in sample.items():
        if key in ("image", "meta") or not isinstance(value, torch.Tensor):
            continue
        if tuple(value.shape[-2:]) != (h, w):
            problems.append(f"{where}: {key}: expected size {h}x{w} as the image, got {tuple(value.shape)}")
            continue
        v = value.float()
        if key in ("semseg", "parts"):
            ids = {int(x) for x in torch.unique(value)}
            if key == "semseg":
                st.label_ids |= ids - {255}
                k = int(meta.get("num_classes", 0))
                bad = sorted(i for i in ids if i != 255 and not 0 <= i < k)
                if bad:
                    problems.append(f"{where}: semseg ids {bad[:5]} outside the protocol's 0..{k - 1} (255 = ignore)")
        elif key == "depth":
            if not torch.isfinite(v).all() or float(v.min()) < 0:
                problems.append(f"{where}: depth has non-finite or negative values")
            valid = v[v > 0]
            if valid.numel():
                st.widen("depth (m, valid)", float(valid.min()), float(valid.max()))
                if float(valid.max()) > MAX_PLAUSIBLE_DEPTH:
                    problems.append(f"{where}: depth up to {float(valid.max()):.4g} m: wrong units?")
            st.widen("depth valid share", valid.numel() / v.numel(), valid.numel() / v.numel())
        elif key == "normals":
            norm = v.norm(dim=0)
            valid = norm > 0
            if valid.any():
                err = float((norm[valid] - 1).abs().max())
                st.widen("normals |n| (valid)", float(norm[valid].min()), float(norm[valid].max()))
                if err > NORMAL_TOLERANCE:
                    problems.append(f"{where}: normals not of unit length (|‖n‖ − 1| up to {err:.3g})")
                st.normals_valid += int(valid.sum())
                st.normals_facing += int((_towards_camera(v, meta.get("intrinsics")) < 0)[valid].sum())
                st.normals_horizontal += int((v[1].abs() > HORIZONTAL_NY).sum())
                st.normals_up += int((v[1] < -HORIZONTAL_NY).sum())
                pair = _stored_and_derived(sample, meta.get("intrinsics"))
                if pair is not None and len(st.axes_pairs) < AXES_FIT_SAMPLES:
                    st.axes_pairs.append(pair)
        elif key == "edge":
            vals = {float(x) for x in torch.unique(v)}
            if not vals <= {0.0, 1.0, 255.0}:
                problems.append(f"{where}: edge values {sorted(vals)[:5]}, expected 0, 1 (255 = ignore)")
            st.widen("edge share", float((v == 1).float().mean()), float((v == 1).float().mean()))
        elif key == "saliency":
            st.widen("saliency", float(v.min()), float(v.max()))
    return problems


def _stored_and_derived(
    sample: dict[str, Any], intrinsics: dict[str, float] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(stored, derived)`` ``(H, W, 3)`` normals of a sample with depth and normals, when the intrinsics fit it."""
    from ._geometry import normals_from_depth

    if "depth" not in sample or "normals" not in sample or not intrinsics:
        return None
    h, w = sample["image"].shape[-2:]
    k = {key: float(intrinsics[key]) for key in ("fx", "fy", "cx", "cy") if key in intrinsics}
    if len(k) != 4 or not (0 <= k["cx"] <= w and 0 <= k["cy"] <= h):
        return None
    derived = normals_from_depth(sample["depth"][0].numpy(), **k)
    return sample["normals"].permute(1, 2, 0).numpy().copy(), derived


def _check_axes(st: SplitStats, split: str) -> list[str]:
    """A problem when the stored normals best match the depth-derived ones under another axis convention."""
    from .nyud_convert import fit_normal_axes

    try:
        m, agreement = fit_normal_axes([a for a, _ in st.axes_pairs], [b for _, b in st.axes_pairs])
    except DataError:
        return []
    st.widen("normals agreement with depth (mean cos)", agreement, agreement)
    if np.array_equal(m, np.eye(3)):
        return []
    matrix = m.astype(int).tolist()
    return [
        f"{split}: the stored normals match the normals derived from depth (mean cos {agreement:.2f}) only after "
        f"the axis change n_camera = M · n_stored with M = {matrix}: stored in another axis convention (a folder in "
        f'the NYUD-MT layout converts on load with "normals_to_camera": {matrix} in its meta.json)'
    ]


def _towards_camera(normals: torch.Tensor, intrinsics: dict[str, float] | None) -> torch.Tensor:
    """``n · ray`` per pixel of ``(3, H, W)`` normals, ray = ``((u − cx)/fx, (v − cy)/fy, 1)`` from ``intrinsics``
    when they fit the image (principal point inside it), else ``(0, 0, 1)``; negative = facing the camera."""
    h, w = normals.shape[-2:]
    k = intrinsics or {}
    if not all(key in k for key in ("fx", "fy", "cx", "cy")) or not (0 <= k["cx"] <= w and 0 <= k["cy"] <= h):
        return normals[2]
    k = {key: float(k[key]) for key in ("fx", "fy", "cx", "cy")}
    u = (torch.arange(w, dtype=normals.dtype) - float(k["cx"])) / float(k["fx"])
    v = (torch.arange(h, dtype=normals.dtype) - float(k["cy"])) / float(k["fy"])
    return normals[0] * u[None, :] + normals[1] * v[:, None] + normals[2]


def check_dataset(
    root: str | os.PathLike,
    dataset: str | None = None,
    *,
    figure: str | os.PathLike | None = None,
    samples: int = 4,
    limit: int | None = None,
) -> CheckReport:
    """Check the dataset at ``root`` (module docstring). ``dataset`` is a registered name (detected from the
    folder when ``None``); ``figure`` the PNG to write (default ``ROOT/data_check.png``; a read-only root
    falls back to ``./data_check.png``); ``samples`` rows in it; ``limit`` samples checked per split."""
    root = Path(root)
    name = dataset if dataset is not None else detect_dataset(root)
    if name not in list_datasets():
        raise ConfigError(f"--dataset: unknown dataset {name!r}; valid datasets: {', '.join(list_datasets())}")
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    report = CheckReport(dataset=name, root=root, tasks=())
    opened = {}
    for split in SPLITS:
        try:
            opened[split] = open_dataset(name, root, split=split, tasks=())
        except DataError as e:
            report.absent[split] = str(e)
    if not opened:
        report.problems.append(f"no split could be opened: {'; '.join(report.absent.values())}")
        return report
    if "train" not in opened:
        report.problems.append(f"no train split: {report.absent['train']}")
    first = next(iter(opened))
    report.tasks = _supported_tasks(name, root, first)
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for split in opened:
        try:
            ds = open_dataset(name, root, split=split, tasks=report.tasks)
        except DataError as e:
            report.problems.append(f"{split}: {e}")
            continue
        meta = dict(getattr(ds, "meta", {}) or {})
        st = SplitStats(count=len(ds))  # type: ignore[arg-type]
        report.splits[split] = st
        n = st.count if limit is None else min(st.count, limit)
        show = set(np.linspace(0, max(n - 1, 0), min(samples, n)).round().astype(int).tolist()) if not rows else set()
        for i in range(n):
            try:
                sample = ds[i]
            except DataError as e:
                report.problems.append(f"{split}[{i}]: {e}")
                continue
            st.checked += 1
            sid = sample.get("meta", {}).get("id", i)
            report.problems += _check_sample(sample, st, meta, f"{split}[{i}] ({sid})")
            if i in show:
                rows.append((sample, meta))
        if st.normals_valid:
            share = st.normals_facing / st.normals_valid
            st.widen("normals facing the camera (share)", share, share)
            if share < MIN_FACING_SHARE:
                report.problems.append(
                    f"{split}: only {share:.0%} of the valid normals face the camera (expected nearly all in the "
                    "camera frame x right, y down, z forward): normals stored in another axis convention?"
                )
        if st.axes_pairs:
            report.problems += _check_axes(st, split)
        if st.normals_horizontal:
            up = st.normals_up / st.normals_horizontal
            st.widen("horizontal normals facing up (share)", up, up)
            if up < MIN_UP_SHARE:
                report.problems.append(
                    f"{split}: only {up:.0%} of the normals of horizontal surfaces face up (n_y < 0; expected most: "
                    "floors and ground outnumber ceilings): normals stored with y pointing up?"
                )
    if rows:
        path = Path(figure) if figure is not None else root / "data_check.png"
        report.figure = _draw(rows, report.tasks, path, title=f"{name}: {root}")
    return report


def _draw(rows: list[tuple[dict[str, Any], dict[str, Any]]], tasks: tuple[str, ...], path: Path, *, title: str) -> Path:
    """A grid: one row per sample, the image then every target drawn by its task's ``visualize``."""
    from matplotlib.figure import Figure

    from mtdense.config.schema import Config
    from mtdense.tasks import task_class

    meta = rows[0][1]
    drawers = {t: task_class(t).from_config(Config(), meta) for t in tasks}
    h, w = rows[0][0]["image"].shape[-2:]
    ncols = 1 + len(tasks)
    fig = Figure(figsize=(2.2 * ncols, 2.2 * len(rows) * h / w + 0.6), dpi=110, layout="constrained")
    grid = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (sample, _) in enumerate(rows):
        grid[r][0].imshow((sample["image"].permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8))
        grid[r][0].set_ylabel(str(sample.get("meta", {}).get("id", r)), fontsize="small")
        for c, t in enumerate(tasks, start=1):
            target = sample[t]
            if t == "edge":  # ignore (255) drawn as background
                target = torch.where(target == 255, torch.zeros_like(target), target)
            grid[r][c].imshow(drawers[t].visualize(target), interpolation="nearest")
    for c, label in enumerate(["image", *tasks]):
        grid[0][c].set_title(label)
    for ax in grid.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize="small")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    except OSError:
        path = Path.cwd() / path.name
        fig.savefig(path)
    return path
