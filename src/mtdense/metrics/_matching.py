"""One-to-one matching of predicted and ground-truth boundary pixels within a distance (BSDS protocol).

BSDS's ``correspondPixels`` (used by SEISM and by Dollar's ``edgesEvalImg``) matches the pixels of a
thinned predicted boundary map to those of a ground-truth map by a minimum-cost perfect matching on a
graph where a predicted pixel ``p`` and a ground-truth pixel ``g`` may be paired when
``|p - g| <= max_dist * diagonal`` (cost: their distance), and every pixel may instead be paired with
an *outlier* node at cost ``100 * max_dist * diagonal``. The counts the benchmark keeps from the
matching (``cntP`` = matched predicted pixels, ``cntR`` = matched ground-truth pixels; with one
ground-truth map both equal the number of matched pairs) depend only on its *cardinality*:

* every matched pair saves two outlier costs (``200 r``) and costs at most ``r``, so any matching
  that is not of maximum cardinality is improved by flipping an augmenting path (``k + 1`` pairs in,
  ``k`` out; cost change ``<= (k + 1) r - 200 r < 0`` for augmenting paths of fewer than ~400 edges) --
  the BSDS optimum is a maximum-cardinality matching, the cheapest among those;
* hence ``cntR = cntP = nu``, the size of a maximum matching of the candidate graph.

This module computes ``nu`` exactly (maximum flow, Dinic's algorithm from
``scipy.sparse.csgraph.maximum_flow``). BSDS itself only approximates its objective: its CSA solver
sees each pixel linked to 6 *randomly drawn* outlier nodes (plus a very costly "overlay" edge), so
its matching can differ from the optimum in rare cases and between runs; and in theory its outlier
cost would prefer one pair fewer when the only augmenting paths are longer than ~400 edges. The
maximum matching is the deterministic quantity it aims at ("one-to-one correspondence within
tolerance"). ``scipy.sparse.csgraph.maximum_bipartite_matching`` is not used: its Hopcroft-Karp
depth-first search can take exponential time on the layered graphs that boundary maps produce
(scipy issue #26147; 56 s on one 480 x 640 threshold here).

Across the 99 thresholds of one image the thinned predictions change little, so each threshold
starts from the previous threshold's maximum matching (restricted to the pixels still predicted,
plus predicted pixels lying exactly on a free ground-truth pixel) and only the *residual* network is
solved: ``nu = |M0| + maxflow(residual)``, with ``s -> free predicted pixel``, ``predicted -> ground
truth`` for non-matching candidate pairs, ``ground truth -> its matched predicted pixel`` and ``free
ground truth -> t``, all of capacity 1 (the standard residual graph of the bipartite flow network).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import maximum_flow


def disk_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets ``(dy, dx)`` with ``dy^2 + dx^2 <= radius^2`` (as BSDS's ``matchEdgeMaps``)."""
    r = int(np.floor(radius + 1e-9))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    # small slack so that e.g. radius = 6.0 keeps (6, 0) despite rounding in max_dist * diagonal
    inside = dy**2 + dx**2 <= radius**2 + 1e-9
    return dy[inside], dx[inside]


def candidate_matrix(gt_pixels: np.ndarray, shape: tuple[int, int], radius: float) -> sp.csr_matrix:
    """Candidate pairs as a sparse ``(H * W, M)`` matrix: entry ``(q, j)`` when pixel ``q`` (flat index)
    lies within ``radius`` of ground-truth pixel ``j`` (``gt_pixels[j]``, flat index).

    Built once per image; the rows of the predicted pixels are then selected per threshold.
    """
    height, width = shape
    dy, dx = disk_offsets(radius)
    gy, gx = np.divmod(np.asarray(gt_pixels, np.int64), width)
    py = gy[:, None] + dy[None, :]
    px = gx[:, None] + dx[None, :]
    inside = (py >= 0) & (py < height) & (px >= 0) & (px < width)
    # build the transpose (one row per ground-truth pixel, no sorting needed), then convert in C
    counts = inside.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = (py * width + px)[inside]
    data = np.ones(indices.size, np.int8)
    transposed = sp.csr_matrix((data, indices, indptr), shape=(gt_pixels.size, height * width))
    return transposed.T.tocsr()


