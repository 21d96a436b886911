"""Run logging: ``metrics.jsonl`` (one JSON record per line, appended) and TensorBoard event files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RunLogger:
    """Appends records to ``OUT/metrics.jsonl`` and mirrors scalars to TensorBoard (``OUT/tb``).

    ``purge_step``: a resumed run passes its checkpoint's step + 1, so TensorBoard drops the events of
    the steps it redoes (written before a kill, after the last checkpoint) instead of showing them twice.
    """

    def __init__(
        self, out: Path, *, enabled: bool = True, tensorboard: bool = True, purge_step: int | None = None
    ) -> None:
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(out / "tb"), purge_step=purge_step)
            except ImportError:  # tensorboard is a declared dependency; tolerate its absence elsewhere
                self.tb = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = int(record.get("step", 0))
            prefix = record.get("split", "train")
            for key, value in _flatten(record).items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out
