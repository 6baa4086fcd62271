"""Value checks of configuration sections at the boundary (each names the dotted key it refuses)."""

from __future__ import annotations

import math
from typing import Any

from gtgm.errors import ConfigError


def check_ranges(
    section: str,
    obj: Any,
    at_least_one: tuple[str, ...] = (),
    ratios: tuple[str, ...] = (),
    sizes: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
) -> None:
    """Value checks at the boundary: counts and intervals ≥ 1, ratios in (0, 1], patch sizes of 3 positive ints,
    finite amounts ≥ 0."""
    for key in at_least_one:
        if getattr(obj, key) < 1:
            raise ConfigError(f"config key '{section}.{key}': must be at least 1, got {getattr(obj, key)}")
    for key in ratios:
        if not 0 < getattr(obj, key) <= 1:
            raise ConfigError(f"config key '{section}.{key}': must lie in (0, 1], got {getattr(obj, key)}")
    for key in sizes:
        value = getattr(obj, key)
        if len(value) != 3 or any(v < 1 for v in value):
            raise ConfigError(f"config key '{section}.{key}': expected 3 positive sizes (x, y, z), got {value}")
    for key in non_negative:
        if not 0 <= getattr(obj, key) < math.inf:
            raise ConfigError(f"config key '{section}.{key}': must be a finite number ≥ 0, got {getattr(obj, key)}")


def check_patch_fits_model(key: str, size: list[int], model: Any) -> None:
    """A patch the encoder can take: resunet with K stages halves K-1 times, so each side must be a multiple of
    2^(K-1) and the deepest map more than one voxel (instance norm); swinunetr needs sides divisible by 32; resenc
    sides divisible by the product of the strides along each axis (both decoders add skips of equal size)."""
    if model.encoder == "resenc":
        from gtgm.models.resenc import model_arch_kwargs, stride_products

        total = stride_products(model_arch_kwargs(model))
        if any(s % t for s, t in zip(size, total)) or math.prod(s // t for s, t in zip(size, total)) < 2:
            raise ConfigError(
                f"config key '{key}': the resenc strides downsample by {total}, so sides must be multiples of "
                f"those with more than one voxel at the deepest stage, got {size}"
            )
        return
    if model.encoder == "swinunetr":
        if any(s % 32 for s in size):
            raise ConfigError(f"config key '{key}': swinunetr needs sides divisible by 32, got {size}")
        return
    factor = 2 ** (len(model.channels) - 1)
    if any(s % factor for s in size) or math.prod(s // factor for s in size) < 2:
        raise ConfigError(
            f"config key '{key}': the {len(model.channels)}-stage resunet needs sides that are multiples of {factor} "
            f"and more than one voxel after {len(model.channels) - 1} halvings, got {size}"
        )
