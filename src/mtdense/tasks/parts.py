"""Human part segmentation (PASCAL-Context): per-pixel classification into background + 6 part groups.

MTI-Net (Vandenhende et al., ECCV 2020) Sec. 4.1 / Table 1 trains "human parts" on PASCAL-Context with the
cross-entropy loss and evaluates it by mIoU over the part classes, as ASTMT (Maninis et al., CVPR 2019),
whose setup it reuses. Target: int64 ``(B, H, W)``, 255 = ignore; an image without a part-annotated person
carries an all-255 target (the data contract's missing target), so :meth:`Task.update_meter` and the
training loss path skip it rather than counting it as all background.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mtdense.tasks.semseg import SemsegTask

if TYPE_CHECKING:
    from mtdense.config.schema import Config

DEFAULT_PART_NAMES = ("background", "head", "torso", "upper arms", "lower arms", "upper legs", "lower legs")
"""ASTMT's 6 human-part groups plus background (see :mod:`mtdense.data.pascal`)."""


class PartsTask(SemsegTask):
    """Human parts: semantic segmentation over the part classes.

    Output: logits ``(B, P, H, W)`` (P = 7 on PASCAL-Context). Target: int64 ``(B, H, W)``, 255 = ignore.
    Loss: cross-entropy with ignore. Postprocess: softmax. Meter: mIoU / mAcc / pixAcc over the P classes
    (:class:`~mtdense.metrics.SegmentationMeter`; ``mIoU`` is the primary metric of MTI-Net Sec. 4.1).
    """

    name = "parts"
    target_key = "parts"

    @classmethod
    def from_config(cls, cfg: Config, meta: Mapping[str, Any]) -> PartsTask:
        """The part classes come from the dataset meta's ``parts_classes`` (default: the 7 PASCAL part classes)."""
        names = meta.get("parts_classes") or DEFAULT_PART_NAMES
        return cls(num_classes=len(names), class_names=names)

    def __init__(self, num_classes: int = len(DEFAULT_PART_NAMES), *, class_names: Sequence[str] | None = None) -> None:
        if class_names is None and num_classes == len(DEFAULT_PART_NAMES):
            class_names = DEFAULT_PART_NAMES
        super().__init__(num_classes, class_names=class_names)
