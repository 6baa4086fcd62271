"""Reorientation to RAS and resampling to a target spacing, keeping the affine exact."""

from __future__ import annotations

import numpy as np
from nibabel import orientations as ornt
from scipy import ndimage

from gtgm.errors import GtgmError
from gtgm.fsutil import fits_in_memory


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permute/flip the last three axes of ``array`` so they point R, A, S.

    ``array``: (..., X, Y, Z). Returns ``(array_ras, affine_ras, transform)`` where ``transform`` is the
    nibabel orientation transform (3×2), kept so predictions can be put back with :func:`from_ras`.
    """
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt("RAS"))
    spatial = array.shape[-3:]
    lead = array.ndim - 3
    out = array
    for axis, flip in enumerate(transform[:, 1]):
        if flip == -1:
            out = np.flip(out, axis=lead + axis)
    perm = [int(p) for p in transform[:, 0]]
    inverse = [perm.index(i) for i in range(3)]
    out = np.transpose(out, [*range(lead), *(lead + i for i in inverse)])
    new_affine = affine @ ornt.inv_ornt_aff(transform, spatial)
    return np.ascontiguousarray(out), new_affine, transform


def from_ras(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Undo :func:`to_ras` on ``array`` (..., X, Y, Z) given the ``transform`` it returned."""
    lead = array.ndim - 3
    perm = [int(p) for p in transform[:, 0]]
    out = np.transpose(array, [*range(lead), *(lead + p for p in perm)])
    for axis, flip in enumerate(transform[:, 1]):
        if flip == -1:
            out = np.flip(out, axis=lead + axis)
    return np.ascontiguousarray(out)


def resample(
    array: np.ndarray,
    affine: np.ndarray,
    target_spacing: list[float] | tuple[float, ...],
    order: int,
    shape: tuple[int, ...] | None = None,
    hint: str = "choose a coarser preprocess.target_spacing",
) -> tuple[np.ndarray, np.ndarray]:
    """Resample the last three axes of ``array`` to ``target_spacing`` (same unit as the affine); a result larger
    than memory is an error ending in ``hint`` (what the calling stage lets the user change).

    Output voxel ``o`` samples input coordinate ``o · t / s`` (t target, s source spacing), so voxel 0
    stays at the same world point and the new affine is ``A · diag(t/s, 1)``. ``order`` 0 for labels.
    Output shape: ``round(n · s / t)``, or ``shape`` when given (to map a result back exactly).
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    scale = np.asarray(target_spacing, dtype=np.float64) / spacing
    if np.allclose(scale, 1.0) and (shape is None or tuple(shape) == array.shape[-3:]):
        return array, affine
    shape = (
        tuple(shape) if shape is not None else tuple(max(1, int(round(n / f))) for n, f in zip(array.shape[-3:], scale))
    )
    ok, gb = fits_in_memory((*array.shape[:-3], *shape))
    if not ok:
        raise GtgmError(
            f"resampling {tuple(array.shape[-3:])} voxels to spacing {list(target_spacing)} gives {shape} "
            f"({gb:.1f} GB), more than this machine can hold; {hint}"
        )
    new_affine = affine @ np.diag([*scale, 1.0])

    def one(vol: np.ndarray) -> np.ndarray:
        prefilter = order > 1
        return ndimage.affine_transform(
            vol, scale, output_shape=shape, order=order, mode="nearest", prefilter=prefilter
        )

    if array.ndim == 3:
        out = one(array)
    else:
        out = np.stack([one(c) for c in array.reshape(-1, *array.shape[-3:])]).reshape(*array.shape[:-3], *shape)
    return out.astype(array.dtype, copy=False), new_affine
