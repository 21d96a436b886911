"""Per-task losses (function + ``nn.Module`` twin each), a name registry, and loss balancers.

* segmentation: :func:`cross_entropy_loss` / :class:`CrossEntropyLoss` (ignore 255, class weights)
* depth: :func:`depth_l1_loss`, :func:`depth_l2_loss`, :func:`berhu_loss` (TRL eq. 5)
* normals: :func:`normals_l1_loss` (on normalised predictions), :func:`normals_cosine_loss` (1 − cos),
  :func:`normals_l2_loss` (PAD-Net's Euclidean)
* edges: :func:`balanced_bce_loss` (positive weight 0.95), :func:`bce_loss` (plain, PAD-Net)
* :func:`build_loss` by name; balancers (:mod:`mtdense.losses.balancing`, registry :data:`BALANCERS`,
  :func:`build_balancer`): :class:`FixedWeights`, :class:`UncertaintyWeights` (TRL eq. 7),
  :data:`DWA` (:class:`DynamicWeightAverage`), :data:`RLW` (:class:`RandomLossWeighting`), :class:`GradNorm`,
  :class:`PCGrad`, :class:`MGDA`, :class:`CAGrad`.
"""

from mtdense.losses.balancing import (
    BALANCERS,
    MGDA,
    UNCERTAINTY_KINDS,
    CAGrad,
    DynamicWeightAverage,
    FixedWeights,
    GradNorm,
    LossBalancer,
    PCGrad,
    RandomLossWeighting,
    UncertaintyWeights,
    build_balancer,
    check_tag_weights,
    key_multiplier,
    task_of,
)
from mtdense.losses.depth import (
    BerHuLoss,
    DepthL1Loss,
    DepthL2Loss,
    berhu_loss,
    depth_l1_loss,
    depth_l2_loss,
)
from mtdense.losses.edge import BalancedBCELoss, BCELoss, balanced_bce_loss, bce_loss
from mtdense.losses.normals import (
    NormalsCosineLoss,
    NormalsL1Loss,
    NormalsL2Loss,
    normals_cosine_loss,
    normals_l1_loss,
    normals_l2_loss,
)
from mtdense.losses.registry import LOSSES, UnknownNameError, build_loss
from mtdense.losses.semseg import CrossEntropyLoss, cross_entropy_loss

# the short names the balancing papers use
DWA = DynamicWeightAverage
RLW = RandomLossWeighting

__all__ = [
    "BALANCERS",
    "BCELoss",
    "DWA",
    "LOSSES",
    "MGDA",
    "RLW",
    "UNCERTAINTY_KINDS",
    "BalancedBCELoss",
    "BerHuLoss",
    "CAGrad",
    "CrossEntropyLoss",
    "DepthL1Loss",
    "DepthL2Loss",
    "DynamicWeightAverage",
    "FixedWeights",
    "GradNorm",
    "LossBalancer",
    "NormalsCosineLoss",
    "NormalsL1Loss",
    "NormalsL2Loss",
    "PCGrad",
    "RandomLossWeighting",
    "UncertaintyWeights",
    "UnknownNameError",
    "balanced_bce_loss",
    "bce_loss",
    "berhu_loss",
    "build_balancer",
    "check_tag_weights",
    "build_loss",
    "cross_entropy_loss",
    "depth_l1_loss",
    "depth_l2_loss",
    "key_multiplier",
    "normals_cosine_loss",
    "normals_l1_loss",
    "normals_l2_loss",
    "task_of",
]
