"""User-facing errors.

Every error a user can cause (a missing path, a bad config key, a corrupt image, a tensor of the
wrong shape at a public boundary, a NaN loss) is raised as a subclass of :class:`MtdenseError`. The
command line prints ``error: <message>`` for these and exits with a non-zero code, without a
traceback unless ``--debug`` is given. Messages name the culprit: the file, the dotted config key,
the step, or the expected and received shapes.
"""

from __future__ import annotations

from collections.abc import Sequence


class MtdenseError(Exception):
    """Base class of every error caused by user input."""


class ConfigError(MtdenseError):
    """A config file is missing, malformed, has an unknown key or a value of the wrong type."""


class DataError(MtdenseError):
    """A dataset folder, split file or sample file is missing or cannot be decoded."""


class ShapeError(MtdenseError, ValueError):
    """A tensor passed to a public function has the wrong shape or dtype."""


class CheckpointError(MtdenseError):
    """A checkpoint is missing or does not match the model."""


class TrainingError(MtdenseError):
    """Training cannot go on (e.g. a non-finite loss); names the step."""


def check_shape(name: str, shape: Sequence[int], expected: str, ok: bool) -> None:
    """Raise :class:`ShapeError` ``"<name>: expected <expected>, got <shape>"`` unless ``ok``."""
    if not ok:
        raise ShapeError(f"{name}: expected {expected}, got shape {tuple(shape)}")
