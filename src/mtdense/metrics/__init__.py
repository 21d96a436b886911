"""Streaming evaluation meters per task and the multi-task performance Delta_m.

Every meter has ``reset()``, ``update(pred, target)``, ``sync()`` (DDP all-reduce of its sufficient
statistics) and ``compute() -> dict[str, float]`` (accuracies and ratios in percent).
"""

from mtdense.metrics._thinning import thin
from mtdense.metrics.base import Meter, all_reduce_arrays
from mtdense.metrics.depth import EIGEN_CROP, DepthMeter
from mtdense.metrics.edge import EdgeMeter, FastEdgeMeter, edge_pr_counts, edge_thresholds
from mtdense.metrics.multitask import multitask_delta, partial_deltas
from mtdense.metrics.normals import NormalsMeter
from mtdense.metrics.saliency import SaliencyMeter
from mtdense.metrics.semseg import SegmentationMeter

__all__ = [
    "EIGEN_CROP",
    "DepthMeter",
    "EdgeMeter",
    "FastEdgeMeter",
    "Meter",
    "NormalsMeter",
    "SaliencyMeter",
    "SegmentationMeter",
    "all_reduce_arrays",
    "edge_pr_counts",
    "edge_thresholds",
    "multitask_delta",
    "partial_deltas",
    "thin",
]
