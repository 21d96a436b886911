"""Architectures, one published model per file; :func:`build_model` builds any registered one.

| file | paper | registered names |
|---|---|---|
| ``stl_mtl.py`` | single-task and shared-encoder multi-task baselines | ``stl``, ``mtl`` |
| ``cross_stitch.py`` | Cross-stitch networks (Misra et al., CVPR 2016) | ``cross_stitch`` |
| ``padnet.py`` | PAD-Net (seed 001) | ``padnet`` |
| ``mtinet.py`` | MTI-Net (seed 002) | ``mtinet`` |
| ``trl.py`` | TRL (Zhang et al., ECCV 2018) | ``trl`` |
| ``threeways.py`` (+ ``xtam.py``) | xTAM / mTEB on the 3-ways decoder (seed 004) | ``threeways`` |

Shared building blocks live in ``layers/``: ``blocks.py`` (conv blocks, SE), ``heads.py`` (HRNet head, ASPP,
Panoptic-FPN head) and ``distillation.py`` (multi-modal distillation, PAD-Net modules A/B/C).
"""

from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import MODELS, build_model, list_models, model_config_class, register_model

__all__ = [
    "MODELS",
    "MultiTaskModel",
    "build_model",
    "list_models",
    "model_config_class",
    "register_model",
    "upsample_to",
]

# importing an architecture's file registers it
from mtdense.models import (  # noqa: E402, F401
    cross_stitch,
    mtinet,  # noqa: E402, F401
    padnet,  # noqa: E402, F401
    psd,  # noqa: E402, F401
    stl_mtl,
    threeways,  # noqa: E402, F401
    trl,  # noqa: E402, F401
)
