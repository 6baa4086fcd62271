"""CT windows as input channels, computed inside the network from the cached CT channel.

The cache stores one CT channel normalised with its window ``[a, b]`` (``y = (clip(x, a, b) - a) / (b - a)``). A
segmenter built with ``ct_windows = [[lo_1, hi_1], ...]`` takes that channel and feeds the network one channel per
window: ``c_k = clip((a + y · (b - a) - lo_k) / (hi_k - lo_k), 0, 1)`` — e.g. the wide window and a soft-tissue one
([-200, 300] HU: 10 HU of contrast is 0.02 of its range, against 0.005 of [-1000, 1000]). Doing it in the network
keeps the cache, pretraining, ``gtgm predict`` and the MONAI bundle on the one cached channel; the layer has no
weights (its buffers are not saved), so a checkpoint holds the same tensors with or without it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gtgm.errors import ConfigError
from gtgm.models.registry import register_input_layer


class CTWindows(nn.Module):
    """(B, 1, X, Y, Z) normalised with ``source`` -> (B, len(windows), X, Y, Z), one window per channel."""

    def __init__(self, source: list[float], windows: list[list[float]]):
        super().__init__()
        a, b = (float(v) for v in source)
        lo = torch.tensor([float(w[0]) for w in windows])
        hi = torch.tensor([float(w[1]) for w in windows])
        # c_k = y · scale_k + offset_k, then clipped: scale_k = (b - a) / (hi_k - lo_k), offset_k = (a - lo_k) / (...)
        self.register_buffer("scale", ((b - a) / (hi - lo)).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("offset", ((a - lo) / (hi - lo)).view(1, -1, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] * self.scale.to(x.dtype) + self.offset.to(x.dtype)).clamp(0, 1)


@register_input_layer("ct_windows", "ct_source_window")
def attach_ct_windows(
    net: nn.Module, ct_windows: list[list[float]] | None = None, ct_source_window: list[float] | None = None
) -> nn.Module:
    """``net`` (built for ``len(ct_windows)`` input channels) fed through :class:`CTWindows` by a forward pre-hook,
    so its state-dict keys and encoder prefix stay those of the plain network."""
    windows, source = ct_windows or [], ct_source_window
    if not windows:
        return net
    if source is None:
        raise ValueError("ct_windows needs the cache's CT window (model.ct_source_window)")
    net.input_windows = CTWindows(source, windows)
    net.register_forward_pre_hook(_windows_hook)
    return net


def refuse_in_pretraining(model: Any) -> None:
    """Pretraining encoders take the cached channel: a model section with ``ct_windows`` is refused in one line."""
    if getattr(model, "ct_windows", None):
        raise ConfigError(
            "model.ct_windows applies to fine-tuning: a pretraining encoder takes the cached channel (a segmenter fed "
            "several windows takes its weights on the first window); remove model.ct_windows here"
        )


def _windows_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (module.input_windows(args[0]), *args[1:])
