"""NYU Depth V2 from the official files to the NYUD-MT layout (``mtdense data convert nyud``).

Inputs, as users download them:

* ``nyu_depth_v2_labeled.mat`` (NYU Depth V2, Silberman et al., ECCV 2012): MATLAB v7.3, i.e. HDF5,
  read with h5py. h5py sees every array transposed relative to MATLAB: ``images`` ``(N, 3, 640, 480)``
  uint8 (one image is ``a.transpose(2, 1, 0)`` → ``480×640×3``), ``depths`` ``(N, 640, 480)`` float32
  metres (the toolbox's in-painted, dense depth), ``labels`` ``(N, 640, 480)`` uint16 with the 894
  classes ``1..894`` and ``0 = unlabeled``, ``names`` a ``(1, 894)`` array of object references to
  uint16 character arrays (name ``i`` ↔ class id ``i + 1``).
* ``splits.mat`` (the official split; MATLAB v5, read with scipy.io): ``trainNdxs`` (795) and
  ``testNdxs`` (654), **1-based** image indices.
* optionally the surface normals of Eigen & Fergus (ICCV 2015): ``DIR/normals/%04d.png`` and
  ``DIR/masks/%04d.png`` with **0-based** indices over all 1449 images, uint8 RGB ``n = p / 127 − 1``
  (renormalised), ``(127, 127, 127)`` or a zero mask = invalid.

Output: the NYUD-MT layout read by :class:`mtdense.data.nyud.NYUDMT` (``images/<id>.png``,
``segmentation/<id>.png``, ``depth/<id>.npy``, ``normals/<id>.npy``, ``edge/<id>.npy``,
``gt_sets/train.txt`` and ``val.txt``, ``meta.json``), where ``<id>`` is the 1-based MATLAB index
zero-padded to 4 digits (``0001`` … ``1449``), the numbering of ``splits.mat``; the official test split
becomes ``val``, as in the NYUD-MT release. ``meta.json`` is written last, so a folder without it is an
interrupted conversion.

Labels: the 894 classes are mapped to the 40 classes of Gupta et al. (CVPR 2013, ``classMapping40.mat``),
or with ``classes=13`` further to the 13 classes of Couprie et al. (ICLR 2013) as used by Eigen & Fergus;
both tables ship in ``mtdense/data/nyuv2_meta.json``. Void (0) stays 0 (the reader turns it into 255).
The file's ``names`` are checked against the table the mapping was made for, so a file with another
class numbering is an error rather than silently mislabelled data.

Depth: the in-painted ``depths`` (dense, metres), the depth the NYUD-MT release carries.

Normals, always in the project's camera frame (x right, y down, z forward; unit vectors facing the
camera, i.e. ``n · P < 0`` for the 3-D point ``P`` they sit on):

* *derived* (default): :func:`~mtdense.data._geometry.normals_from_depth` on the dense depth with the NYU
  RGB intrinsics. The frame follows from the back-projection itself (column → +x, row → +y, depth → +z),
  so it needs no convention from elsewhere.
* *Eigen release* (``normals=DIR``): that release does not document its axis convention. It is
  established from the data: :func:`fit_normal_axes` tries all 48 signed axis permutations on the
  first images of the split and keeps the one that agrees best with the normals derived from the same
  images' depth (a wrong choice scores about 0 or below; the right one close to 1 on indoor scenes of
  walls and floors). The chosen matrix and its agreement (mean cosine) go into ``meta.json``
  (``normals_axes``, ``normals_agreement``); an agreement below :data:`MIN_AXES_AGREEMENT` is an error.

``meta.json`` says which normals were written (``normals_source``: ``eigen`` or ``derived_from_depth``).

Edges: semantic contours derived from the written label map by the rule of the synthetic benchmark
(:func:`mtdense.data.synthetic.renderer.thin_edges`): a pixel is an edge when a 4-neighbour has another
label and the pixel is the nearer of the two, giving 1-pixel contours on the occluding side.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ._geometry import normals_from_depth
from ._io import write_png

NYU_INTRINSICS = {"fx": 518.8579, "fy": 519.4696, "cx": 325.5824, "cy": 253.7362}
"""RGB intrinsics of the NYU Depth V2 Kinect (``camera_params.m`` of the NYU toolbox), pixels of the 480×640 image."""
MIN_AXES_AGREEMENT = 0.5
"""Least mean cosine between release normals (after the fitted axis change) and depth-derived normals."""
AXES_FIT_IMAGES = 8
"""How many images of the split :func:`fit_normal_axes` uses to establish a release's axis convention."""
CLASS_PROTOCOLS = (40, 13)


