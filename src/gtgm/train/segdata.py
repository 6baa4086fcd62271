"""Fine-tuning data: labeled patch sampling from the parts of a split (:mod:`gtgm.data.splits`)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from gtgm.config import FinetuneConfig, SegAugmentConfig
from gtgm.data.body import hu_of, margin_voxels
from gtgm.data.patches import VolumeCache, read_patch
from gtgm.data.splits import IGNORE, Part, usable_mask
from gtgm.train.ctaug import sample_ct_ops


class SegPatches(Dataset):
    """``{"image": (C, *size), "label": (1, *size) int64 with IGNORE outside the usable part, "classes": (K,) bool}``.

    Sample ``i`` draws from ``default_rng([seed, i])``:

    1. a part: uniformly, or (``case_weights: voxels``) in proportion to its usable voxels (inside its box, on its
       labelled slices and, with ``body_crop``, inside the body), so an 8-slice slab is drawn as often as its voxels
       deserve; with ``synthetic_share`` s > 0 the synthetic parts' weights are rescaled to sum to s and the real
       ones' to 1 - s (:func:`share_synthetic`);
    2. a centre: with ``foreground_ratio`` a stored foreground voxel of the part, else a uniform voxel (z on a
       labelled slice); with ``body_crop`` both inside the body's box grown by ``body_margin_mm``, and voxels
       outside that box are padding (as at inference);
    3. its place in the patch: uniform (``fg_position: uniform``, or ``auto`` with ``augment``) or the centre;
    4. with ``seg_augment.spatial_prob``, a rotation and scale about that voxel (:func:`rotation_scale`; image
       linear, label nearest); with ``augment``, flips and in-plane quarter turns (:func:`flip_rotate`, EM);
    5. ``class_shift``: the old per-class shift (:func:`shift_classes`); CT: the contrast-phase and intensity ops of
       :mod:`gtgm.train.ctaug` in HU (``enhancing``: class id -> its unenhanced HU), padding left as it is.

    ``classes[k]`` is False for the classes a partial-label case does not annotate (the loss ignores them there;
    label values of such classes in its map, if any, become IGNORE).
    """

    def __init__(
        self,
        cache: VolumeCache,
        parts: list[Part],
        f: FinetuneConfig,
        seed: int = 0,
        aug: SegAugmentConfig | None = None,
        enhancing: dict[int, float] | None = None,
        num_classes: int = 0,
        peaks: dict[int, float] | None = None,
    ):
        self.cache, self.parts, self.f, self.seed = cache, parts, f, seed
        self.peaks = peaks or {}  # class id -> peak enhancement in HU (seg_augment.phase_peak)
        self.size = list(f.patch_size)
        self.aug, self.enhancing, self.num_classes = aug or SegAugmentConfig(), enhancing or {}, num_classes
        self.regions = [self._region(p) for p in parts]
        self.fg = [self._fg_in(k) for k in range(len(parts))]
        weights = np.array([self._usable_voxels(k) for k in range(len(parts))], dtype=np.float64)
        if f.case_weights == "uniform" or weights.sum() <= 0:
            weights = np.ones(len(parts))
        synthetic = [bool(cache.entries[p.case].get("synthetic")) for p in parts]
        if f.synthetic_share > 0 and synthetic and all(synthetic):  # (no synthetic case: nothing to share, silent)
            print(f"[finetune] warning: finetune.synthetic_share={f.synthetic_share} does nothing: every training "
                  "case is synthetic", file=sys.stderr)  # fmt: skip
        self.weights = share_synthetic(weights / weights.sum(), synthetic, f.synthetic_share)
        self.weighted = f.case_weights == "voxels" or (f.synthetic_share > 0 and any(synthetic))

    def _region(self, p: Part) -> Part:
        """The part, cut to its case's body box grown by the margin when ``body_crop`` (CT cases with a body mask)."""
        box = self.cache.body_box(p.case) if self.f.body_crop else None
        if box is None:
            return p
        margin = margin_voxels(self.f.body_margin_mm, self.cache.entries[p.case]["spacing"])
        lo = [max(a, b - m) for a, b, m in zip(p.lo, box[0], margin)]
        hi = [min(a, b + m) for a, b, m in zip(p.hi, box[1], margin)]
        slices = None if p.slices is None else [z for z in p.slices if lo[2] <= z < hi[2]]
        if any(a >= b for a, b in zip(lo, hi)) or slices == []:  # the body misses the part: keep the part
            return p
        return Part(p.case, lo, hi, slices)

    def _usable_voxels(self, k: int) -> float:
        """Voxels of part ``k`` the loss sees: in its region, on its labelled slices, inside the body (when cropped)."""
        r = self.regions[k]
        body = self.cache.body(r.case) if self.f.body_crop else None
        if body is not None:
            block = np.asarray(body[r.lo[0] : r.hi[0], r.lo[1] : r.hi[1], r.lo[2] : r.hi[2]], dtype=bool)
            per_slice = block.sum(axis=(0, 1))
        else:
            per_slice = np.full(r.hi[2] - r.lo[2], (r.hi[0] - r.lo[0]) * (r.hi[1] - r.lo[1]))
        if r.slices is not None:
            per_slice = per_slice[[z - r.lo[2] for z in r.slices if r.lo[2] <= z < r.hi[2]]]
        return float(per_slice.sum())

    def _fg_in(self, k: int) -> list[np.ndarray]:
        r, out = self.regions[k], []
        for locs in self.cache.foreground(r.case).values():
            ok = np.all((locs >= r.lo) & (locs < r.hi), axis=1)
            if r.slices is not None:
                ok &= np.isin(locs[:, 2], r.slices)
            if ok.any():
                out.append(locs[ok])
        return out

    def __len__(self) -> int:
        return 10**9  # indexed by a global sample counter

    def _centre(self, k: int, rng: np.random.Generator) -> np.ndarray:
        r, fg = self.regions[k], self.fg[k]
        if fg and rng.random() < self.f.foreground_ratio:
            locs = fg[int(rng.integers(len(fg)))]
            return locs[int(rng.integers(len(locs)))]
        c = np.array([int(rng.integers(lo, hi)) for lo, hi in zip(r.lo, r.hi)])
        if r.slices is not None:
            c[2] = r.slices[int(rng.integers(len(r.slices)))]
        return c

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        n = len(self.parts)
        k = int(rng.choice(n, p=self.weights)) if self.weighted else int(rng.integers(n))
        r = self.regions[k]
        centre = self._centre(k, rng)
        uniform = self.f.fg_position == "uniform" or (self.f.fg_position == "auto" and self.f.augment)
        where = np.array([int(rng.integers(s)) if uniform else s // 2 for s in self.size])
        spatial = self.aug.spatial_prob > 0 and rng.random() < self.aug.spatial_prob
        if spatial:
            matrix = rotation_scale(self.aug, rng, self.cache.entries[r.case]["spacing"])
            image, label = self._read_moved(r, centre, where, matrix)
        else:
            image, label = self._read(r, centre, where)
        if self.f.augment:
            image, label = flip_rotate(image, label, rng)
        if self.f.class_shift > 0:
            shift_classes(image, label, self.f.class_shift, rng)
        if self.cache.entries[r.case]["modality"] == "CT" and (self.aug.phase_prob or self.aug.intensity_prob):
            self._ct_ops(image, label, r.case, rng)
        return {"image": torch.from_numpy(image), "label": torch.from_numpy(label)[None], "classes": self._classes(r)}

    def _read(self, r: Part, centre: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The patch whose voxel ``where`` is ``centre`` (moved inside the volume where it fits), with padding and
        IGNORE outside the region and its labelled slices."""
        shape = self.cache.shape(r.case)
        start = [int(c) - int(w) for c, w in zip(centre, where)]
        start = [min(max(s0, 0), n - s) if n >= s else s0 for s0, n, s in zip(start, shape, self.size)]
        return self._block(r, start, self.size)

    def _block(self, r: Part, start: list[int], size: list[int]) -> tuple[np.ndarray, np.ndarray]:
        pad = np.asarray(self.cache.pad_value(r.case), dtype=np.float32)
        image = read_patch(self.cache.image(r.case), start, size, self.cache.pad_value(r.case))
        label = read_patch(self.cache.label(r.case), start, size, 0).astype(np.int64)
        outside = ~usable_mask(r, start, size)
        image[:, outside] = pad[:, None]
        label[outside] = IGNORE
        if r.slices is not None:
            z = np.arange(start[2], start[2] + size[2])
            label[:, :, ~np.isin(z, r.slices)] = IGNORE
        known = self.cache.label_classes(r.case)
        if known is not None:  # a partial case's label values beyond the classes it declares: unknown, not learnt
            label[(label > 0) & ~np.isin(label, known)] = IGNORE
        return image, label

    def _read_moved(
        self, r: Part, centre: np.ndarray, where: np.ndarray, matrix: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The patch of ``_read`` rotated and scaled about ``centre``: output voxel ``o`` samples the volume at
        ``centre + matrix·(o − where)`` (image linear, label nearest), from the block those points span."""
        corners = np.array(np.meshgrid(*[[0, s - 1] for s in self.size], indexing="ij")).reshape(3, -1)
        points = centre[:, None] + matrix @ (corners - where[:, None])
        start = np.floor(points.min(1)).astype(int) - 1
        size = (np.ceil(points.max(1)).astype(int) + 2 - start).tolist()
        image, label = self._block(r, start.tolist(), size)
        offset = (centre - start) - matrix @ where
        pad = np.asarray(self.cache.pad_value(r.case), dtype=np.float32)
        moved = [
            ndimage.affine_transform(c, matrix, offset, self.size, order=1, mode="constant", cval=float(v))
            for c, v in zip(image, pad)
        ]
        label = ndimage.affine_transform(label, matrix, offset, self.size, order=0, mode="constant", cval=IGNORE)
        return np.stack(moved).astype(np.float32), label.astype(np.int64)

    def _ct_ops(self, image: np.ndarray, label: np.ndarray, case: int, rng: np.random.Generator) -> None:
        """In place on channel 0: to HU, the sampled ops, back to the cache's normalisation (clipped to its window)."""
        ops = sample_ct_ops(self.aug, self.enhancing, rng, self.peaks)
        if not ops.phase and ops.intensity is None:
            return
        record = self.cache.meta(case)["normalization"][0]
        pad = image[0] <= np.float32(self.cache.pad_value(case)[0])  # padding stays what inference pads with
        hu = ops(hu_of(image[0], record), label, self.aug.phase_ramp)
        lo, hi = record["window"]
        image[0] = np.where(pad, image[0], (np.clip(hu, lo, hi) - lo) / (hi - lo))

    def _classes(self, r: Part) -> torch.Tensor:
        """(K,) bool: the classes case ``r.case`` annotates (background always); all when it labels every class."""
        known = self.cache.label_classes(r.case)
        mask = torch.ones(max(self.num_classes, 1), dtype=torch.bool)
        if known is not None:
            mask[1:] = False
            mask[[k for k in known if k < len(mask)]] = True
        return mask


def share_synthetic(weights: np.ndarray, synthetic: list[bool], share: float) -> np.ndarray:
    """Draw probabilities (P,) with the ``synthetic`` parts' summing to ``share`` and the others' to 1 - ``share``,
    each side in the proportions of ``weights`` (P,); unchanged when ``share`` is 0 or one side is empty."""
    is_syn = np.asarray(synthetic, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)
    if share <= 0 or w[is_syn].sum() <= 0 or w[~is_syn].sum() <= 0:
        return weights
    return np.where(is_syn, share * w / w[is_syn].sum(), (1 - share) * w / w[~is_syn].sum())


def rotation_scale(aug: SegAugmentConfig, rng: np.random.Generator, spacing: list[float]) -> np.ndarray:
    """(3, 3) map from patch offsets to volume offsets (voxels): ``D⁻¹ · R · D / s`` with ``R`` rotations of
    U(±``rotate_deg``) about x, y and z (in mm space: ``D`` = diag(spacing)) and ``s`` ~ U(``scale``) (s > 1
    enlarges the content)."""
    angles = np.deg2rad(rng.uniform(-aug.rotate_deg, aug.rotate_deg, 3))
    rot = np.eye(3)
    for axis, a in enumerate(angles):
        i, j = [x for x in range(3) if x != axis]
        r = np.eye(3)
        r[i, i] = r[j, j] = np.cos(a)
        r[i, j], r[j, i] = -np.sin(a), np.sin(a)
        rot = r @ rot
    d = np.diag(np.asarray(spacing, dtype=np.float64))
    return np.linalg.inv(d) @ rot @ d / float(rng.uniform(*aug.scale))


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
    """The old per-class shift (kept for the real-CT attribution table's baseline): in place, image (C, X, Y, Z)
    += u_k on the voxels of each class k ≥ 1 of label (X, Y, Z) (IGNORE and background unchanged), one
    ``u_k ~ U(-a, a)`` per class, in the cache's normalised units — a step on every label boundary."""
    for k in np.unique(label):
        if k > 0:  # IGNORE < 0
            image[:, label == k] += np.float32(rng.uniform(-a, a))
