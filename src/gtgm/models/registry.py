"""One registry, one factory (timm style): ``@register_encoder("name")`` + ``create_encoder(name, **kw)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from gtgm.errors import ConfigError

_ENCODERS: dict[str, Callable[..., nn.Module]] = {}
_SEGMENTERS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str) -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ENCODERS[name] = fn
        return fn

    return deco


def list_encoders() -> list[str]:
    import gtgm.models.encoders  # noqa: F401  (registers the builders)

    return sorted(_ENCODERS)


def create_encoder(name: str, **overrides: Any) -> nn.Module:
    """Build the encoder registered as ``name`` with keyword overrides (in_channels, channels, ...)."""
    names = list_encoders()
    if name not in names:
        raise ConfigError(f"unknown encoder '{name}' (known: {', '.join(names)})")
    return _ENCODERS[name](**overrides)


def register_segmenter(name: str) -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _SEGMENTERS[name] = fn
        return fn

    return deco


def list_segmenters() -> list[str]:
    import gtgm.models.segmenters  # noqa: F401  (registers the builders)

    return sorted(_SEGMENTERS)


def create_segmenter(name: str, num_classes: int, **overrides: Any) -> nn.Module:
    """Build the segmenter registered as ``name`` (same names as the encoders it embeds)."""
    names = list_segmenters()
    if name not in names:
        raise ConfigError(f"unknown segmenter '{name}' (known: {', '.join(names)})")
    return _SEGMENTERS[name](num_classes=num_classes, **overrides)