@cache
def nyu_tables() -> dict[str, Any]:
    """The label tables of ``nyuv2_meta.json`` (894 names, 894 → 40 and 40 → 13 maps, 40 and 13 names)."""
    text = resources.files("mtdense.data").joinpath("nyuv2_meta.json").read_text(encoding="utf-8")
    return json.loads(text)


def label_lut(classes: int) -> np.ndarray:
    """``(895,)`` uint8 look-up table: 894-class id (0 = void) → id of the ``classes`` protocol (0 = void)."""
    if classes not in CLASS_PROTOCOLS:
        raise ConfigError(f"--classes: expected one of {list(CLASS_PROTOCOLS)}, got {classes}")
    t = nyu_tables()
    lut = np.zeros(len(t["map894_to40"]) + 1, np.uint8)
    lut[1:] = t["map894_to40"]
    if classes == 13:
        lut13 = np.zeros(41, np.uint8)
        lut13[1:] = t["map40_to13"]
        lut = lut13[lut]
    return lut


def class_names(classes: int) -> list[str]:
    return list(nyu_tables()["names40" if classes == 40 else "names13"])


def label_palette(num_classes: int) -> list[list[int]]:
    """A display palette: the bit-interleaved colour map of PASCAL VOC for ids 1..K (black is left to void).
    The NYU files carry no palette; this one gives neighbouring ids well separated colours."""
    out = []
    for k in range(1, num_classes + 1):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append([r, g, b])
    return out


def signed_permutations() -> list[np.ndarray]:
    """The 48 signed 3×3 permutation matrices (every axis relabelling and flip)."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            for row, (col, s) in enumerate(zip(perm, signs, strict=True)):
                m[row, col] = s
            mats.append(m)
    return mats


def fit_normal_axes(stored: Sequence[np.ndarray], derived: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    """The signed axis permutation ``M`` (3×3) that maps ``stored`` normals into the frame of ``derived``.

    Both are lists of ``(H, W, 3)`` maps; pixels where either is the zero vector are left out. ``M``
    maximises the mean cosine ``mean((M n_s) · n_d)`` over all 48 signed permutations; returns ``M`` and
    that mean cosine (the agreement). Raises ``DataError`` when no pixel is valid in both.
    """
    a, b = [], []
    for s, d in zip(stored, derived, strict=True):
        valid = (np.abs(s).sum(-1) > 0) & (np.abs(d).sum(-1) > 0)
        a.append(s[valid].astype(np.float64))
        b.append(d[valid].astype(np.float64))
    sa, db = np.concatenate(a), np.concatenate(b)
    if len(sa) == 0:
        raise DataError("cannot establish the normals' axis convention: no pixel valid in both normal maps")
    cross = sa.T @ db / len(sa)  # mean of outer products: agreement of M is sum(M * cross.T)
    scores = [float(np.sum(m * cross.T)) for m in signed_permutations()]
    best = int(np.argmax(scores))
    return signed_permutations()[best], scores[best]


def decode_eigen_normals(rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Eigen & Fergus normals PNG ``(H, W, 3)`` uint8 → ``(H, W, 3)`` float32 unit vectors in the release's
    own axes: ``n = p / 127 − 1`` renormalised; ``(127, 127, 127)``, a zero ``mask`` or a zero vector → 0."""
    n = rgb.astype(np.float32) / 127.0 - 1.0
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = ~np.all(rgb == 127, axis=-1) & (norm[..., 0] > 1e-6)
    if mask is not None:
        valid &= (mask if mask.ndim == 2 else mask[..., 0]) > 0
    return np.where(valid[..., None], n / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)


