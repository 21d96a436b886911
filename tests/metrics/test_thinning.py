"""Thinning = MATLAB ``bwmorph(bw, 'thin', Inf)``: lookup table, hand cases, and the sparse bit-sliced
implementation against a plain dense lookup-table implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from mtdense.metrics import thin
from mtdense.metrics._thinning import _deletable, pack_levels, thin_packed, unpack_planes

# Codes (bit k-1 = neighbour x_k: E, NE, N, NW, W, SW, S, SE) deletable in the first / second subiteration.
# These are the 37 + 37 entries of the two lookup tables that MATLAB's ``thin`` and scikit-image's
# ``thin`` (G123_LUT / G123P_LUT) use; listed here as an independent reference for ``_deletable``.
FIRST = [14, 20, 22, 28, 30, 52, 54, 56, 60, 62, 80, 84, 86, 88, 92, 94, 112, 116, 118, 120, 124, 126,
         193, 208, 209, 212, 216, 217, 220, 224, 225, 240, 241, 244, 248, 249, 252]  # fmt: skip
SECOND = [5, 7, 13, 14, 15, 28, 29, 30, 31, 65, 67, 69, 71, 77, 79, 97, 99, 101, 103, 131, 133, 135, 141,
          143, 157, 159, 193, 195, 197, 199, 205, 207, 224, 225, 227, 229, 231]  # fmt: skip


def _lut(second: bool) -> np.ndarray:
    codes = np.arange(256)
    x = [((codes >> k) & 1).astype(np.uint64) * np.uint64(0xFFFFFFFFFFFFFFFF) for k in range(8)]
    return _deletable(x, second) != 0


def test_lookup_tables_match_matlab():
    assert np.flatnonzero(_lut(False)).tolist() == FIRST
    assert np.flatnonzero(_lut(True)).tolist() == SECOND


def test_lookup_table_by_hand():
    # North-boundary pixel of a thick bar: E, W, SW, S, SE set -> code 1 + 16 + 32 + 64 + 128 = 241.
    # b2 = ~x3 & (x4 | x5) = 1 is the only b_i, so X_H = 1 (G1); n1 = n2 = 3 (G2); G3: x2 = x3 = 0 and x8 = 1,
    # so (x2 | x3 | ~x8) & x1 = 0 -> deletable in the first subiteration (241 in FIRST).
    # South-boundary pixel: E, NE, N, NW, W set -> code 31. G1, G2 hold the same way but G3 fails
    # ((x2 | ...) & x1 = 1), so it survives the first subiteration; G3' = ~((x6 | x7 | ~x4) & x5) holds
    # (x6 = x7 = 0, x4 = 1) so the second subiteration deletes it.
    assert _lut(False)[241] and not _lut(True)[241]
    assert _lut(True)[31] and not _lut(False)[31]
    # an interior pixel (all 8 neighbours, 255) and an isolated pixel (0) are never deleted (X_H = 0)
    assert not _lut(False)[255] and not _lut(True)[255] and not _lut(False)[0] and not _lut(True)[0]


def _thin_dense(mask: np.ndarray) -> np.ndarray:
    """Reference: the plain parallel algorithm on the whole image with the two lookup tables."""
    weights = np.array([[8, 4, 2], [16, 0, 1], [32, 64, 128]])
    luts = (_lut(False), _lut(True))
    out = mask.astype(np.uint8).copy()
    while True:
        before = out.copy()
        for lut in luts:
            codes = ndi.correlate(out, weights, mode="constant", cval=0)
            out[lut[codes]] = 0
        if np.array_equal(before, out):
            return out.astype(bool)


def test_thick_bar_becomes_one_pixel_line():
    # 3 x 8 bar (rows 2-4, cols 2-9). First subiteration: the north row goes (code 241 above) and the east
    # column (x1 = 0 makes G3 hold); second: the south row (code 31) and the west column. What is left
    # is the middle row, one pixel shorter at each end: row 3, cols 3..8. A further pass deletes nothing
    # (end points have n1 = n2 = 1 < 2, inner points X_H = 2).
    bar = np.zeros((7, 12), bool)
    bar[2:5, 2:10] = True
    expected = np.zeros_like(bar)
    expected[3, 3:9] = True
    np.testing.assert_array_equal(thin(bar), expected)


def test_reference_case_with_hole():
    # Example used by scikit-image to check its ``thin`` against MATLAB's bwmorph (a 5x5 object with a
    # hole keeps a ring around the hole).
    image = np.array([[0, 0, 0, 0, 0, 0, 0],
                      [0, 1, 2, 3, 4, 5, 0],
                      [0, 1, 0, 1, 1, 1, 0],
                      [0, 1, 1, 1, 1, 1, 0],
                      [0, 6, 1, 1, 1, 1, 0],
                      [0, 1, 1, 1, 1, 1, 0],
                      [0, 0, 0, 0, 0, 0, 0]])  # fmt: skip
    expected = np.array([[0, 0, 0, 0, 0, 0, 0],
                         [0, 0, 1, 0, 0, 0, 0],
                         [0, 1, 0, 1, 0, 0, 0],
                         [0, 0, 1, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0, 0]], bool)  # fmt: skip
    np.testing.assert_array_equal(thin(image), expected)


def test_points_and_thin_lines_are_kept():
    img = np.zeros((9, 9), bool)
    img[1, 1] = True  # isolated point
    img[4, 2:8] = True  # 1-pixel line: inner pixels have X_H = 2, end points n = 1
    img[6:9, 0] = True  # 1-pixel vertical line touching the border
    np.testing.assert_array_equal(thin(img), img)


def test_thin_diagonal_band_is_one_pixel_wide():
    yy, xx = np.mgrid[:40, :40]
    band = np.abs(yy - xx) <= 2  # 5-pixel wide diagonal band
    out = thin(band)
    blocks = out[:-1, :-1] & out[1:, :-1] & out[:-1, 1:] & out[1:, 1:]
    assert out.any() and not blocks.any()  # no 2x2 block of foreground: one pixel wide
    assert ndi.label(out, structure=np.ones((3, 3)))[0].max() == 1  # still one 8-connected stroke


@pytest.mark.parametrize("seed", range(4))
def test_sparse_equals_dense(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        h, w = rng.integers(1, 30, 2)
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        mask = ndi.binary_dilation(mask, iterations=int(rng.integers(0, 3)))
        np.testing.assert_array_equal(thin(mask), _thin_dense(mask))


def test_all_threshold_planes_equal_separate_thinning():
    rng = np.random.default_rng(7)
    thresholds = np.linspace(0.01, 0.99, 99)  # 99 planes: two 64-bit words per pixel
    prob = ndi.gaussian_filter(rng.random((24, 30)), 1.5)
    prob = (prob - prob.min()) / np.ptp(prob)
    levels = np.searchsorted(thresholds, prob, side="right")
    pixels, bits = unpack_planes(thin_packed(pack_levels(levels, 99)), 99)
    for k, t in enumerate(thresholds):
        np.testing.assert_array_equal(
            pixels[bits[k]], np.flatnonzero(_thin_dense(prob >= t)), err_msg=f"k={k}"
        )