def max_matching_sizes(
    plane_pixels: Iterable[np.ndarray], candidates: sp.csr_matrix, gt_index: np.ndarray
) -> np.ndarray:
    """Maximum matching size between each predicted pixel set and the ground-truth pixels.

    Args:
        plane_pixels: for each threshold, the sorted flat indices of the (thinned) predicted pixels.
        candidates: :func:`candidate_matrix` of the image.
        gt_index: ``(H * W,)`` array, the ground-truth column of a pixel or ``-1``.

    Returns:
        ``(K,)`` int64 array: the number of matched pairs per threshold.
    """
    num_gt = candidates.shape[1]
    degree = np.diff(candidates.indptr)
    local = np.full(candidates.shape[0], -1, np.int64)  # flat pixel -> row of this threshold's graph
    mate_pixel = np.full(num_gt, -1, np.int64)  # ground-truth column -> matched predicted pixel
    sizes = []
    previous = None
    for pixels in plane_pixels:
        pixels = pixels[degree[pixels] > 0]  # predicted pixels with no candidate can never match
        if previous is not None and np.array_equal(pixels, previous):
            sizes.append(sizes[-1])
            continue
        if previous is not None:
            local[previous] = -1
        local[pixels] = np.arange(pixels.size)
        previous = pixels
        size, mate_row = _solve(
            pixels, candidates[pixels], on_gt=gt_index[pixels], local=local, mate_pixel=mate_pixel
        )
        sizes.append(size)
        mate_pixel = np.where(mate_row >= 0, pixels[np.maximum(mate_row, 0)], -1) if pixels.size else mate_row
    return np.asarray(sizes, np.int64)


def _solve(
    pixels: np.ndarray, graph: sp.csr_matrix, *, on_gt: np.ndarray, local: np.ndarray, mate_pixel: np.ndarray
) -> tuple[int, np.ndarray]:
    """Maximum matching of one threshold, warm-started. Returns (size, ground truth -> matched row)."""
    n, m = graph.shape
    if n == 0:
        return 0, np.full(m, -1, np.int64)
    # initial matching M0: the previous threshold's pairs whose predicted pixel is still there ...
    mate_row = np.where(mate_pixel >= 0, local[np.maximum(mate_pixel, 0)], -1)
    mate_col = np.full(n, -1, np.int64)
    kept = np.flatnonzero(mate_row >= 0)
    mate_col[mate_row[kept]] = kept
    # ... plus predicted pixels lying exactly on a free ground-truth pixel (distinct pixels: no conflict)
    extra = np.flatnonzero((on_gt >= 0) & (mate_col < 0))
    extra = extra[mate_row[on_gt[extra]] < 0]
    mate_col[extra] = on_gt[extra]
    mate_row[on_gt[extra]] = extra
    size0 = kept.size + extra.size
    free_rows = np.flatnonzero(mate_col < 0)
    free_cols = mate_row < 0
    if free_rows.size == 0 or not free_cols[graph.indices].any():
        return size0, mate_row
    # residual network: 0 = s, 1..n predicted, n+1..n+m ground truth, n+m+1 = t
    row_of_entry = np.repeat(np.arange(n), np.diff(graph.indptr))
    keep = graph.indices != mate_col[row_of_entry]
    per_row = np.bincount(row_of_entry[keep], minlength=n)
    col_targets = np.where(free_cols, n + m + 1, 1 + mate_row)
    num_nodes = n + m + 2
    indptr = np.empty(num_nodes + 1, np.int64)
    indptr[0] = 0
    indptr[1] = free_rows.size
    indptr[2 : n + 2] = free_rows.size + np.cumsum(per_row)
    indptr[n + 2 : n + m + 2] = indptr[n + 1] + 1 + np.arange(m)
    indptr[num_nodes] = indptr[num_nodes - 1]
    indices = np.concatenate([1 + free_rows, n + 1 + graph.indices[keep], col_targets])
    network = sp.csr_matrix(
        (np.ones(indices.size, np.int32), indices.astype(np.int32), indptr.astype(np.int32)),
        shape=(num_nodes, num_nodes),
    )
    result = maximum_flow(network, 0, num_nodes - 1, method="dinic")
    if result.flow_value == 0:
        return size0, mate_row
    # augmented matching: a predicted pixel sending flow to a ground-truth pixel is matched to it;
    # the others keep their M0 partner (a pair whose reverse edge carried flow was re-assigned)
    flow = result.flow
    lo, hi = flow.indptr[1], flow.indptr[n + 1]
    cols = flow.indices[lo:hi]
    used = (flow.data[lo:hi] > 0) & (cols > n) & (cols <= n + m)
    rows = np.repeat(np.arange(n), np.diff(flow.indptr[1 : n + 2]))[used]
    mate_col[rows] = cols[used] - n - 1
    mate_row = np.full(m, -1, np.int64)
    matched = np.flatnonzero(mate_col >= 0)
    mate_row[mate_col[matched]] = matched
    return size0 + int(result.flow_value), mate_row


def match_count(pred: np.ndarray, gt: np.ndarray, radius: float) -> int:
    """Size of a maximum one-to-one matching between the set pixels of two ``(H, W)`` boolean maps
    whose pairs lie within ``radius`` pixels (no thinning here)."""
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    gt_pixels = np.flatnonzero(gt)
    gt_index = np.full(gt.size, -1, np.int64)
    gt_index[gt_pixels] = np.arange(gt_pixels.size)
    cand = candidate_matrix(gt_pixels, gt.shape, radius)
    return int(max_matching_sizes([np.flatnonzero(pred)], cand, gt_index)[0])
