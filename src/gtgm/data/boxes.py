"""Boxes of a cached volume: the patch a captioner describes, its key, and reading it from the cache.

The home of what captioning (:mod:`gtgm.text`), the audit and pretraining (:mod:`gtgm.train`) share about a box;
what is measured in it is :mod:`gtgm.data.measure`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gtgm.data.patches import VolumeCache, read_patch


@dataclass
class Patch:
    """One patch location of a cached volume, with its pixels.

    ``image``: (C, X, Y, Z) float32 normalised as in the cache (RAS array order, z = slice axis).
    ``start``/``size``: the box in the volume, (x, y, z) voxels. ``normalization``: the cache's
    per-channel normalisation records (so CT can be mapped back to HU). ``pad_value``: per-channel
    value of voxels outside the volume / background.
    """

    key: str
    volume: str
    modality: str
    start: list[int]
    size: list[int]
    image: np.ndarray
    volume_shape: list[int]
    spacing: list[float]
    unit: str = "mm"
    normalization: list[dict[str, Any]] = field(default_factory=list)
    pad_value: list[float] = field(default_factory=lambda: [0.0])

    def rng(self, seed: int) -> np.random.Generator:
        """A generator fixed by (seed, key): the same patch and seed always draw the same numbers."""
        return np.random.default_rng([seed, zlib.crc32(self.key.encode())])


def box_key(volume: str, start: list[int], size: list[int]) -> str:
    """``<volume>:<x>,<y>,<z>:<sx>,<sy>,<sz>``: the key of a box in captions, text caches and audits."""
    return f"{volume}:{','.join(map(str, start))}:{','.join(map(str, size))}"


def make_patch(cache: VolumeCache, i: int, start: list[int], size: list[int], meta: dict[str, Any]) -> Patch:
    """Box ``start`` / ``size`` (x, y, z voxels) of cached volume ``i`` as a :class:`Patch` (``meta``: the volume's
    cache record, for its normalisation)."""
    entry = cache.entries[i]
    return Patch(
        key=box_key(entry["id"], start, size),
        volume=entry["id"],
        modality=entry["modality"],
        start=list(start),
        size=list(size),
        image=read_patch(cache.image(i), start, size, cache.pad_value(i)),
        volume_shape=list(entry["shape"]),
        spacing=list(entry["spacing"]),
        unit=entry["unit"],
        normalization=meta["normalization"],
        pad_value=list(cache.pad_value(i)),
    )
