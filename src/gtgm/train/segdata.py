"""Fine-tuning data: train/val/test splits of a labeled cache and labeled patch sampling.

Two split kinds:

* ``cases`` — shuffle (``split_seed``) of the labeled cases into test (``test_fraction``), val
  (``val_fraction``) and train; the label ratio keeps ``max(1, round(ratio · n_train))`` train cases.
* ``region`` — each labeled volume is cut into slabs along ``region_axis`` (train below
  ``region_bounds[0]``, val between, test above ``region_bounds[1]``, as fractions of the axis), so
  train and test voxels never overlap; image voxels outside a slab are replaced by the pad value when
  sampling, so no training patch sees test intensities either. The label ratio keeps that share of the
  train slab's axial (z) slices as labelled (``label_slices``: ``spread`` = evenly spaced, ``block`` =
  a contiguous block in the middle of the slab, a sub-volume as EM affinities need, with unlabelled
  image context on both sides like the sections it will be applied to); the others are ignored by the loss.
  EM presets cut along z (``region_axis: 2``): first sections train, last sections test.

A split is a list of :class:`Part` (case index, box, labelled slices), stored as ``split.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gtgm.config import FinetuneConfig
from gtgm.data.patches import VolumeCache, read_patch
from gtgm.errors import GtgmError

IGNORE = -1  # label value the loss ignores


@dataclass
class Part:
    case: int
    lo: list[int]  # box [lo, hi) of the volume this part may use
    hi: list[int]
    slices: list[int] | None = None  # labelled z indices (None = all)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_split(cache: VolumeCache, cfg: FinetuneConfig) -> dict[str, list[Part]]:
    """``{"train": [...], "val": [...], "test": [...]}`` for the labeled cases of ``cache``.

    Drawn with ``cfg.split_seed`` only, so runs that differ in their initialisation seed share their test
    and validation cases and their labelled subset (paired comparisons on fixed evaluation cases).
    """
    cases = list(range(len(cache)))
    kind = cfg.split if cfg.split != "auto" else ("region" if len(cases) == 1 else "cases")
    if kind == "region":
        parts = [_region_split(cache, i, cfg) for i in cases]
        return {k: [p[k][0] for p in parts] for k in ("train", "val", "test")}
    if len(cases) < 3:
        raise GtgmError(
            f"{cache.root}: a case split needs at least 3 labeled cases (has {len(cases)}); use split=region"
        )
    order = [int(i) for i in np.random.default_rng([cfg.split_seed, 7]).permutation(cases)]
    n_test = max(1, round(cfg.test_fraction * len(order)))
    n_val = max(1, round(cfg.val_fraction * len(order)))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if not train:
        raise GtgmError(f"{cache.root}: no training case left after the val/test split")
    keep = max(1, round(cfg.label_ratio * len(train)))
    whole = lambda i: Part(i, [0, 0, 0], list(cache.shape(i)))  # noqa: E731
    return {
        "train": [whole(i) for i in sorted(train[:keep])],
        "val": [whole(i) for i in val],
        "test": [whole(i) for i in test],
    }


def _region_split(cache: VolumeCache, case: int, cfg: FinetuneConfig) -> dict[str, list[Part]]:
    shape = list(cache.shape(case))
    ax, (a, b) = cfg.region_axis, cfg.region_bounds
    cut_a, cut_b = round(a * shape[ax]), round(b * shape[ax])

    def part(lo_ax: int, hi_ax: int, slices: list[int] | None = None) -> Part:
        lo, hi = [0, 0, 0], list(shape)
        lo[ax], hi[ax] = lo_ax, hi_ax
        return Part(case, lo, hi, slices)

    if not 0 < cut_a < cut_b < shape[ax]:
        raise GtgmError(
            f"{cache.root}: case {cache.entries[case]['id']} (shape {shape}) is too small for region_bounds "
            f"{cfg.region_bounds} along axis {ax}"
        )
    train = part(0, cut_a)
    z_lo, z_hi = train.lo[2], train.hi[2]
    n = max(1, round(cfg.label_ratio * (z_hi - z_lo)))
    if n < z_hi - z_lo and cfg.label_slices == "block":
        first = z_lo + (z_hi - z_lo - n) // 2
        train.slices = list(range(first, first + n))
    elif n < z_hi - z_lo:
        train.slices = sorted({int(z) for z in np.linspace(z_lo, z_hi - 1, n + 2)[1:-1].round()})
    return {"train": [train], "val": [part(cut_a, cut_b)], "test": [part(cut_b, shape[ax])]}


class SegPatches(Dataset):
    """``{"image": (C, *size), "label": (1, *size) int64 with IGNORE outside the usable part}``.

    Sample ``i`` draws from ``default_rng([seed, i])``: a part, then (with ``foreground_ratio``) a
    stored foreground voxel inside the part as centre, else a uniform centre (z on a labelled slice);
    with ``augment``, that voxel lands anywhere in the patch (not only at its centre), and the patch gets
    random flips and an in-plane quarter turn (:func:`flip_rotate`).
    """

    def __init__(
        self,
        cache: VolumeCache,
        parts: list[Part],
        size: list[int],
        foreground_ratio: float,
        seed: int = 0,
        augment: bool = False,
    ):
        self.cache, self.parts, self.size, self.seed, self.augment = cache, parts, list(size), seed, augment
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


def usable_mask(p: Part, start: list[int], size: list[int]) -> np.ndarray:
    """Boolean (size) mask of patch voxels inside the part's box."""
    axes = [
        (np.arange(s0, s0 + n) >= lo) & (np.arange(s0, s0 + n) < hi) for s0, n, lo, hi in zip(start, size, p.lo, p.hi)
    ]
    return axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]


def part_arrays(cache: VolumeCache, p: Part) -> tuple[np.ndarray, np.ndarray]:
    """The part's box of image (C, ...) and label (...) as arrays (for sliding-window evaluation)."""
    box = tuple(slice(lo, hi) for lo, hi in zip(p.lo, p.hi))
    return np.asarray(cache.image(p.case)[(slice(None), *box)]), np.asarray(cache.label(p.case)[box])
