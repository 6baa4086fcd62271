"""Synthetic serial-section EM volumes with neuron instance labels (no EM volume ships in any package).

Generator, per volume (sizes in voxels of the (x, y, z) array; resolution 8 × 8 × 40 nm):

* cells: an anisotropic 3D Voronoi tessellation — each seed ``s`` has a random unit direction ``u``
  (biased towards z, like neurites crossing sections) and owns the voxels nearest to it in the metric
  ``d² = |q - s|² - (1 - α²)((q - s)·u)²`` (α = 0.35: cells are elongated along ``u``), on physical
  coordinates ``q`` (nm) warped by a smooth random field so that boundaries curve;
* membranes: voxels whose two nearest seeds are within ``m`` nm of each other in that metric
  (``d₂ - d₁ < m``, m ≈ 2 × membrane half-width) are dark (0.1–0.2), cytoplasm is bright
  (0.55–0.8 per cell) with smooth texture and a few dark organelles (mitochondria/vesicles);
* imaging: Gaussian blur σ = (1.0, 1.0, 0.3) voxels (anisotropic z), Gaussian noise σ = 0.04,
  stored as uint8;
* labels: the Voronoi cell of every voxel (membranes included, as CREMI's ``neuron_ids``), split into
  connected components so that each id is one connected neuron piece; ids 1..N, uint64.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EM_RESOLUTION_XYZ = (8.0, 8.0, 40.0)  # nm


def make_em_volume(
    seed: int, shape: tuple[int, int, int] = (128, 128, 32), n_cells: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """One volume: ``(raw uint8 (X, Y, Z), neuron_ids uint64 (X, Y, Z))`` at :data:`EM_RESOLUTION_XYZ`."""
    rng = np.random.default_rng(seed)
    res = np.asarray(EM_RESOLUTION_XYZ, dtype=np.float32)
    q = np.indices(shape, dtype=np.float32) * res[:, None, None, None]  # (3, X, Y, Z) nm
    extent = (np.asarray(shape) - 1) * res
    for axis in range(3):  # smooth warp, ±40 nm
        coarse = ndimage.gaussian_filter(rng.standard_normal((6, 6, 4)), 1.0)
        full = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=1)[
            : shape[0], : shape[1], : shape[2]
        ]
        q[axis] += (40.0 * full / (np.abs(full).max() + 1e-8)).astype(np.float32)
    seeds = rng.uniform(0, 1, (n_cells, 3)) * extent
    dirs = rng.normal(0, 1, (n_cells, 3)) * np.array([0.5, 0.5, 1.5])
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    best = np.full(shape, np.inf, dtype=np.float32)
    second = np.full(shape, np.inf, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.int32)
    alpha2 = 0.35**2
    for k in range(n_cells):
        diff = q - seeds[k][:, None, None, None].astype(np.float32)
        along = np.tensordot(dirs[k].astype(np.float32), diff, axes=1)
        d = np.sqrt(np.maximum((diff**2).sum(0) - (1 - alpha2) * along**2, 0))
        closer = d < best
        second = np.where(closer, best, np.minimum(second, d))
        owner = np.where(closer, k + 1, owner)
        best = np.where(closer, d, best)
    membrane = (second - best) < rng.uniform(12, 18)
    raw = _render(owner, membrane, n_cells, rng)
    return raw, _split_components(owner)


def _render(owner: np.ndarray, membrane: np.ndarray, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    shape = owner.shape
    brightness = rng.uniform(0.55, 0.8, n_cells + 1).astype(np.float32)
    img = brightness[owner]
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (2, 2, 0.5))
    img += 0.25 * texture / (np.abs(texture).max() + 1e-6)
    organelles = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (1.5, 1.5, 0.4))
    img[organelles > np.percentile(organelles, 97)] -= 0.3
    img[membrane] = rng.uniform(0.1, 0.2)
    img = ndimage.gaussian_filter(img, (1.0, 1.0, 0.3))
    img += rng.normal(0, 0.04, shape).astype(np.float32)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _split_components(owner: np.ndarray) -> np.ndarray:
    """Relabel so that every id is one 6-connected component; ids 1..N (uint64)."""
    out = np.zeros(owner.shape, dtype=np.uint64)
    next_id = 1
    for k in np.unique(owner):
        comp, n = ndimage.label(owner == k)
        mask = comp > 0
        out[mask] = comp[mask].astype(np.uint64) + np.uint64(next_id - 1)
        next_id += n
    return out
