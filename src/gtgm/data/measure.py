"""What is measured in a box: what the ``describe`` captioner writes from, the audit checks captions against and the
region objectives read (:func:`box_measurements` reads a box from the cache, :func:`box_facts`). The rest are pure
functions: patch in, numbers out.

All shares are fractions of the patch's voxels in [0, 1]. Positions use the RAS array order of the
cache: axis 0 increases towards the patient's Right, axis 1 Anterior, axis 2 Superior.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from gtgm.data.boxes import Patch, make_patch
from gtgm.data.patches import VolumeCache

# Hounsfield bands (lower bound inclusive, upper exclusive), named by the density measured, never by an organ or a
# contrast agent the captioner cannot know is there (a head scan has no lung; 100-300 HU may be unenhanced)
HU_BANDS = {
    "air-density": (-np.inf, -900.0),
    "low-density (-900 to -500 HU)": (-900.0, -500.0),
    "fat-density": (-200.0, -30.0),
    "soft-tissue or fluid density": (-30.0, 100.0),
    "high-density (100 to 300 HU)": (100.0, 300.0),
    "bone-like density": (300.0, np.inf),
}


def background_mask(x: np.ndarray, modality: str, pad_value: float) -> np.ndarray:
    """Voxels without signal: CT below pad + 0.05 (HU < -900 with the default window), MRI within
    0.25 z-units of the pad value; EM has no background."""
    if modality == "EM":
        return np.zeros(x.shape, dtype=bool)
    return x < pad_value + (0.05 if modality == "CT" else 0.25)


def position(patch: Patch) -> dict[str, Any]:
    """Centre of the box's overlap with the volume, as fractions of the volume along each axis, plus
    coarse words for each axis."""
    frac = []
    for s, n, v in zip(patch.start, patch.size, patch.volume_shape):
        lo, hi = max(s, 0), min(s + n, v)
        frac.append((lo + hi) / 2 / max(v, 1))
    word = lambda f, lo, mid, hi: lo if f < 0.4 else hi if f > 0.6 else mid  # noqa: E731
    radial = float(np.sqrt(sum((f - 0.5) ** 2 for f in frac[:2])) * 2)  # 0 centre .. ~1.4 corner (axial plane)
    return {
        "fraction": [float(f) for f in frac],
        "lr": word(frac[0], "left", "midline", "right"),
        "ap": word(frac[1], "posterior", "mid", "anterior"),
        "si": word(frac[2], "inferior", "mid-level", "superior"),
        "radial": "central" if radial < 0.45 else "peripheral",
    }


def ct_hu(patch: Patch) -> np.ndarray:
    """Channel 0 mapped back to Hounsfield units from the cache's CT window record."""
    rec = patch.normalization[0] if patch.normalization else {"window": [-1000.0, 1000.0]}
    lo, hi = rec.get("window", [-1000.0, 1000.0])
    return patch.image[0] * (hi - lo) + lo


def ct_shares(patch: Patch) -> dict[str, float]:
    """Share of voxels in each Hounsfield band of :data:`HU_BANDS`."""
    hu = ct_hu(patch)
    return {name: float(((hu >= lo) & (hu < hi)).mean()) for name, (lo, hi) in HU_BANDS.items()}


def mri_stats(patch: Patch) -> dict[str, float]:
    """Background (no signal), bright (> +1 SD) and dark (< -1 SD) shares, and tissue homogeneity.

    Values are z-scores over the volume's foreground; background: :func:`background_mask`.
    """
    x = patch.image[0]
    background = background_mask(x, "MRI", patch.pad_value[0])
    tissue = x[~background]
    n = x.size
    return {
        "background": float(background.mean()),
        "bright": float((tissue > 1.0).sum() / n),
        "dark": float((tissue < -1.0).sum() / n),
        "tissue_std": float(tissue.std()) if tissue.size > 10 else 0.0,
        "tissue_mean": float(tissue.mean()) if tissue.size > 10 else 0.0,
    }


