"""``mtdense explain``: draw the internal maps a model exposes through its ``explain`` hook.

The model of a run (loaded as ``predict`` loads it, :func:`mtdense.engine.inference.load_run`) is
asked for :meth:`mtdense.models.MultiTaskModel.explain` on each image: a dict of named maps
``{name: (1, k, h, w)}``, e.g. TRL's attention map ``M`` of every task-attentional module (Zhang et
al., ECCV 2018, Fig. 4) or PSD's responses before and after diffusion. Nothing here knows which
architecture it draws; a model without the hook raises the hook's :class:`MtdenseError`.

Per image and map name (``/`` in a name becomes ``_`` in file names):

* ``<stem>_<name>.npy``: the raw map, float32 ``(k, h, w)`` at the model's own resolution;
* ``<stem>_<name>.png``: a titled figure: the input image, then the map resized (bilinear) to the
  image: every channel when ``k <= max_channels`` (each with its own colour bar), otherwise the
  mean over the ``k`` channels (Fig. 4 of TRL shows one map per module; which channel reduction the
  authors used is not stated, the mean is the choice here) followed by the ``max_channels - 1``
  channels of highest spatial variance, titled by their index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mtdense.engine.inference import LoadedRun, check_output_folder, find_images, load_run, pick_device, read_rgb
from mtdense.errors import MtdenseError, ShapeError
from mtdense.models import upsample_to

__all__ = ["explain_image", "explain_images", "map_file_stem", "save_explanation"]

PANEL_INCHES = 2.6
DPI = 120
_NAME = re.compile(r"^[A-Za-z0-9_\-/]+$")


def map_file_stem(name: str) -> str:
    """The file-name part of a map name: ``"tam5/depth"`` -> ``"tam5_depth"``.

    Raises:
        ShapeError: a name outside the hook's alphabet (letters, digits, ``_``, ``-``, ``/``).
    """
    if not _NAME.match(name):
        raise ShapeError(f"explain map name: expected letters, digits, '_', '-' or '/', got {name!r}")
    return name.replace("/", "_")


@torch.no_grad()
def explain_image(run: LoadedRun, rgb: np.ndarray, *, max_side: int = 1024) -> dict[str, np.ndarray]:
    """The model's explanation maps for one ``(H, W, 3)`` uint8 image: ``{name: float32 (k, h, w)}``.

    Like ``predict``, an image whose longer side exceeds ``max_side`` is downscaled first.

    Raises:
        MtdenseError: the model exposes no explanation maps (from the hook), or a map that is not
            ``(1, k, h, w)``.
    """
    model = run.model
    if not hasattr(model, "explain"):
        raise MtdenseError(f"model {run.cfg.model.name!r} exposes no explanation maps")
    device = next(model.parameters()).device
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
    h, w = x.shape[-2:]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1:
        x = upsample_to(x, (max(1, round(h * scale)), max(1, round(w * scale))))
    model.eval()
    maps = model.explain(x)
    out = {}
    for name, m in maps.items():
        if not isinstance(m, torch.Tensor) or m.ndim != 4 or m.shape[0] != 1:
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ShapeError(
                f"explain map {name!r} of model {run.cfg.model.name!r}: expected (1, k, h, w), got {shape}"
            )
        out[name] = m[0].float().cpu().numpy()
    return out


def _panels(m: np.ndarray, size: tuple[int, int], max_channels: int) -> list[tuple[str, np.ndarray]]:
    """``(title, (H, W) map)`` panels of one ``(k, h, w)`` map, resized bilinearly to ``size``."""
    t = upsample_to(torch.from_numpy(m)[None], size)[0].numpy()
    k = t.shape[0]
    if k <= max_channels:
        return [(f"channel {c}" if k > 1 else "map", t[c]) for c in range(k)]
    order = np.argsort(-m.reshape(k, -1).var(axis=1), kind="stable")[: max_channels - 1]
    return [(f"mean of {k} channels", t.mean(axis=0))] + [(f"channel {c}", t[c]) for c in order]


def save_explanation(
    image_path: Path, rgb: np.ndarray, maps: dict[str, np.ndarray], *, out: Path, max_channels: int = 4
) -> list[Path]:
    """Write ``<stem>_<name>.npy`` and the titled figure ``<stem>_<name>.png`` of every map; the paths written."""
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    size = (rgb.shape[0], rgb.shape[1])
    for name, m in maps.items():
        stem = f"{image_path.stem}_{map_file_stem(name)}"
        npy = out / f"{stem}.npy"
        np.save(npy, m.astype(np.float32))
        panels = _panels(m, size, max_channels)
        fig = Figure(figsize=(PANEL_INCHES * (len(panels) + 1), PANEL_INCHES * rgb.shape[0] / rgb.shape[1] + 0.6))
        axes = fig.subplots(1, len(panels) + 1, squeeze=False)[0]
        axes[0].imshow(rgb)
        axes[0].set_title(image_path.name, fontsize=8)
        for ax, (title, panel) in zip(axes[1:], panels, strict=True):
            im = ax.imshow(panel, cmap="viridis")
            ax.set_title(title, fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
        for ax in axes:
            ax.set_axis_off()
        fig.suptitle(f"{name}  ({m.shape[0]} x {m.shape[1]} x {m.shape[2]})", fontsize=10)
        png = out / f"{stem}.png"
        fig.savefig(png, dpi=DPI)  # no bbox_inches="tight": it renders the figure twice
        written += [npy, png]
    return written


def explain_images(
    run_or_ckpt: str | Path,
    images: Sequence[str | Path],
    out: str | Path,
    *,
    max_side: int = 1024,
    device: str | None = None,
) -> list[Path]:
    """``mtdense explain``: load the run, explain every image (files or folders), write into ``out``.

    Returns the files written. The inputs and the output folder are checked and the model asked for
    its maps of every image before anything is written, so an error (e.g. a model without the hook)
    leaves ``out`` untouched.
    """
    paths = find_images(list(images))
    out_dir = check_output_folder(out)
    run = load_run(run_or_ckpt, device=pick_device(device))
    results = [(p, rgb, explain_image(run, rgb, max_side=max_side)) for p, rgb in ((p, read_rgb(p)) for p in paths)]
    written: list[Path] = []
    for path, rgb, maps in results:
        written += save_explanation(path, rgb, maps, out=out_dir)
    return written
