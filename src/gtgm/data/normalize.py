"""Per-modality intensity normalisation. Pure functions: array in, (float32 array, record) out.

The record (a JSON-able dict) states exactly what was done, so it is stored beside the cached volume.

* CT:  ``y = (clip(x, lo, hi) - lo) / (hi - lo)`` with the HU window ``[lo, hi]`` -> [0, 1].
* MRI: foreground ``F = {x > m + f·(p99.5 - m)}`` (m = min); clip to the ``[p_lo, p_hi]`` percentiles
  of F, then ``y = (x - mean_F) / std_F`` (z-score over the foreground, as nnU-Net does for MRI).
* EM:  integers ``y = x / max(dtype)``; floats ``y = (x - min) / (max - min)`` -> [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gtgm.config import PreprocessConfig


def normalize(array: np.ndarray, modality: str, cfg: PreprocessConfig) -> tuple[np.ndarray, dict[str, Any]]:
    if modality == "CT":
        return normalize_ct(array, cfg.ct_window)
    if modality == "EM":
        return normalize_em(array)
    return normalize_mri(array, cfg.mri_percentiles, cfg.mri_foreground_fraction)


def normalize_ct(array: np.ndarray, window: list[float]) -> tuple[np.ndarray, dict[str, Any]]:
    lo, hi = float(window[0]), float(window[1])
    out = (np.clip(array.astype(np.float32), lo, hi) - lo) / (hi - lo)
    return out.astype(np.float32), {"method": "ct_window", "window": [lo, hi], "range": [0.0, 1.0]}


def normalize_mri(array: np.ndarray, percentiles: list[float], fg_fraction: float) -> tuple[np.ndarray, dict[str, Any]]:
    x = array.astype(np.float32)
    lo = float(x.min())
    top = float(np.percentile(x, 99.5))
    fg = x > lo + fg_fraction * (top - lo)
    if fg.sum() < 0.001 * x.size:  # nearly constant image: use everything
        fg = np.ones_like(x, dtype=bool)
    values = x[fg]
    p_lo, p_hi = (float(v) for v in np.percentile(values, percentiles))
    clipped = np.clip(values, p_lo, p_hi)
    mean, std = float(clipped.mean()), float(clipped.std())
    std = std if std > 1e-8 else 1.0
    out = (np.clip(x, p_lo, p_hi) - mean) / std
    record = {
        "method": "mri_foreground_zscore",
        "clip": [p_lo, p_hi],
        "percentiles": list(percentiles),
        "mean": mean,
        "std": std,
        "foreground_fraction": float(fg.mean()),
    }
    return out.astype(np.float32), record


def normalize_em(array: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = 0.0, float(np.iinfo(array.dtype).max)
    else:
        lo, hi = float(array.min()), float(array.max())
    scale = hi - lo if hi > lo else 1.0
    out = (array.astype(np.float32) - lo) / scale
    return out.astype(np.float32), {"method": "em_unit_range", "min": lo, "max": hi, "range": [0.0, 1.0]}
