"""Camera geometry shared by the dataset readers and converters.

* :func:`normals_from_depth`: surface normals derived from a depth map and the pinhole intrinsics, in the
  data contract's camera frame (x right, y down, z forward), facing the camera.
"""

from __future__ import annotations

import numpy as np


def normals_from_depth(depth: np.ndarray, *, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Unit surface normals ``(H, W, 3)`` float32 from a depth map ``(H, W)`` in metres (0 or non-finite = invalid).

    Each pixel ``(u, v)`` (column, row, 0-based) back-projects to ``P = z·((u − cx)/fx, (v − cy)/fy, 1)``
    in the camera frame (x right, y down, z forward). With the central differences
    ``Pu = P[v, u+1] − P[v, u−1]`` and ``Pv = P[v+1, u] − P[v−1, u]`` the normal is
    ``n = Pv × Pu / |Pv × Pu|``, turned where needed to face the camera (``n · P < 0``): on a
    fronto-parallel plane ``Pu ∝ +x`` and ``Pv ∝ +y``, so ``n = −z``, the orientation the synthetic
    benchmark and the normals task use. The differences are exact on a plane, so a plane's depth map
    gives its normal to float rounding (tested). Pixels whose centre or any of the four neighbours has no
    depth, degenerate (zero-area) neighbourhoods and the image border get the zero vector (invalid).
    The half-pixel convention of ``cx, cy`` moves normals by far less than a degree at the focal lengths
    of the supported datasets (300 px and more).

    Raises:
        ValueError: ``depth`` is not 2-D.
    """
    z = np.asarray(depth, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"normals_from_depth: expected a (H, W) depth map, got shape {z.shape}")
    h, w = z.shape
    out = np.zeros((h, w, 3), np.float32)
    if h < 3 or w < 3:
        return out
    u = (np.arange(w, dtype=np.float64) - cx) / fx
    v = (np.arange(h, dtype=np.float64) - cy) / fy
    p = np.stack([z * u[None, :], z * v[:, None], z], axis=-1)
    du = p[1:-1, 2:] - p[1:-1, :-2]  # central differences along u (columns) and v (rows), interior only
    dv = p[2:, 1:-1] - p[:-2, 1:-1]
    n = np.cross(dv, du)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    ok = np.isfinite(z) & (z > 0)
    valid = ok[1:-1, 1:-1] & ok[1:-1, 2:] & ok[1:-1, :-2] & ok[2:, 1:-1] & ok[:-2, 1:-1] & (norm[..., 0] > 1e-12)
    with np.errstate(invalid="ignore"):  # non-finite depths give NaN; those pixels are invalid
        n = n / np.where(norm > 0, norm, 1.0)
        n[np.sum(n * p[1:-1, 1:-1], axis=-1) > 0] *= -1
    out[1:-1, 1:-1] = np.where(valid[..., None], n, 0.0)
    return out
