"""Fine-tuning data: labeled patch sampling from the parts of a split (:mod:`gtgm.data.splits`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gtgm.data.patches import VolumeCache, read_patch
from gtgm.data.splits import IGNORE, Part, usable_mask


class SegPatches(Dataset):
    """``{"image": (C, *size), "label": (1, *size) int64 with IGNORE outside the usable part}``.

    Sample ``i`` draws from ``default_rng([seed, i])``: a part, then (with ``foreground_ratio``) a
    stored foreground voxel inside the part as centre, else a uniform centre (z on a labelled slice);
    with ``augment``, that voxel lands anywhere in the patch (not only at its centre), and the patch gets
    random flips and an in-plane quarter turn (:func:`flip_rotate`). With ``class_shift = a > 0``, every
    labelled class k ≥ 1 in the patch gets its own intensity offset ``x += u_k, u_k ~ U(-a, a)`` on its voxels
    (:func:`shift_classes`): contrast phases change organs' intensities by different amounts.
    """

    def __init__(
        self,
        cache: VolumeCache,
        parts: list[Part],
        size: list[int],
        foreground_ratio: float,
        seed: int = 0,
        augment: bool = False,
        class_shift: float = 0.0,
    ):
        self.cache, self.parts, self.size, self.seed, self.augment = cache, parts, list(size), seed, augment
        self.class_shift = class_shift
        self.foreground_ratio = foreground_ratio
        self.fg = [self._fg_in(p) for p in parts]

    def _fg_in(self, p: Part) -> list[np.ndarray]:
        out = []
        for locs in self.cache.foreground(p.case).values():
            ok = np.all((locs >= p.lo) & (locs < p.hi), axis=1)
            if p.slices is not None:
                ok &= np.isin(locs[:, 2], p.slices)
            if ok.any():
                out.append(locs[ok])
        return out

    def __len__(self) -> int:
        return 10**9  # indexed by a global sample counter

    def _centre(self, k: int, rng: np.random.Generator) -> np.ndarray:
        p, fg = self.parts[k], self.fg[k]
        if fg and rng.random() < self.foreground_ratio:
            locs = fg[int(rng.integers(len(fg)))]
            return locs[int(rng.integers(len(locs)))]
        c = np.array([int(rng.integers(lo, hi)) for lo, hi in zip(p.lo, p.hi)])
        if p.slices is not None:
            c[2] = p.slices[int(rng.integers(len(p.slices)))]
        return c

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        k = int(rng.integers(len(self.parts)))
        p = self.parts[k]
        shape = self.cache.shape(p.case)
        centre = self._centre(k, rng)
        where = [int(rng.integers(s)) if self.augment else s // 2 for s in self.size]  # its place in the patch
        start = [int(c) - w for c, w in zip(centre, where)]
        start = [min(max(s0, 0), n - s) if n >= s else s0 for s0, n, s in zip(start, shape, self.size)]
        image = read_patch(self.cache.image(p.case), start, self.size, self.cache.pad_value(p.case))
        label = read_patch(self.cache.label(p.case), start, self.size, 0).astype(np.int64)
        outside = ~usable_mask(p, start, self.size)
        image[:, outside] = np.asarray(self.cache.pad_value(p.case), dtype=image.dtype)[:, None]
        label[outside] = IGNORE
        if p.slices is not None:
            z = np.arange(start[2], start[2] + self.size[2])
            label[:, :, ~np.isin(z, p.slices)] = IGNORE
        if self.augment:
            image, label = flip_rotate(image, label, rng)
        if self.class_shift > 0:
            shift_classes(image, label, self.class_shift, rng)
        return {"image": torch.from_numpy(image), "label": torch.from_numpy(label)[None]}


def flip_rotate(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same random flips (each axis, p = 0.5) and in-plane quarter turn (k in 0..3, square x-y sides
    only) of image (C, X, Y, Z) and label (X, Y, Z). Affinity targets are computed after this, from the
    moved labels, so they stay right."""
    for axis in range(3):
        if rng.random() < 0.5:
            image, label = np.flip(image, axis + 1), np.flip(label, axis)
    k = int(rng.integers(4)) if label.shape[0] == label.shape[1] else 0
    image, label = np.rot90(image, k, axes=(1, 2)), np.rot90(label, k, axes=(0, 1))
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def shift_classes(image: np.ndarray, label: np.ndarray, a: float, rng: np.random.Generator) -> None:
    """In place: image (C, X, Y, Z) += u_k on the voxels of each class k ≥ 1 of label (X, Y, Z) (IGNORE and
    background unchanged), one ``u_k ~ U(-a, a)`` per class, in the cache's normalised units."""
    for k in np.unique(label):
        if k > 0:  # IGNORE < 0
            image[:, label == k] += np.float32(rng.uniform(-a, a))
