"""Fixtures shared by the dataset-reader tests."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def _encode_png(path: Path, a: np.ndarray) -> None:
    """PNG bytes of a uint8/uint16 (H, W) or (H, W, 3) array, filter 0, big-endian samples (PNG spec)."""
    a = np.ascontiguousarray(a)
    depth = 16 if a.dtype == np.uint16 else 8
    colour = 0 if a.ndim == 2 else 2
    rows = a.astype(">u2" if depth == 16 else np.uint8).reshape(a.shape[0], -1).view(np.uint8)
    raw = np.concatenate([np.zeros((a.shape[0], 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", a.shape[1], a.shape[0], depth, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.fixture()
def write_png() -> Callable[[Path, np.ndarray], None]:
    """``write_png(path, array)``: a PNG encoder written from the PNG specification, independent of the
    readers' decoders (OpenCV for 16-bit files, Pillow for 8-bit ones), so a fixture tests the decoding."""
    return _encode_png