def _read_eigen(folder: Path, index0: int, shape: tuple[int, int]) -> np.ndarray:
    from ._io import read_image

    npath, mpath = folder / "normals" / f"{index0:04d}.png", folder / "masks" / f"{index0:04d}.png"
    for p in (npath, mpath):
        if not p.is_file():
            raise DataError(
                f"--normals: Eigen normals file not found: {p} (expected DIR/normals/%04d.png and "
                "DIR/masks/%04d.png, 0-based indices over the 1449 images)"
            )
    rgb = read_image(npath)
    mask = read_image(mpath)[..., 0]
    if rgb.shape[:2] != shape:
        raise DataError(f"{npath}: expected a {shape[0]}x{shape[1]} normal map as the images, got {rgb.shape[:2]}")
    if mask.shape != rgb.shape[:2]:
        raise DataError(f"{mpath}: expected shape {rgb.shape[:2]} to match {npath.name}, got {mask.shape}")
    return decode_eigen_normals(rgb, mask)


def read_splits(path: str | os.PathLike, n_images: int) -> dict[str, list[int]]:
    """``splits.mat`` → ``{"train": [...], "val": [...]}`` of 1-based indices (``trainNdxs``, ``testNdxs``),
    checked: integers in ``1..n_images``, no duplicates, disjoint."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"--splits: file not found: {path}")
    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError:
        raise DataError(f"{path}: a MATLAB v7.3 file; expected the official splits.mat (MATLAB v5)") from None
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... for a corrupt file
        raise DataError(f"{path}: cannot read as a MATLAB v5 .mat file ({type(e).__name__}: {e})") from None
    out: dict[str, list[int]] = {}
    for key, split in (("trainNdxs", "train"), ("testNdxs", "val")):
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise DataError(f"{path}: no key {key!r} (expected trainNdxs and testNdxs, found {found})")
        a = np.asarray(mat[key])
        if a.size == 0 or not np.issubdtype(a.dtype, np.number) or not np.all(a == np.round(a)):
            raise DataError(f"{path}: {key}: expected a non-empty array of integer indices, got {a.dtype} {a.shape}")
        idx = [int(x) for x in a.ravel()]
        if min(idx) < 1 or max(idx) > n_images:
            raise DataError(
                f"{path}: {key}: expected 1-based indices in 1..{n_images} (the images of the .mat file), "
                f"got values in {min(idx)}..{max(idx)}"
            )
        if len(set(idx)) != len(idx):
            raise DataError(f"{path}: {key} lists an index twice")
        out[split] = idx
    both = set(out["train"]) & set(out["val"])
    if both:
        raise DataError(f"{path}: trainNdxs and testNdxs share {len(both)} indices (first: {min(both)})")
    return out


class _LabeledMat:
    """Checked access to ``nyu_depth_v2_labeled.mat`` (module docstring); every failure names the file."""

    SHAPES = {"images": 4, "depths": 3, "labels": 3}

    def __init__(self, path: Path) -> None:
        import h5py

        self.path = path
        if not path.is_file():
            raise DataError(f"--mat: file not found: {path}")
        try:
            self.f = h5py.File(path, "r")
        except OSError as e:
            raise DataError(
                f"{path}: not a readable MATLAB v7.3 (HDF5) file — corrupt, truncated or another format ({e}); "
                "expected nyu_depth_v2_labeled.mat of NYU Depth V2"
            ) from None
        for key, ndim in self.SHAPES.items():
            if key not in self.f:
                found = sorted(self.f.keys())
                self.close()
                raise DataError(f"{path}: no {key!r} array (found {found}); expected the labeled file")
            if self.f[key].ndim != ndim:
                shape = self.f[key].shape
                self.close()
                raise DataError(f"{path}: {key}: expected {ndim} dimensions, got shape {shape}")
        self.n = self.f["images"].shape[0]
        w, h = self.f["images"].shape[2:]
        self.hw = (int(h), int(w))
        want = {"images": (self.n, 3, w, h), "depths": (self.n, w, h), "labels": (self.n, w, h)}
        for key, shape in want.items():
            if self.f[key].shape != shape:
                got = self.f[key].shape
                self.close()
                raise DataError(f"{path}: {key}: expected shape {shape} (as h5py sees MATLAB's arrays), got {got}")

    def names(self, indices: Sequence[int] | None = None) -> dict[int, str]:
        """Class names by 0-based position (all, or those of ``indices``), decoded from the object references."""
        if "names" not in self.f:
            raise DataError(f"{self.path}: no 'names' array; expected the labeled file")
        refs = np.asarray(self.f["names"]).ravel()
        self.n_names = len(refs)
        out = {}
        try:
            for i in range(len(refs)) if indices is None else [i for i in indices if i < len(refs)]:
                out[i] = "".join(chr(c) for c in np.asarray(self.f[refs[i]]).ravel())
        except Exception as e:  # bad references, non-numeric arrays
            raise DataError(f"{self.path}: cannot read the class names ('names' object references): {e}") from None
        return out

    def read(self, key: str, index1: int) -> np.ndarray:
        """Item ``index1`` (1-based) of ``key`` in image layout (``(H, W, 3)`` or ``(H, W)``)."""
        try:
            a = np.asarray(self.f[key][index1 - 1])
        except Exception as e:  # h5py raises OSError/KeyError/RuntimeError on truncated or damaged chunks
            raise DataError(
                f"{self.path}: cannot read {key}[{index1}] — truncated or corrupt file? ({type(e).__name__}: {e})"
            ) from None
        return a.transpose(2, 1, 0) if a.ndim == 3 else a.T

    def close(self) -> None:
        self.f.close()


NAME_CHECK_STRIDE = 29
"""Every 29th class name (and the last) is compared with the table: reading all 894 object references costs
over a second, and a file with another numbering differs almost everywhere."""


def _check_names(src: _LabeledMat) -> None:
    table = nyu_tables()["names894"]
    names = src.names([*range(0, len(table), NAME_CHECK_STRIDE), len(table) - 1])
    if src.n_names != len(table):
        raise DataError(f"{src.path}: 'names' has {src.n_names} classes, expected {len(table)} (the 894 NYU classes)")
    for i, name in sorted(names.items()):
        if name.strip().lower() != table[i].lower():
            raise DataError(
                f"{src.path}: class {i + 1} is named {name!r}, expected {table[i]!r}: another class numbering than "
                "the one the 40-class mapping was made for"
            )


OUTPUTS = {"images", "segmentation", "depth", "normals", "edge", "gt_sets", "meta.json", ".meta.json.tmp"}


def _check_out(out: Path) -> None:
    """``out`` may be absent, empty, or a (possibly interrupted) NYUD conversion; anything else is kept safe."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"--out {out} is a file; expected a folder")
    other = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS)
    meta_path = out / "meta.json"
    previous: Any = {"dataset": "nyud-v2"}
    if meta_path.is_file():
        try:
            previous = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
    if other or not isinstance(previous, dict) or previous.get("dataset") != "nyud-v2":
        raise DataError(
            f"--out {out} holds something else than a NYUD conversion ({other[:3] or 'meta.json'}); "
            "choose an empty or new folder"
        )


