"""Checkpoints: written atomically (temp file + rename), loaded with ``weights_only=True``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from gtgm.errors import GtgmError
from gtgm.fsutil import atomic_path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file, then rename: an interruption leaves the previous file intact."""
    with atomic_path(path, ".pt") as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain Python values only); a bad file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise GtgmError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many types for corrupt files)
        raise GtgmError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from exc


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state)`` (strict); a model built with other settings is a clear error."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        missing = [k for k in model.state_dict() if k not in state]
        hint = (
            " (it predates the resunet's affine InstanceNorm: add model.norm_affine=false, or start a new run)"
            if any("norm" in k for k in missing)
            else ""
        )
        raise GtgmError(f"{path}: its weights do not fit the model of this configuration{hint}") from exc


def has_norm_weights(state: dict[str, torch.Tensor]) -> bool:
    """Whether a resunet state dict has InstanceNorm scale/shift tensors (``model.norm_affine``)."""
    return any("norm" in k.rsplit(".", 2)[-2] and k.endswith(".weight") for k in state if k.count(".") >= 2)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
