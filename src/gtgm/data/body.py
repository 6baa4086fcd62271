"""The body of a CT volume: everything inside the patient's outline, air pockets included.

``body = fill_holes_per_axial_slice(largest_3d_component(HU > threshold))``: the threshold (-500 HU by default)
separates tissue from the air around the patient; the largest 6-connected component drops the table, clothes and
noise; filling the holes of each axial (x, y) slice puts back what tissue encloses in that slice (lungs, bowel gas,
the trachea). Computed at preprocessing (``volumes/<id>.body.npy``, its box in the case JSON) and again by
``gtgm predict`` on the input, it crops fine-tuning and inference to the body's box and sets every prediction
outside the body to background.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage


def body_mask(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """Boolean (X, Y, Z) body mask of an (X, Y, Z) array in Hounsfield units (see the module's formula).
    All False when no voxel passes the threshold."""
    tissue = np.asarray(hu) > threshold
    labels, n = ndimage.label(tissue)
    if n == 0:
        return tissue
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    for z in range(body.shape[2]):
        body[:, :, z] = ndimage.binary_fill_holes(body[:, :, z])
    return body


def mask_box(mask: np.ndarray, margin: int | list[int] = 0) -> tuple[list[int], list[int]]:
    """``[lo, hi)`` box of the True voxels of ``mask`` (X, Y, Z), grown by ``margin`` voxels per axis and clipped to
    the array; the whole array when ``mask`` is empty."""
    shape = mask.shape
    if not mask.any():
        return [0, 0, 0], list(shape)
    margin = [margin] * 3 if isinstance(margin, int) else list(margin)
    lo, hi = [], []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(max(int(hit[0]) - margin[axis], 0))
        hi.append(min(int(hit[-1]) + 1 + margin[axis], shape[axis]))
    return lo, hi


def hu_of(image: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """Hounsfield units of a CT channel normalised with ``record`` (``normalize_ct``'s: ``y = (clip(x) - lo) /
    (hi - lo)``): ``x = lo + y · (hi - lo)``, exact inside the window."""
    lo, hi = record["window"]
    return lo + np.asarray(image, dtype=np.float32) * np.float32(hi - lo)


def margin_voxels(margin_mm: float, spacing: list[float]) -> list[int]:
    """A margin in mm as whole voxels per axis (rounded up)."""
    return [int(np.ceil(margin_mm / float(s))) for s in spacing]
