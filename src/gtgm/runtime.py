"""Process-level helpers: device choice and the torchrun rank/world size from the environment."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    from gtgm.errors import GtgmError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GtgmError(f"device '{name}' requested but no CUDA GPU is available")
    return torch.device(name)


def dist_env() -> tuple[int, int]:
    """``(rank, world_size)`` as set by torchrun (``RANK``, ``WORLD_SIZE``); ``(0, 1)`` otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
