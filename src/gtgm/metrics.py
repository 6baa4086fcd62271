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
    if not classes:
        return {}
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


# --- neuron segmentation (EM) -------------------------------------------------------------------------
#
# CREMI convention: ground-truth voxels labelled 0 (background / no neuron) or with an ``ignore`` value are
# left out of every score; the candidate segmentation's labels are all counted (its 0 is an ordinary
# segment). Optionally, like the CREMI evaluation (25 nm there), ground-truth voxels within ``border``
# voxels of a label boundary in the same z section are left out too (:func:`border_mask`).


def contingency(seg: np.ndarray, gt: np.ndarray, ignore: tuple[int, ...] = (0,)):
    """Sparse table ``n[i, j]`` = voxels with ground-truth segment ``i`` and candidate segment ``j``.

    ``seg`` and ``gt`` are integer arrays of equal shape; voxels whose ``gt`` is in ``ignore`` are dropped.
    Rows and columns are the distinct labels in order of value (a scipy CSR array of int64 counts).
    """
    from scipy import sparse

    if seg.shape != gt.shape:
        raise ValueError(f"segmentation shape {seg.shape} differs from ground truth {gt.shape}")
    g, s = np.ravel(gt), np.ravel(seg)
    if ignore:
        keep = ~np.isin(g, np.asarray(ignore, dtype=g.dtype))
        g, s = g[keep], s[keep]
    gi = np.unique(g, return_inverse=True)[1].ravel()
    si = np.unique(s, return_inverse=True)[1].ravel()
    shape = (int(gi.max(initial=-1)) + 1, int(si.max(initial=-1)) + 1)
    return sparse.csr_array((np.ones(g.size, dtype=np.int64), (gi, si)), shape=shape)


def voi(seg: np.ndarray, gt: np.ndarray, ignore: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """Variation of information, in bits, split into ``(split, merge)``.

    With ``p_ij`` the joint distribution of (ground truth i, candidate j) over the counted voxels:
    split = H(seg | gt) = -Σ p_ij log2(p_ij / p_i·) (over-segmentation), merge = H(gt | seg) =
    -Σ p_ij log2(p_ij / p_·j) (under-segmentation). Both are 0 for a perfect segmentation.
    """
    n = contingency(seg, gt, ignore)
    total = n.sum()
    if total == 0:
        return 0.0, 0.0
    coo = n.tocoo()
    p = coo.data / total
    rows = np.asarray(n.sum(axis=1)).ravel() / total
    cols = np.asarray(n.sum(axis=0)).ravel() / total
    split = -np.sum(p * np.log2(p / rows[coo.row]))
    merge = -np.sum(p * np.log2(p / cols[coo.col]))
    return float(max(split, 0.0)), float(max(merge, 0.0))


def adapted_rand(seg: np.ndarray, gt: np.ndarray, ignore: tuple[int, ...] = (0,)) -> float:
    """Adapted Rand error (SNEMI3D), counted over voxel pairs as ``skimage.metrics.adapted_rand_error``.

    With ``n_ij`` the contingency counts, ``a_i`` / ``b_j`` the gt / candidate segment sizes and N the counted
    voxels: P = Σ n_ij² − N, precision = P / (Σ b_j² − N), recall = P / (Σ a_i² − N),
    error = 1 − 2·precision·recall / (precision + recall). 0 for a perfect segmentation, 1 when no pair of
    voxels shares a label in both.
    """
    n = contingency(seg, gt, ignore)
    total = float(n.sum())
    pairs = float((n.data.astype(np.float64) ** 2).sum()) - total
    a = np.asarray(n.sum(axis=1), dtype=np.float64).ravel()
    b = np.asarray(n.sum(axis=0), dtype=np.float64).ravel()
    same_gt, same_seg = float(a @ a) - total, float(b @ b) - total
    if pairs <= 0 or same_gt <= 0 or same_seg <= 0:
        return 1.0 if same_gt > 0 or same_seg > 0 else 0.0
    precision, recall = pairs / same_seg, pairs / same_gt
    return float(1.0 - 2.0 * precision * recall / (precision + recall))


def cremi_score(voi_split: float, voi_merge: float, arand: float) -> float:
    """CREMI score = sqrt(ARAND · (VOI_split + VOI_merge)); lower is better."""
    return float(np.sqrt(arand * (voi_split + voi_merge)))


def border_mask(gt: np.ndarray, border: float) -> np.ndarray:
    """Boolean (X, Y, Z) mask of voxels within ``border`` in-plane voxels of a label change in their z section.

    As the CREMI evaluation: a voxel is on a boundary when one of its 4 in-plane neighbours (edge-padded) has
    another label; boundary voxels and voxels at most ``border`` voxels (Euclidean, in-plane) from one are masked.
    """
    from scipy import ndimage

    if border <= 0:
        return np.zeros(gt.shape, dtype=bool)
    pad = np.pad(gt, ((1, 1), (1, 1), (0, 0)), mode="edge")
    inside = (gt == pad[:-2, 1:-1]) & (gt == pad[2:, 1:-1]) & (gt == pad[1:-1, :-2]) & (gt == pad[1:-1, 2:])
    out = np.zeros(gt.shape, dtype=bool)
    for z in range(gt.shape[2]):
        if not inside[:, :, z].all():  # a section of one label has no boundary
            out[:, :, z] = ndimage.distance_transform_edt(inside[:, :, z]) <= border
    return out


def neuron_scores(
    seg: np.ndarray, gt: np.ndarray, ignore: tuple[int, ...] = (0,), border: float = 0.0
) -> dict[str, float]:
    """``voi_split``, ``voi_merge``, ``voi`` (sum), ``arand`` and ``cremi`` of ``seg`` against ``gt`` (X, Y, Z).

    ``border`` (in-plane voxels; CREMI: 25 nm / resolution) masks ground truth near boundaries (ignored).
    """
    if border > 0:
        gt = gt.copy()
        fill = ignore[0] if ignore else 0
        gt[border_mask(gt, border)] = fill
    split, merge = voi(seg, gt, ignore)
    ar = adapted_rand(seg, gt, ignore)
    return {
        "voi_split": split,
        "voi_merge": merge,
        "voi": split + merge,
        "arand": ar,
        "cremi": cremi_score(split, merge, ar),
    }
