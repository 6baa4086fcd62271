"""Two-view 3D augmentation: deterministic ops, and random wrappers that sample and record them.

Each deterministic op is a small dataclass whose fields are its parameters and whose ``__call__``
maps a tensor ``x`` of shape (C, X, Y, Z) to a tensor of the same shape. Each random wrapper has
``sample(rng, shape) -> op | None`` (None = not applied this time), drawing from a
``numpy.random.Generator``, so a view is fully described (and replayable) by its list of ops — the
torchio ``RandomNoise`` -> ``Noise`` pattern. :class:`TwoViews` samples two independent op lists for the
same patch (the shared crop is the patch itself, taken by the sampler).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from gtgm.config import AugmentConfig


class Op(Protocol):
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def describe(op: Any) -> dict[str, Any]:
    """JSON-able record of an op: its class name and parameters."""
    return {"op": type(op).__name__, **dataclasses.asdict(op)}


# ----------------------------------------------------------------------------- deterministic ops
@dataclass
class Flip:
    axes: list[int]  # spatial axes 0..2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=[a + 1 for a in self.axes])


@dataclass
class Rot90:
    k: int  # quarter turns in the axial (x, y) plane

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, self.k, dims=(1, 2))


@dataclass
class CropResize:
    start: list[int]
    size: list[int]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (a, b, c), (p, q, r) = self.start, self.size
        crop = x[:, a : a + p, b : b + q, c : c + r]
        return F.interpolate(crop[None], size=tuple(x.shape[1:]), mode="trilinear", align_corners=False)[0]


@dataclass
class Gamma:
    gamma: float  # y = lo + (hi - lo) · ((x - lo) / (hi - lo))^gamma, lo/hi = patch min/max

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = x.amin(), x.amax()
        span = (hi - lo).clamp_min(1e-8)
        return lo + span * ((x - lo) / span).clamp(0, 1) ** self.gamma


@dataclass
class Contrast:
    factor: float  # y = (x - mean) · factor + mean

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean()
        return (x - mean) * self.factor + mean


@dataclass
class Brightness:
    shift: float  # y = x + shift · std(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift * x.std()


@dataclass
class Noise:
    std: float  # y = x + N(0, (std · std(x))²), noise drawn from ``seed``
    seed: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return x + noise.to(x.device) * (self.std * x.std())


@dataclass
class Blur:
    sigma: float  # Gaussian, voxels, separable along the three axes (edge-replicating padding)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        radius = max(1, int(round(3 * self.sigma)))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (t / self.sigma) ** 2)
        kernel = kernel / kernel.sum()
        out = x[None]  # (1, C, X, Y, Z)
        for axis in range(3):
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = -1
            w = kernel.view(shape).expand(out.shape[1], -1, -1, -1, -1).contiguous()
            pad = [0] * 6
            pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
            out = F.conv3d(F.pad(out, pad, mode="replicate"), w, groups=out.shape[1])
        return out[0]


# ----------------------------------------------------------------------------- random wrappers
def _uniform(rng: np.random.Generator, bounds: list[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


@dataclass
class RandomFlip:
    prob: float

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Flip | None:
        axes = [a for a in range(3) if rng.random() < self.prob]
        return Flip(axes) if axes else None


@dataclass
class RandomRot90:
    prob: float

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Rot90 | None:
        if rng.random() >= self.prob:
            return None
        square = shape[0] == shape[1]
        return Rot90(int(rng.integers(1, 4)) if square else 2)


@dataclass
class RandomCropResize:
    prob: float
    scale: list[float]

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> CropResize | None:
        if rng.random() >= self.prob:
            return None
        size = [max(1, int(round(n * _uniform(rng, self.scale)))) for n in shape]
        start = [int(rng.integers(0, n - s + 1)) for n, s in zip(shape, size)]
        return CropResize(start, size)


@dataclass
class RandomScalar:
    """Samples ``op_cls(value)`` with value ~ U(bounds) with probability ``prob``."""

    op_cls: type
    prob: float
    bounds: list[float]

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Any:
        if rng.random() >= self.prob:
            return None
        return self.op_cls(_uniform(rng, self.bounds))


@dataclass
class RandomNoise:
    prob: float
    std: list[float]

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Noise | None:
        if rng.random() >= self.prob:
            return None
        return Noise(_uniform(rng, self.std), int(rng.integers(0, 2**31 - 1)))


def view_pipeline(cfg: AugmentConfig) -> list[Any]:
    """The per-view random wrappers, in the order they are applied."""
    return [
        RandomFlip(cfg.flip_prob),
        RandomRot90(cfg.rot90_prob),
        RandomCropResize(cfg.crop_prob, cfg.crop_scale),
        RandomScalar(Gamma, cfg.gamma_prob, cfg.gamma),
        RandomScalar(Contrast, cfg.contrast_prob, cfg.contrast),
        RandomScalar(Brightness, cfg.brightness_prob, cfg.brightness),
        RandomNoise(cfg.noise_prob, cfg.noise_std),
        RandomScalar(Blur, cfg.blur_prob, cfg.blur_sigma),
    ]


def text_view_pipeline(cfg: AugmentConfig) -> list[Any]:
    """Random wrappers of the caption-paired view: nothing that moves, mirrors or rescales the content, and
    intensity changes small enough to keep the caption's 5 % shares (see :mod:`gtgm.text.consistency`)."""
    return [
        RandomScalar(Contrast, cfg.contrast_prob, cfg.text_view_contrast),
        RandomScalar(Brightness, cfg.brightness_prob, cfg.text_view_brightness),
        RandomNoise(cfg.noise_prob, cfg.text_view_noise_std),
        RandomScalar(Blur, cfg.blur_prob, cfg.blur_sigma),
    ]


