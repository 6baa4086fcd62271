"""Value checks of configuration sections at the boundary (each names the dotted key it refuses), and the
validation of a YAML mapping against the configuration dataclasses (:func:`from_dict`)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal

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


# Top-level sections of earlier versions that no stage read: the config.yaml of a run they wrote still loads.
RETIRED_SECTIONS = ("patches",)


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Validate ``data`` against dataclass ``cls`` recursively; errors name the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    if cls.__name__ == "Config" and cls.__module__ == "gtgm.config":
        data = {k: v for k, v in data.items() if k not in RETIRED_SECTIONS}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config key '{key}': {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    return _coerce_scalar(tp, value, key)


def _coerce_scalar(tp: Any, value: Any, key: str) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        value = float(value)  # YAML 1.1 reads 3e-5 (no dot) as a string; a float key takes it as the number it is
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        raise ConfigError(f"config key '{key}': unsupported type {tp}")
    if not ok:
        raise ConfigError(f"config key '{key}': expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return float(value) if tp is float else value
