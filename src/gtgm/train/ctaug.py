"""CT fine-tuning augmentation in Hounsfield units: contrast phase and nnU-Net's intensity set.

Deterministic ops with their parameters, and :func:`sample_ct_ops`, which draws them from a sample's generator (the
torchio ``RandomNoise`` -> ``Noise`` pattern), so a training patch is replayable from its record.

* :class:`PhaseChange` — one enhancing class ``k`` (unenhanced value ``u_k`` HU) of the patch: with ``m`` = the
  median HU of its voxels, ``e = max(m − u_k, 0)`` its enhancement and ``p_k`` its peak enhancement (0 when the
  preset names none), the change is ``d(x) = keep·max(e, p_k) − e + jitter + (compress − 1)·(x − m)``: another
  phase, up to the brighter of the scan's own and the textbook peak (so an unenhanced scan is also shown enhanced),
  and a flatter organ; with ``p_k ≤ e`` it is ``−(1 − keep)·e + ...`` (a later phase or none). It is applied as
  ``x + w·d(x)``, where ``w = clip((dist − 1/2) / ramp, 0, 1)`` and ``dist`` is each voxel's distance (voxels) to
  the nearest voxel outside the label: ``w`` is 0 outside the label and rises over ``ramp`` voxels inside it (a
  quarter of the change on the outermost voxels with ``ramp`` 2), so no step falls on the label boundary and no
  other class (lungs, bone) is touched. In voxels, not mm: the outermost voxel's share is then the same along a
  5 mm slice axis as in-plane.
* :class:`Intensity` — contrast ``40 + c·(x − 40)``, brightness ``x + b``, gamma over [-200, 300] HU
  (``−200 + 500·t^γ`` for ``t = (x + 200) / 500`` in [0, 1]; continuous at both ends), noise N(0, σ²) HU and a
  Gaussian blur, in that order; each is off when its parameter is neutral.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from gtgm.config import SegAugmentConfig

SOFT_CENTRE = 40.0  # HU: contrast is scaled about soft tissue
GAMMA_WINDOW = (-200.0, 300.0)  # HU: the range gamma remaps


@dataclass
class PhaseChange:
    """See the module docstring; ``unenhanced`` in HU."""

    cls: int
    unenhanced: float
    keep: float = 1.0
    jitter: float = 0.0
    compress: float = 1.0
    peak: float = 0.0

    def __call__(self, hu: np.ndarray, label: np.ndarray, ramp: float) -> None:
        """In place on ``hu`` (X, Y, Z) float32 where ``label`` (X, Y, Z) == ``cls``."""
        mask = label == self.cls
        if not mask.any():
            return
        box = _box(mask)
        sub, values = mask[box], hu[box]
        median = float(np.median(values[sub]))
        enhancement = max(median - self.unenhanced, 0.0)
        weight = ramp_weights(sub, ramp)
        target = self.keep * max(enhancement, self.peak)
        change = target - enhancement + self.jitter + (self.compress - 1.0) * (values - median)
        values += (weight * change).astype(values.dtype)


def ramp_weights(mask: np.ndarray, ramp: float) -> np.ndarray:
    """``clip((dist − 1/2) / ramp, 0, 1)`` inside ``mask`` (0 outside), ``dist`` the distance in voxels to the nearest
    voxel outside it (:func:`scipy.ndimage.distance_transform_edt`); the array's border is continued outwards (a
    label cut by the patch border goes on beyond it, so it does not fade there)."""
    if ramp <= 0:
        return mask.astype(np.float32)
    dist = ndimage.distance_transform_edt(np.pad(mask, 1, mode="edge"))[1:-1, 1:-1, 1:-1]
    return np.clip((dist - 0.5) / ramp, 0.0, 1.0).astype(np.float32) * mask


@dataclass
class Intensity:
    """See the module docstring; ``noise_seed`` draws the noise."""

    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    noise: float = 0.0
    blur: float = 0.0
    noise_seed: int = 0

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        x = hu
        if self.contrast != 1.0:
            x = SOFT_CENTRE + self.contrast * (x - SOFT_CENTRE)
        if self.brightness:
            x = x + self.brightness
        if self.gamma != 1.0:
            lo, hi = GAMMA_WINDOW
            t = (np.clip(x, lo, hi) - lo) / (hi - lo)
            x = np.where((x > lo) & (x < hi), lo + (hi - lo) * t**self.gamma, x)
        if self.noise:
            x = x + np.random.default_rng(self.noise_seed).normal(0.0, self.noise, x.shape)
        if self.blur:
            x = ndimage.gaussian_filter(x, self.blur, mode="nearest")
        return np.asarray(x, dtype=np.float32)


@dataclass
class CTOps:
    """What one training patch gets: phase changes, then the intensity op."""

    phase: list[PhaseChange] = field(default_factory=list)
    intensity: Intensity | None = None

    def __call__(self, hu: np.ndarray, label: np.ndarray, ramp: float) -> np.ndarray:
        out = np.array(hu, dtype=np.float32, copy=True)
        for change in self.phase:
            change(out, label, ramp)
        return self.intensity(out) if self.intensity else out


def sample_ct_ops(
    cfg: SegAugmentConfig, enhancing: dict[int, float], rng: np.random.Generator, peaks: dict[int, float] | None = None
) -> CTOps:
    """The ops of one patch: with ``phase_prob``, a :class:`PhaseChange` for every class of ``enhancing`` (class id
    -> unenhanced HU; absent classes change nothing; ``peaks``: class id -> peak enhancement in HU, 0 when absent);
    each intensity op on its own with ``intensity_prob``."""
    peaks = peaks or {}
    ops = CTOps()
    if enhancing and rng.random() < cfg.phase_prob:
        for cls, unenhanced in sorted(enhancing.items()):
            keep, compress = rng.uniform(*cfg.phase_keep), rng.uniform(*cfg.phase_compress)
            jitter = rng.uniform(-cfg.phase_jitter, cfg.phase_jitter)
            peak = float(peaks.get(cls, 0.0))
            ops.phase.append(PhaseChange(cls, unenhanced, float(keep), float(jitter), float(compress), peak))
    p = cfg.intensity_prob
    if p > 0:
        draw = lambda lo, hi, neutral: float(rng.uniform(lo, hi)) if rng.random() < p else neutral  # noqa: E731
        op = Intensity(
            contrast=draw(*cfg.contrast, 1.0),
            brightness=draw(-cfg.brightness_hu, cfg.brightness_hu, 0.0),
            gamma=draw(*cfg.gamma, 1.0),
            noise=draw(0.0, cfg.noise_hu, 0.0),
            blur=draw(*cfg.blur_sigma, 0.0),
            noise_seed=int(rng.integers(0, 2**31 - 1)),
        )
        ops.intensity = op if (op.contrast, op.brightness, op.gamma, op.noise, op.blur) != (1, 0, 1, 0, 0) else None
    return ops


def _box(mask: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``mask``'s True voxels, grown by one voxel (for the distance transform's frame)."""
    hits = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    return tuple(slice(max(int(h[0]) - 1, 0), int(h[-1]) + 2) for h in hits)