def convert_nyud(
    mat: str | os.PathLike,
    splits: str | os.PathLike,
    out: str | os.PathLike,
    *,
    normals: str | os.PathLike | None = None,
    classes: int = 40,
    progress: bool = True,
) -> Path:
    """Convert the official NYU Depth V2 files to the NYUD-MT layout in ``out`` (module docstring); returns ``out``.

    ``out`` must be empty, absent, or a previous conversion (it is then overwritten). Every missing or
    malformed input is a :class:`DataError` naming the file, key or image.
    """
    lut = label_lut(classes)
    mat, out = Path(mat), Path(out)
    normals_dir = None if normals is None else Path(normals)
    if normals_dir is not None and not normals_dir.is_dir():
        raise DataError(f"--normals: folder not found: {normals_dir}")
    _check_out(out)
    src = _LabeledMat(mat)
    try:
        _check_names(src)
        split_ids = read_splits(splits, src.n)
        (out / "meta.json").unlink(missing_ok=True)  # the completion marker goes last
        for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        order = sorted(split_ids["train"] + split_ids["val"])
        axes, agreement = None, None
        if normals_dir is not None:
            first = split_ids["train"][:AXES_FIT_IMAGES]
            stored = [_read_eigen(normals_dir, i - 1, src.hw) for i in first]
            derived = [normals_from_depth(src.read("depths", i), **NYU_INTRINSICS) for i in first]
            axes, agreement = fit_normal_axes(stored, derived)
            if agreement < MIN_AXES_AGREEMENT:
                raise DataError(
                    f"--normals {normals_dir}: no axis convention of these normals agrees with the geometry of the "
                    f"depth maps (best mean cosine {agreement:.2f} < {MIN_AXES_AGREEMENT}); are they the Eigen "
                    "normals of this file? Convert without --normals to derive normals from depth"
                )
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(order), desc="convert nyud", unit="img", dynamic_ncols=True)
        for i in order:
            _write_one(src, i, out, lut=lut, normals_dir=normals_dir, axes=axes)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        src.close()
    for split, ids in split_ids.items():
        (out / "gt_sets" / f"{split}.txt").write_text("".join(f"{i:04d}\n" for i in ids))
    meta = {
        "dataset": "nyud-v2",
        "protocol": f"nyud{classes}",
        "num_classes": classes,
        "class_names": class_names(classes),
        "palette": label_palette(classes),
        "intrinsics": dict(NYU_INTRINSICS),
        "depth": "in-painted dense depth ('depths' of the labeled file), metres",
        "normals_source": "eigen" if normals_dir is not None else "derived_from_depth",
        "normals_frame": "camera: x right, y down, z forward; unit vectors facing the camera; zero = invalid",
        "edges": "semantic contours of the label map, 1 px on the nearer side",
        "splits": {split: len(ids) for split, ids in split_ids.items()},
        "source": {"mat": mat.name, "splits": Path(splits).name, "normals": None if normals is None else str(normals)},
    }
    if axes is not None:
        meta["normals_axes"] = axes.astype(int).tolist()
        meta["normals_agreement"] = round(float(agreement), 4)
    tmp = out / ".meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, out / "meta.json")
    return out


