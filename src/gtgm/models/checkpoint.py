"""Checkpoints: written atomically (temp file + rename), loaded with ``weights_only=True``."""

from __future__ import annotations

import errno
import pickle
import random
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from gtgm.errors import GtgmError
from gtgm.fsutil import atomic_path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file, then rename: an interruption leaves the previous file intact.

    torch reports a full disk as ``RuntimeError: ... unexpected pos``: that becomes an ``OSError`` (ENOSPC)
    naming the file, so the user reads "no space left" rather than torch's internals."""
    with atomic_path(path, ".pt") as tmp:
        try:
            torch.save(_contiguous(state), tmp)
        except RuntimeError as exc:
            if "unexpected pos" in str(exc) or "write" in str(exc).lower():
                why = f"cannot write the checkpoint ({str(exc).splitlines()[0]})"
                raise OSError(errno.ENOSPC, why, str(path)) from exc
            raise
    return Path(path)


def _contiguous(obj: Any) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples) in the default memory order: a CPU model's
    channels-last weights (:func:`gtgm.runtime.to_device`) are saved as any other tool writes and reads them."""
    if isinstance(obj, torch.Tensor):
        return obj.contiguous()
    if isinstance(obj, dict):  # an OrderedDict state dict keeps its type and its ``_metadata`` (module versions)
        out = (OrderedDict if isinstance(obj, OrderedDict) else dict)((k, _contiguous(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_contiguous(v) for v in obj)
    return obj


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain Python values only); a bad file is a clear error, and so is
    one that is not a dict or lacks any of ``keys``."""
    path = Path(path)
    if not path.is_file():
        raise GtgmError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # bytes that are no pickle at all
            raise GtgmError(f"{path}: cannot load checkpoint (not a readable torch file)") from exc
        # weights_only refused an object: say so, without torch's advice to retry with weights_only=False
        raise GtgmError(
            f"{path}: not a plain tensor checkpoint (it holds other Python objects); not loaded, for safety"
        ) from exc
    except Exception as exc:  # noqa: BLE001  (torch raises many types for corrupt files)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise GtgmError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {first})") from exc
    if not isinstance(ckpt, dict):
        raise GtgmError(f"{path}: holds a {type(ckpt).__name__}, not a gtgm checkpoint or state dict")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise GtgmError(f"{path}: checkpoint lacks {', '.join(missing)}; was it written by this version of gtgm?")
    return ckpt


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict (name -> tensor), such as ``encoder.pt``; anything else is a clear error."""
    state = load_checkpoint(path)
    bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad or not state:
        what = f"entry {bad[0]!r} is a {type(state[bad[0]]).__name__}" if bad else "it is empty"
        raise GtgmError(f"{path}: not a state dict of tensors ({what}); expected encoder.pt from gtgm pretrain")
    return state


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