def apply_ops(x: torch.Tensor, ops: list[Any]) -> torch.Tensor:
    for op in ops:
        x = op(x)
    return x


def sample_ops(wrappers: list[Any], rng: np.random.Generator, shape: tuple[int, ...]) -> list[Any]:
    ops = (w.sample(rng, shape) for w in wrappers)
    return [op for op in ops if op is not None]


class TwoViews:
    """Two independently augmented views of one patch: ``(v1, v2, [ops1, ops2] records)``.

    ``caption_consistent``: view 1 from :func:`text_view_pipeline`, view 2 from :func:`view_pipeline`;
    otherwise both from :func:`view_pipeline`. A patch of a modality outside ``cfg.mirror_modalities`` gets no
    mirror and no quarter turn in either view: an invariance loss between views would otherwise teach the
    encoder to ignore left / right, the one cue that tells liver from spleen and one kidney from the other.
    """

    def __init__(self, cfg: AugmentConfig, caption_consistent: bool = False):
        self.wrappers = view_pipeline(cfg)
        self.kept = [w for w in self.wrappers if not isinstance(w, (RandomFlip, RandomRot90))]
        self.mirror = set(cfg.mirror_modalities)
        self.caption_consistent = caption_consistent
        self.text_view = text_view_pipeline(cfg)

    def pipelines(self, modality: str | None = None) -> tuple[list[Any], list[Any]]:
        """The random wrappers of (view 1, view 2) for a patch of ``modality`` (None: mirrors allowed)."""
        second = self.wrappers if modality is None or modality in self.mirror else self.kept
        return (self.text_view if self.caption_consistent else second), second

    def __call__(
        self, patch: torch.Tensor, rng: np.random.Generator, modality: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list]:
        shape, (first, second) = tuple(patch.shape[1:]), self.pipelines(modality)
        ops1, ops2 = sample_ops(first, rng, shape), sample_ops(second, rng, shape)
        v1, v2 = apply_ops(patch, ops1), apply_ops(patch, ops2)
        return v1.contiguous(), v2.contiguous(), [[describe(o) for o in ops1], [describe(o) for o in ops2]]
