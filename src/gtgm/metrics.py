"""Segmentation metrics as pure functions (MONAI's ``compute_dice`` / ``compute_hausdorff_distance``).

Conventions for a class absent from the reference (documented, tested):

* Dice: absent from both prediction and reference -> 1.0; absent from the reference only -> 0.0;
  present in the reference but not predicted -> 0.0.
* HD95 (in the volume's unit, using the voxel spacing): 0.0 when absent from both; NaN when absent
  from exactly one of them (undefined). Means over cases skip NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance


def _onehot(label: np.ndarray, classes: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.stack([label == c for c in classes])[None].astype(np.float32))


def dice_per_class(pred: np.ndarray, ref: np.ndarray, classes: list[int]) -> dict[int, float]:
    """Dice ``2|P∩R| / (|P| + |R|)`` for each class in ``classes`` (label maps of equal shape)."""
    out = {}
    values = compute_dice(_onehot(pred, classes), _onehot(ref, classes), include_background=True, ignore_empty=False)[0]
    for c, v in zip(classes, values.tolist()):
        p, r = bool((pred == c).any()), bool((ref == c).any())
        out[c] = 1.0 if not p and not r else (0.0 if not (p and r) else float(v))
    return out


def hd95_per_class(
    pred: np.ndarray, ref: np.ndarray, classes: list[int], spacing: list[float] | None = None
) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance per class, scaled by ``spacing``."""
    out = {}
    for c in classes:
        p, r = pred == c, ref == c
        if not p.any() and not r.any():
            out[c] = 0.0
        elif not p.any() or not r.any():
            out[c] = float("nan")
        else:
            d = compute_hausdorff_distance(
                _onehot(p.astype(np.uint8), [1]),
                _onehot(r.astype(np.uint8), [1]),
                include_background=True,
                percentile=95,
                spacing=spacing,
            )
            out[c] = float(d.item())
    return out
