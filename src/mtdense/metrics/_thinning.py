"""Morphological thinning to convergence, as MATLAB's ``bwmorph(bw, 'thin', Inf)``.

The BSDS / SEISM edge benchmark thins both the ground-truth boundaries and every binarised prediction
with ``bwmorph(..., 'thin', Inf)`` before matching (the BSDS / SEISM protocol). MATLAB's
``thin`` is the two-subiteration parallel algorithm of Guo & Hall as given in Lam, Lee & Suen, "Thinning
Methodologies -- A Comprehensive Survey", IEEE TPAMI 14(9), 1992, p. 879. With the 8-neighbours of a
pixel ``p`` numbered ``x1 .. x8`` counter-clockwise from the east neighbour (``x1`` = E, ``x2`` = NE,
``x3`` = N, ``x4`` = NW, ``x5`` = W, ``x6`` = SW, ``x7`` = S, ``x8`` = SE, ``x9 = x1``):

* G1: ``X_H(p) = 1`` where ``X_H(p) = sum_{i=1..4} b_i``,
  ``b_i = (not x_{2i-1}) and (x_{2i} or x_{2i+1})``;
* G2: ``2 <= min(n1(p), n2(p)) <= 3`` with ``n1 = sum_k (x_{2k-1} or x_{2k})``,
  ``n2 = sum_k (x_{2k} or x_{2k+1})``;
* G3 (first subiteration): ``(x2 or x3 or not x8) and x1`` is false;
  G3' (second subiteration): ``(x6 or x7 or not x4) and x5`` is false.

In each subiteration every foreground pixel that satisfies G1, G2 and G3 (resp. G3') is deleted at
once (parallel update); the two subiterations alternate until a full pass deletes nothing. Pixels
outside the image count as background, as in ``bwmorph``.

Implementation (no Python loop over pixels):

* Many binary images are thinned together, one per *bit* of a ``uint64`` word per pixel (bit-slicing):
  the edge benchmark thins the prediction at 99 thresholds, packed into two words per pixel, so one
  boolean formula evaluates G1-G3 for all thresholds at once (``_deletable``).
* Only *candidate* pixels are examined: after the first pass over the foreground, a pixel can change
  its decision only if one of its 8 neighbours changed, so the candidates of a subiteration are the
  neighbours of the pixels deleted in the two previous subiterations. The work is proportional to the
  number of deleted pixels (times 9), not to ``iterations x image size``. The result is identical to the
  dense algorithm (tests compare it with a dense lookup-table implementation).
"""

from __future__ import annotations

import numpy as np

_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def _deletable(x: list[np.ndarray], second: bool) -> np.ndarray:
    """Bit-sliced deletion test: bit ``b`` of the result is set where G1, G2 and G3 (or G3') hold.

    ``x`` holds the neighbour words ``x1 .. x8`` (any integer dtype, same shape); ``second`` selects
    G3' (second subiteration). The centre pixel itself is not tested here.
    """
    x1, x2, x3, x4, x5, x6, x7, x8 = x
    # in-place operations throughout: this runs on every candidate pixel of every subiteration.
    # ``(a | b) ^ b`` is ``a & ~b`` without a temporary for ``~b``.
    o23, o45, o67, o81 = x2 | x3, x4 | x5, x6 | x7, x8 | x1  # the n2 terms
    # G3 / G3' need o23 / o67 intact: evaluate them first. h = (o23 | ~x8) & x1 resp. (o67 | ~x4) & x5
    h = ~x4 if second else ~x8
    h |= o67 if second else o23
    h &= x5 if second else x1
    # b_i = (x_{2i} | x_{2i+1}) & ~x_{2i-1}
    b1 = o23 | x1
    b1 ^= x1
    b2 = o45 | x3
    b2 ^= x3
    b3 = o67 | x5
    b3 ^= x5
    b4 = o81 | x7
    b4 ^= x7
    # G1: exactly one b_i. Odd parity without any pair <=> exactly one (three would contain a pair).
    keep = b1 ^ b2
    p34 = b3 ^ b4
    b1 &= b2
    b3 &= b4
    b1 |= b3
    b2 = keep & p34
    b1 |= b2  # b1 = "at least two b_i"
    keep ^= p34
    keep |= b1
    keep ^= b1
    keep |= h  # not G3
    keep ^= h
    # G2: n1 >= 2 and n2 >= 2 and not (n1 == 4 and n2 == 4)  <=>  2 <= min(n1, n2) <= 3
    o12, o34, o56, o78 = x1 | x2, x3 | x4, x5 | x6, x7 | x8  # the n1 terms
    a1 = o12 & o34
    c1 = o56 & o78
    o12 ^= o34
    o56 ^= o78
    o12 &= o56
    o12 |= a1
    o12 |= c1
    keep &= o12  # n1 >= 2
    a1 &= c1  # n1 == 4
    a2 = o23 & o45
    c2 = o67 & o81
    o23 ^= o45
    o67 ^= o81
    o23 &= o67
    o23 |= a2
    o23 |= c2
    keep &= o23  # n2 >= 2
    a2 &= c2  # n2 == 4
    a1 &= a2
    keep |= a1
    keep ^= a1
    return keep


