"""16-bit PNG decoding that keeps all 16 bits (depth maps, SYNTHIA's 16-bit RGB label images).

Pillow opens a 16-bit grey PNG as mode ``I;16`` but converts a 16-bit *RGB* PNG to 8-bit ``RGB``,
silently dropping the low byte; SYNTHIA's label images are 16-bit RGB (class id in the red
channel), so they need another decoder. OpenCV (``opencv-python-headless``, a dependency) decodes
every PNG bit depth unchanged with ``IMREAD_UNCHANGED`` and is fast enough for thousands of
1280×760 images; its channel order is BGR, which :func:`read_png` turns back into the file's RGB
order so that callers index channels as the PNG specification orders them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError


def read_png(path: str | os.PathLike, *, what: str = "PNG", dtype: type | None = None) -> np.ndarray:
    """Decode a PNG at its stored bit depth: ``(H, W)`` or ``(H, W, C)`` in the file's channel order (RGB/RGBA).

    Args:
        path: the file.
        what: what the file is, for error messages ("depth map", "label map").
        dtype: when given (``np.uint16`` or ``np.uint8``), a file stored at another bit depth is a
            :class:`DataError` ("expected 16-bit, got 8-bit"), so that an 8-bit re-save of a 16-bit
            depth map is never read as metres / 256.

    Raises:
        DataError: the file is missing or cannot be decoded, or its bit depth is not ``dtype``.
    """
    import cv2  # imported here: OpenCV is only needed by the readers of 16-bit datasets

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    a = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if a is None:
        raise DataError(f"cannot decode {what} {path}: not a readable PNG (truncated or corrupt)")
    if a.ndim == 3:
        a = a[..., 2::-1] if a.shape[2] == 3 else a[..., [2, 1, 0, 3]]  # BGR(A) -> RGB(A)
        a = np.ascontiguousarray(a)
    if dtype is not None and a.dtype != dtype:
        bits = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}
        raise DataError(
            f"{what} {path}: expected a {bits.get(np.dtype(dtype), dtype)}-bit PNG, "
            f"got {bits.get(a.dtype, a.dtype)}-bit"
        )
    return a
