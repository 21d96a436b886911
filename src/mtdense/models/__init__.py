"""Architectures, one published model per file; :func:`build_model` builds any registered one.

| file | paper | registered names |
|---|---|---|
| ``stl_mtl.py`` | single-task and shared-encoder multi-task baselines | ``stl``, ``mtl`` |
| ``cross_stitch.py`` | Cross-stitch networks (Misra et al., CVPR 2016) | ``cross_stitch`` |
| ``padnet.py`` | PAD-Net (seed 001) | ``padnet`` |
| ``mtinet.py`` | MTI-Net (seed 002) | ``mtinet`` |

Shared building blocks (heads, ASPP, SE, distillation) live in ``layers.py``.
"""

from mtdense.models._base import MultiTaskModel, upsample_to
from mtdense.models._registry import MODELS, build_model, list_models, model_config_class, register_model

__all__ = [
    "MODELS", "MultiTaskModel", "build_model", "list_models", "model_config_class", "register_model", "upsample_to",
]
