"""One registry, one factory (timm style): ``@register_encoder("name")`` + ``create_encoder(name, **kw)``.

The registry knows no model: ``gtgm/models/__init__.py`` imports the modules whose builders register themselves,
so importing anything under ``gtgm.models`` fills it (as timm's ``models/__init__`` does for ``_registry``)."""

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
    return sorted(_SEGMENTERS)


_INPUT_LAYERS: list[tuple[tuple[str, ...], Callable[..., nn.Module]]] = []


def register_input_layer(*keys: str) -> Callable:
    """A function ``fn(net, **{key: value})`` that puts a layer in front of every segmenter built with these keyword
    arguments (``create_segmenter`` hands them to it, not to the builder), e.g. the CT windows of
    ``gtgm.models.windows``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _INPUT_LAYERS.append((keys, fn))
        return fn

    return deco


TASKS = ("segmentation", "affinity")


def architecture_kwargs(model: Any) -> dict[str, Any]:
    """The keyword arguments every encoder / segmenter builder takes from a ``ModelConfig`` (each uses its own)."""
    keys = ("in_channels", "channels", "feature_size", "use_checkpoint", "norm_affine")
    keys += ("kernel_sizes", "strides", "blocks_per_stage", "decoder_convs")
    kwargs = {k: getattr(model, k) for k in keys}
    windows = getattr(model, "ct_windows", None)
    if windows:  # the network sees one channel per CT window (gtgm.models.windows)
        kwargs.update(in_channels=len(windows), ct_windows=windows, ct_source_window=model.ct_source_window)
    return kwargs


def create_segmenter(name: str, num_classes: int, task: str = "segmentation", **overrides: Any) -> nn.Module:
    """Build the segmenter registered as ``name`` (same names as the encoders it embeds).

    ``task="segmentation"``: ``num_classes`` logits, softmax at inference. ``task="affinity"`` (EM):
    ``num_classes`` = number of affinity offsets, one logit per offset; the affinities are the sigmoid of the
    outputs (applied by the loss, on logits for stability, and by inference). ``model.task`` records it.
    """
    names = list_segmenters()
    if name not in names:
        raise ConfigError(f"unknown segmenter '{name}' (known: {', '.join(names)})")
    if task not in TASKS:
        raise ConfigError(f"unknown segmenter task '{task}' (known: {', '.join(TASKS)})")
    layers = [(fn, {k: overrides.pop(k, None) for k in keys}) for keys, fn in _INPUT_LAYERS]
    net = _SEGMENTERS[name](num_classes=num_classes, **overrides)
    for fn, kwargs in layers:
        net = fn(net, **kwargs)
    net.task = task
    return net
