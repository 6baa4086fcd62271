"""The one small interface every captioner backend implements; the patch it describes is
:class:`gtgm.data.boxes.Patch`."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from gtgm.data.boxes import Patch


class Captioner(Protocol):
    """``caption(patches, seed) -> texts``, one text per patch, in order."""

    name: str
    version: str

    def caption(self, patches: list[Patch], seed: int) -> list[str]: ...


def slice_index(patch: Patch, mode: str, seed: int) -> int:
    """Axial slice (z index inside the patch) to show an image model: central, random or informative.

    ``informative``: the slice with the largest intensity standard deviation (most structure).
    """
    depth = patch.image.shape[3]
    if mode == "central":
        return depth // 2
    if mode == "random":
        return int(patch.rng(seed).integers(depth))
    if mode == "informative":
        return int(np.argmax(patch.image[0].reshape(-1, depth).std(axis=0)))
    raise ValueError(f"unknown slice mode '{mode}'")


def slice_uint8(patch: Patch, z: int) -> np.ndarray:
    """Axial slice ``z`` of channel 0 as a uint8 picture (rows = anterior..posterior, cols = x).

    Intensities are stretched between the patch's 1st and 99th percentiles.
    """
    img = patch.image[0, :, :, z].T[::-1]  # rows: y from anterior (top) to posterior
    lo, hi = np.percentile(patch.image[0], [1, 99])
    scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)