def em_stats(patch: Patch) -> dict[str, float]:
    """Membrane density, median cell profile diameter (in the volume's unit) and z-persistence.

    Membranes: voxels darker than ``min(Otsu threshold, 0.45)``. Cell profiles: connected
    non-membrane regions of the central section (≥ 4 pixels). Persistence: mean correlation of
    consecutive sections (high = processes run across the sections).
    """
    from skimage.filters import threshold_otsu

    x = patch.image[0]
    thr = min(float(threshold_otsu(x)) if np.ptp(x) > 0 else 0.5, 0.45)
    membrane = x < thr
    mid = x.shape[2] // 2
    cells, n = ndimage.label(~membrane[:, :, mid])
    areas = np.bincount(cells.ravel())[1:]
    areas = areas[areas >= 4]
    diameter = float(2 * np.sqrt(np.median(areas) / np.pi) * patch.spacing[0]) if areas.size else 0.0
    corr = [np.corrcoef(x[:, :, k].ravel(), x[:, :, k + 1].ravel())[0, 1] for k in range(x.shape[2] - 1)]
    corr = [c for c in corr if np.isfinite(c)]
    return {
        "membrane": float(membrane.mean()),
        "cells": int(areas.size),
        "diameter": diameter,
        "persistence": float(np.mean(corr)) if corr else 0.0,
    }


def edges(x: np.ndarray) -> float:
    """Share of voxels whose gradient magnitude exceeds 20 % of the patch's 1-99 % intensity range."""
    lo, hi = np.percentile(x, [1, 99])
    if hi <= lo:
        return 0.0
    grad = np.sqrt(sum(g**2 for g in np.gradient(x.astype(np.float32))))
    return float((grad > 0.2 * (hi - lo)).mean())


def symmetry(x: np.ndarray) -> float:
    """Correlation between the patch and its left-right mirror (axis 0); 0 for a flat patch."""
    a, b = x.ravel(), x[::-1].ravel()
    if a.std() < 1e-6:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def bright_components(x: np.ndarray, min_voxels: int = 20) -> int:
    """Number of 26-connected regions brighter than mean + 1 SD with at least ``min_voxels`` voxels."""
    if x.std() < 1e-6:
        return 0
    labels, n = ndimage.label(x > x.mean() + x.std(), structure=np.ones((3, 3, 3)))
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= min_voxels).sum())


def measure(patch: Patch) -> dict[str, Any]:
    """All measurements the describe captioner uses, as one JSON-able dict."""
    x = patch.image[0]
    out: dict[str, Any] = {
        "modality": patch.modality,
        "position": position(patch),
        "edges": edges(x),
        "symmetry": symmetry(x),
        "components": bright_components(x),
    }
    if patch.modality == "CT":
        out["ct"] = ct_shares(patch)
    elif patch.modality == "EM":
        out["em"] = em_stats(patch)
    else:
        out["mri"] = mri_stats(patch)
    return out


def box_measurements(cache: VolumeCache, i: int, rec: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``describe`` measurements of record ``rec``'s box (with the unit and, for EM, the section range)."""
    patch = make_patch(cache, i, rec["start"], rec["size"], meta)
    m = measure(patch)
    m["unit"] = patch.unit
    z0 = patch.start[2]
    m["position"]["section_range"] = (max(z0, 0), min(z0 + patch.size[2], patch.volume_shape[2]) - 1)
    return m


MODALITIES = ("CT", "MRI", "EM")


def box_facts(m: dict[str, Any]) -> np.ndarray:
    """(24,) float32 from :func:`~gtgm.data.measure.measure` output: position fractions (3), edge
    share, symmetry, log(1 + bright structures), CT band shares (6), MRI background / bright / dark shares, tissue
    SD and mean (5), EM membrane share, log(1 + cells), log(1 + diameter), persistence (4), modality one-hot (3);
    the entries of the other modalities are 0."""
    ct = list((m.get("ct") or {}).values()) or [0.0] * 6
    mri = m.get("mri") or {}
    mri = [mri.get(k, 0.0) for k in ("background", "bright", "dark", "tissue_std", "tissue_mean")]
    em = m.get("em") or {}
    em = [
        em.get("membrane", 0.0),
        np.log1p(em.get("cells", 0)),
        np.log1p(em.get("diameter", 0.0)),
        em.get("persistence", 0.0),
    ]
    onehot = [float(m["modality"] == k) for k in MODALITIES]
    head = [*m["position"]["fraction"], m["edges"], m["symmetry"], np.log1p(m["components"])]
    return np.asarray(head + ct + mri + em + onehot, dtype=np.float32)
