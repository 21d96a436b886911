"""Loading a trained model for inference, prediction on any image, and release export.

A run directory, a ``.pt`` checkpoint or an exported ``.safetensors`` file are all accepted: the
checkpoint carries the resolved config and the dataset meta (class names, palette), and the
exported file carries both as JSON in its safetensors metadata, so ``predict`` needs nothing else.

Prediction outputs are named by the image's file stem (``photo_depth.png``); two inputs with the same
stem (``a/x.jpg`` and ``b/x.png``) would write the same files, so :func:`find_images` refuses them up
front, before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mtdense.config.load import validate_config
from mtdense.config.schema import Config
from mtdense.engine.checkpoint import load_checkpoint, load_model_state, resolve_checkpoint
from mtdense.engine.setup import build_model_for, build_tasks
from mtdense.errors import CheckpointError, DataError, MtdenseError
from mtdense.models import upsample_to
from mtdense.tasks import Task

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


@dataclass
class LoadedRun:
    cfg: Config
    model: nn.Module
    tasks: dict[str, Task]
    meta: dict[str, Any]
    source: Path


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` → ``cuda`` when available, else ``cpu``.

    A CUDA device asked for on a machine without CUDA is an :class:`~mtdense.errors.MtdenseError`
    naming the device, instead of a deep runtime error.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MtdenseError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev


def check_output_folder(out: str | Path) -> Path:
    """An output folder that is (or can be) a folder: an existing file of that name is an error naming it."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise DataError(f"--out {path}: expected a folder, but a file of that name exists")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise DataError(f"--out {path}: {parent} is a file, not a folder")
    return path


def load_run(run_or_ckpt: str | Path, *, device: torch.device | None = None) -> LoadedRun:
    """Rebuild the model of a run directory, checkpoint or exported ``.safetensors`` and load its weights."""
    path = resolve_checkpoint(run_or_ckpt)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        if "config" not in metadata:
            raise CheckpointError(f"{path}: no mtdense config in its metadata (was it written by `mtdense export`?)")
        raw_cfg, meta = json.loads(metadata["config"]), json.loads(metadata.get("meta", "{}"))
        state = load_checkpoint(path)
    else:
        state = load_checkpoint(path)
        if "config" not in state:
            raise CheckpointError(f"{path}: no config stored in the checkpoint")
        raw_cfg, meta = state["config"], state.get("meta", {})
    cfg = validate_config(raw_cfg, source=f"config stored in {path}")
    cfg.model.backbone.pretrained = None  # the checkpoint already holds the weights
    tasks = build_tasks(cfg, meta)
    model = build_model_for(cfg, tasks)
    load_model_state(model, state["model"], source=str(path))
    model.eval()
    if device is not None:
        model.to(device)
    return LoadedRun(cfg=cfg, model=model, tasks=tasks, meta=meta, source=path)


def export_safetensors(run_or_ckpt: str | Path, out: str | Path) -> Path:
    """Write release weights (model state_dict only, no optimiser) with the config and meta as metadata;
    :func:`mtdense.engine.export.export_run` with ``fmt="safetensors"``, replacing ``out``."""
    from mtdense.engine.export import export_run

    return export_run(run_or_ckpt, fmt="safetensors", out=out, overwrite=True)


def find_images(inputs: list[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image files.

    A missing path, no image at all, or two images with the same file stem (their outputs would
    overwrite each other) is a :class:`DataError` naming the files.
    """
    images: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            images.append(p)
        else:
            raise DataError(f"image or folder not found: {p}")
    if not images:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    by_stem: dict[str, list[Path]] = {}
    for p in dict.fromkeys(images):  # the same file given twice is predicted once
        by_stem.setdefault(p.stem, []).append(p)
    clashes = {stem: ps for stem, ps in by_stem.items() if len(ps) > 1}
    if clashes:
        listed = "; ".join(f"{stem}: {', '.join(map(str, ps))}" for stem, ps in clashes.items())
        raise DataError(
            f"images with the same file stem would write the same outputs ({listed}); "
            "rename them or predict them into separate --out folders"
        )
    return [ps[0] for ps in by_stem.values()]


def read_rgb(path: Path) -> np.ndarray:
    """An image file → ``(H, W, 3)`` uint8 RGB; a file that cannot be decoded is an error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


@torch.no_grad()
def predict_image(run: LoadedRun, rgb: np.ndarray, *, max_side: int = 1024) -> dict[str, torch.Tensor]:
    """Post-processed predictions ``{task: (C, H, W)}`` at the image's own size.

    Images whose longer side exceeds ``max_side`` are processed at a proportionally reduced size and
    the predictions resized back (bilinear), which bounds memory on large photos.
    """
    device = next(run.model.parameters(), torch.empty(0)).device  # no parameters (ONNX Runtime model): CPU
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
    h, w = x.shape[-2:]
    scale = min(1.0, max_side / max(h, w))
    inp = upsample_to(x, (max(1, round(h * scale)), max(1, round(w * scale)))) if scale < 1 else x
    outputs = run.model(inp)
    preds = {}
    for name in run.cfg.data.tasks:
        task = run.tasks[name]
        preds[name] = task.postprocess(upsample_to(outputs[name].float(), (h, w)))[0]
    return preds


def save_predictions(
    run: LoadedRun, image_path: Path, rgb: np.ndarray, preds: dict[str, torch.Tensor], out: Path
) -> list[Path]:
    """Per task a coloured PNG and the raw ``.npy`` array, plus a titled side-by-side figure ``<stem>_all.png``
    (class legend for semseg, depth colour bar in metres; :mod:`mtdense.engine.figures`)."""
    from PIL import Image

    from mtdense.engine.figures import FigureRow, draw_prediction_figure

    out.mkdir(parents=True, exist_ok=True)
    stem = image_path.stem
    written: list[Path] = []
    for name, pred in preds.items():
        task = run.tasks[name]
        vis = task.visualize(pred)
        png, npy = out / f"{stem}_{name}.png", out / f"{stem}_{name}.npy"
        Image.fromarray(vis).save(png)
        np.save(npy, task.to_array(pred))
        written += [png, npy]
    tasks = {name: run.tasks[name] for name in preds}
    written.append(
        draw_prediction_figure([FigureRow(rgb, preds)], tasks, out / f"{stem}_all.png", title=image_path.name)
    )
    return written
