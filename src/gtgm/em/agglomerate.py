"""Affinities -> neuron segmentation.

* :func:`waterz_segment` (default): waterz builds watershed fragments from the affinities (zwatershed
  with ``low`` / ``high`` affinity thresholds), then merges adjacent fragments in order of
  ``1 - mean affinity`` along their shared boundary until that score reaches each threshold.
* :func:`watershed_segment` (fallback, no compiled agglomeration): seeds are the connected components
  (cc3d) of the affinity graph cut at ``1 - threshold``; scikit-image's seeded watershed grows them over
  the boundary map ``1 - mean of each voxel's six face affinities``.

For both, a higher threshold merges more. Arrays are gtgm's (x, y, z); affinities (C, X, Y, Z) with the
channels of the offsets (the first three must be the nearest neighbours z, y, x, see
:mod:`gtgm.em.affinities`). Segmentations are uint64 (X, Y, Z), ids from 1.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from gtgm.em.affinities import NEAREST_ZYX

METHODS = ("waterz", "watershed")


def _check(affs: np.ndarray, offsets_zyx: Sequence[Sequence[int]] | None) -> None:
    if affs.ndim != 4 or affs.shape[0] < 3:
        raise ValueError(f"affinities must be (C >= 3, X, Y, Z), got shape {affs.shape}")
    if offsets_zyx is not None and [list(map(int, o)) for o in offsets_zyx[:3]] != NEAREST_ZYX:
        raise ValueError(f"the first three affinity offsets must be {NEAREST_ZYX} (z, y, x), got {offsets_zyx[:3]}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence C++ writes to file descriptor 1 (waterz logs every merge stage there)."""
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def waterz_segment(
    affs: np.ndarray,
    thresholds: Sequence[float],
    offsets_zyx: Sequence[Sequence[int]] | None = None,
    low: float = 0.0001,
    high: float = 0.9999,
) -> list[np.ndarray]:
    """One uint64 (X, Y, Z) segmentation per threshold (in the given order) by waterz mean-affinity merging."""
    import waterz

    _check(affs, offsets_zyx)
    zyx = np.ascontiguousarray(affs[:3].transpose(0, 3, 2, 1), dtype=np.float32)
    order = np.argsort(thresholds)
    out: list[np.ndarray] = [np.empty(0)] * len(thresholds)
    with _quiet():
        for k, seg in zip(order, waterz.agglomerate(zyx, [float(thresholds[i]) for i in order], None, None, low, high)):
            out[k] = np.ascontiguousarray(seg.transpose(2, 1, 0)).astype(np.uint64)
    return out


def _six_neighbour(affs: np.ndarray) -> np.ndarray:
    """(6, X, Y, Z): each voxel's affinity to its -1 and +1 neighbour along x, y, z (1 outside the volume)."""
    near = np.asarray(affs[:3], dtype=np.float32)[::-1]  # channels z, y, x -> x, y, z
    out = np.ones((6, *near.shape[1:]), dtype=np.float32)
    for axis in range(3):
        lo = [slice(None)] * 3
        lo[axis] = slice(1, None)
        hi = [slice(None)] * 3
        hi[axis] = slice(None, -1)
        out[2 * axis][tuple(lo)] = near[axis][tuple(lo)]  # to v - e
        out[2 * axis + 1][tuple(hi)] = near[axis][tuple(lo)]  # to v + e: the neighbour's affinity to v
    return out


def watershed_segment(
    affs: np.ndarray,
    thresholds: Sequence[float],
    offsets_zyx: Sequence[Sequence[int]] | None = None,
    min_seed: int = 10,
) -> list[np.ndarray]:
    """One uint64 (X, Y, Z) segmentation per threshold: graph components as seeds, then seeded watershed.

    With ``a`` each voxel's six face affinities: the connected components (cc3d, on the voxel connectivity
    graph) of the edges with affinity > ``1 - threshold`` that have at least ``min_seed`` voxels are the
    seeds; scikit-image's watershed floods the boundary map ``1 - mean(a)`` from them to label the rest.
    """
    import cc3d
    from skimage.segmentation import watershed

    _check(affs, offsets_zyx)
    six = _six_neighbour(affs)
    boundary = 1.0 - six.mean(0)
    bits = [2, 1, 8, 4, 32, 16]  # cc3d's bits for -x, +x, -y, +y, -z, +z (x = first array axis)
    out = []
    for t in thresholds:
        vcg = np.zeros(boundary.shape, dtype=np.uint8)
        for k, bit in enumerate(bits):
            vcg |= np.where(six[k] > 1.0 - t, bit, 0).astype(np.uint8)
        comps = cc3d.color_connectivity_graph(vcg, connectivity=6).astype(np.int64)
        sizes = np.bincount(comps.ravel())
        seeds = np.where(sizes[comps] >= min_seed, comps, 0)
        if seeds.max() == 0:
            out.append(np.ones(boundary.shape, dtype=np.uint64))
            continue
        out.append(watershed(boundary, markers=seeds).astype(np.uint64))
    return out


def segment(
    affs: np.ndarray,
    thresholds: Sequence[float],
    method: str = "waterz",
    offsets_zyx: Sequence[Sequence[int]] | None = None,
) -> list[np.ndarray]:
    """Dispatch to :func:`waterz_segment` or :func:`watershed_segment` (``method`` in :data:`METHODS`)."""
    if method == "waterz":
        return waterz_segment(affs, thresholds, offsets_zyx)
    if method == "watershed":
        return watershed_segment(affs, thresholds, offsets_zyx)
    raise ValueError(f"unknown agglomeration '{method}' (known: {', '.join(METHODS)})")


def threshold_baseline(raw: np.ndarray, threshold: float) -> np.ndarray:
    """Trivial baseline: connected components (6-connected, cc3d) of ``raw > threshold``, then every voxel
    left out (dark membranes) joins its nearest component (scikit-image ``expand_labels``). (X, Y, Z) uint64."""
    import cc3d
    from skimage.segmentation import expand_labels

    comps = cc3d.connected_components(np.asarray(raw) > threshold, connectivity=6)
    if comps.max() == 0:
        return np.ones(raw.shape, dtype=np.uint64)
    return expand_labels(comps, distance=max(raw.shape)).astype(np.uint64)