def _write_one(
    src: _LabeledMat, i: int, out: Path, *, lut: np.ndarray, normals_dir: Path | None, axes: np.ndarray | None
) -> None:
    from mtdense.data.synthetic.renderer import thin_edges

    sid = f"{i:04d}"
    image = src.read("images", i)
    depth = src.read("depths", i).astype(np.float32)
    labels = src.read("labels", i)
    if int(labels.max(initial=0)) >= len(lut):
        raise DataError(f"{src.path}: labels[{i}] holds id {int(labels.max())}, above the 894 NYU classes")
    seg = lut[labels]
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)
    if normals_dir is not None:
        n = _read_eigen(normals_dir, i - 1, src.hw) @ axes.T.astype(np.float32)
    else:
        n = normals_from_depth(depth, **NYU_INTRINSICS)
    edge = thin_edges(seg, np.where(depth > 0, depth, np.float32(np.inf)))
    write_png(out / "images" / f"{sid}.png", np.ascontiguousarray(image, np.uint8))
    write_png(out / "segmentation" / f"{sid}.png", np.ascontiguousarray(seg))
    np.save(out / "depth" / f"{sid}.npy", depth)
    np.save(out / "normals" / f"{sid}.npy", np.ascontiguousarray(n, np.float32))
    np.save(out / "edge" / f"{sid}.npy", edge.astype(np.float32))