def thin_packed(words: np.ndarray) -> np.ndarray:
    """Thin every bit-plane of ``words`` to convergence (``bwmorph(plane, 'thin', Inf)`` per bit).

    Args:
        words: ``(H, W, N)`` array of ``uint64``; bit ``b`` of word ``n`` at ``(y, x)`` is pixel ``(y, x)``
            of binary image number ``64 n + b``.

    Returns:
        A new ``(H, W, N)`` ``uint64`` array with every bit-plane thinned.
    """
    if words.ndim != 3 or words.dtype != np.uint64:
        raise ValueError(f"thin_packed: expected (H, W, N) uint64, got {words.dtype} {words.shape}")
    height, width, nwords = words.shape
    stride = width + 2
    # one padded, flattened plane per word: neighbour lookups become index offsets
    planes = []
    for w in range(nwords):
        plane = np.zeros((height + 2, stride), np.uint64)
        plane[1:-1, 1:-1] = words[:, :, w]
        planes.append(plane.ravel())
    offsets = np.array([1, 1 - stride, -stride, -stride - 1, -1, stride - 1, stride, stride + 1])
    alive = np.zeros(planes[0].size, bool)
    for plane in planes:
        alive |= plane != 0
    foreground = np.flatnonzero(alive)
    # stamp[i] = position of i in the array being de-duplicated (O(n), no sort)
    stamp = np.empty(planes[0].size, np.int64)
    candidates = [foreground, foreground]
    sub, idle = 0, 0
    while idle < 2:  # two subiterations in a row without deletion = a full pass without change
        cand = candidates[sub]
        decisions = []
        hit = np.zeros(cand.size, bool)
        for plane in planes:
            centre = plane[cand]
            live = np.flatnonzero(centre)
            idx = cand[live]
            dele = _deletable([plane[idx + o] for o in offsets], second=bool(sub)) & centre[live]
            nz = dele != 0
            decisions.append((idx[nz], dele[nz]))
            hit[live[nz]] = True
        changed = cand[hit]
        if changed.size == 0:
            idle += 1
            candidates[sub] = cand[:0]
            sub = 1 - sub
            continue
        idle = 0
        for plane, (idx, dele) in zip(
            planes, decisions, strict=True
        ):  # parallel update: all decisions were taken first
            plane[idx] &= ~dele
        neighbours = _unique((changed[:, None] + offsets[None, :]).ravel(), stamp)
        live = np.zeros(neighbours.size, bool)
        for plane in planes:
            live |= plane[neighbours] != 0
        neighbours = neighbours[live]
        # a pixel's decision can only change when a neighbour changed: re-examine those, for this
        # subiteration's rule next time and for the other rule right away
        candidates[sub] = neighbours
        candidates[1 - sub] = _unique(np.concatenate([candidates[1 - sub], neighbours]), stamp)
        sub = 1 - sub
    out = np.empty_like(words)
    for w, plane in enumerate(planes):
        out[:, :, w] = plane.reshape(height + 2, stride)[1:-1, 1:-1]
    return out


def _unique(idx: np.ndarray, stamp: np.ndarray) -> np.ndarray:
    """De-duplicate non-negative indices in O(n) with a scratch array (order not preserved exactly)."""
    pos = np.arange(idx.size)
    stamp[idx] = pos
    return idx[stamp[idx] == pos]


def thin(mask: np.ndarray) -> np.ndarray:
    """``bwmorph(mask, 'thin', Inf)``: thin a binary image ``(H, W)`` to 1-pixel-wide strokes.

    Returns a new boolean ``(H, W)`` array. Isolated pixels and line end points are kept; an object
    without holes shrinks to a minimally connected stroke, one with holes to a ring between each hole
    and the outer boundary (MATLAB documentation of ``bwmorph``).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"thin: expected a 2-D mask (H, W), got shape {mask.shape}")
    words = (mask != 0).astype(np.uint64)[:, :, None]
    return thin_packed(words)[:, :, 0] != 0


def pack_levels(levels: np.ndarray, num_planes: int) -> np.ndarray:
    """Pack nested binary images into bit-planes: plane ``k`` is ``levels > k``.

    Args:
        levels: ``(H, W)`` integer array; ``levels[y, x]`` = number of planes pixel ``(y, x)`` belongs to
            (for thresholds ``t_0 < t_1 < ...``: the number of ``t_k <= prob``).
        num_planes: number of planes ``K``.

    Returns:
        ``(H, W, ceil(K / 64))`` ``uint64`` words.
    """
    nwords = max(1, -(-num_planes // 64))
    out = np.empty(levels.shape + (nwords,), np.uint64)
    for w in range(nwords):
        n = np.clip(levels.astype(np.int64) - 64 * w, 0, 64).astype(np.uint64)
        full = n == 64
        # (1 << n) - 1 sets the n lowest bits; n == 64 overflows, so it is written separately
        word = (np.uint64(1) << np.where(full, np.uint64(0), n)) - np.uint64(1)
        word[full] = _ALL_ONES
        out[:, :, w] = word
    return out


def unpack_planes(words: np.ndarray, num_planes: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices set in each plane of packed words.

    Args:
        words: ``(H, W, N)`` ``uint64`` words.
        num_planes: number of planes ``K`` to read (``K <= 64 N``).

    Returns:
        ``(pixels, bits)``: ``pixels`` the flat indices (row-major) of pixels set in some plane, and
        ``bits`` a ``(K, len(pixels))`` boolean array, ``bits[k, i]`` true when ``pixels[i]`` is in
        plane ``k``.
    """
    height, width, nwords = words.shape
    flat = words.reshape(height * width, nwords)
    pixels = np.flatnonzero(flat.any(axis=1))
    as_bytes = np.ascontiguousarray(flat[pixels]).view(np.uint8).reshape(pixels.size, 8 * nwords)
    if np.little_endian:
        bits = np.unpackbits(as_bytes, axis=1, bitorder="little")
    else:  # pragma: no cover - big-endian byte order within each uint64
        bits = np.unpackbits(as_bytes.reshape(pixels.size, nwords, 8)[:, :, ::-1], axis=2, bitorder="little")
        bits = bits.reshape(pixels.size, 64 * nwords)
    return pixels, np.ascontiguousarray(bits[:, :num_planes].T).view(bool)
