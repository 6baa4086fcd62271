"""Affinities from instance labels.

Offsets are voxel steps written in (z, y, x) order, the field's convention (CREMI, waterz, PyTorch
Connectomics): the default ``[[-1, 0, 0], [0, -1, 0], [0, 0, -1]]`` gives the 3 nearest-neighbour
affinities z, y, x. gtgm's arrays are (x, y, z), so :func:`offsets_xyz` reverses each step.

For an offset ``o`` (in array order) and voxel ``v``, channel ``c`` of the target is

    aff[c, v]  = 1  if v + o lies in the volume, label[v] == label[v + o] and label[v] > 0, else 0
    mask[c, v] = 1  if v + o lies in the volume and neither label[v] nor label[v + o] is ignored

so background (label 0: membranes / extracellular space where a dataset marks them) is connected to
nothing, pairs that leave the volume (or patch) are unknown, and pairs touching an ignored voxel (label
``IGNORE`` = -1: unlabelled sections, outside the usable box, or CREMI's 0xffffffffffffffff read as int64)
are unknown. A voxel and its offset partner are the same pair the waterz convention uses
(``affs[c][z][y][x]`` relates a voxel to its ``-1`` neighbour along axis ``c``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gtgm.data.splits import IGNORE

NEAREST_ZYX = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]


def offsets_xyz(offsets_zyx: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """(z, y, x) steps -> (x, y, z) steps, the order of gtgm's arrays."""
    out = []
    for o in offsets_zyx:
        if len(o) != 3 or not any(o):
            raise ValueError(f"affinity offset {list(o)} is not a non-zero (z, y, x) step")
        out.append((int(o[2]), int(o[1]), int(o[0])))
    return out


def _pair_slices(shape: Sequence[int], step: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices ``(here, there)`` such that ``a[here]`` and ``a[there]`` are voxels ``v`` and ``v + step``."""
    here, there = [], []
    for n, s in zip(shape, step):
        here.append(slice(max(0, -s), n - max(0, s)))
        there.append(slice(max(0, s), n + min(0, s)))
    return tuple(here), tuple(there)


def affinities_torch(labels: torch.Tensor, offsets: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``labels`` (..., X, Y, Z) int64 -> ``(aff, mask)`` float32 (..., C, X, Y, Z), offsets in (x, y, z)."""
    lead, shape = labels.shape[:-3], labels.shape[-3:]
    aff = labels.new_zeros((*lead, len(offsets), *shape), dtype=torch.float32)
    mask = torch.zeros_like(aff)
    known = labels != IGNORE
    for c, step in enumerate(offsets):
        here, there = _pair_slices(shape, step)
        a, b = labels[(..., *here)], labels[(..., *there)]
        aff[(..., c, *here)] = ((a == b) & (a > 0)).float()
        mask[(..., c, *here)] = (known[(..., *here)] & known[(..., *there)]).float()
    return aff, mask


def affinities(labels: np.ndarray, offsets_zyx: Sequence[Sequence[int]] = NEAREST_ZYX) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels (X, Y, Z) -> ``(aff, mask)`` float32 (C, X, Y, Z); offsets in (z, y, x) order."""
    lab = torch.from_numpy(np.asarray(labels).astype(np.int64))
    aff, mask = affinities_torch(lab, offsets_xyz(offsets_zyx))
    return aff.numpy(), mask.numpy()
