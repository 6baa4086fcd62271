"""Run logs: one JSON line per logged step (``log.jsonl``) and TensorBoard scalars (``tb/``)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any


class RunLogger:
    """Appends ``{"step", "time", **values}`` to ``out/log.jsonl``; mirrors numbers to TensorBoard.

    Only the process with ``enabled=True`` (rank 0) writes.
    """

    def __init__(self, out: str | Path, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out) / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out) / "tb"))
            except ImportError:
                warnings.warn("tensorboard is not installed: logging to log.jsonl only", stacklevel=2)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": time.time(), **values}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
