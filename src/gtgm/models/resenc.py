"""``resenc``: nnU-Net's residual encoder U-Net, built by ``dynamic_network_architectures`` itself.

nnU-Net v2's ResEnc presets (``nnUNetPlannerResEncM/L/XL``) train
``dynamic_network_architectures.architectures.unet.ResidualEncoderUNet``. gtgm builds that very class from the
arguments an nnU-Net plans file holds (``arch_kwargs``: ``n_stages``, ``features_per_stage``, ``kernel_sizes``,
``strides``, ``n_blocks_per_stage``, ``n_conv_per_stage_decoder``, norm / nonlinearity, class names as strings)
and initialises it as nnU-Net does (``network.apply(network.initialize)``). The pretraining encoder is the
network's ``encoder`` module (stem + stages), so its weights carry the keys nnU-Net's network has
(``encoder.stem.*``, ``encoder.stages.*``) and ``gtgm export nnunet`` can place them unchanged.

Needs the optional dependency ``dynamic-network-architectures`` (``pip install 'gtgm[nnunet]'``).
"""

from __future__ import annotations

import math
import pydoc
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gtgm.errors import ConfigError, GtgmError
from gtgm.models.encoders import pool_features, pooled_dim
from gtgm.models.registry import register_encoder, register_segmenter

ARCH_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
NNUNET_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6)  # nnU-Net's ResEnc planners: residual blocks per stage


def resenc_arch_kwargs(
    channels: Sequence[int],
    kernel_sizes: Sequence[Sequence[int]] = (),
    strides: Sequence[Sequence[int]] = (),
    blocks_per_stage: Sequence[int] = (),
    decoder_convs: Sequence[int] = (),
) -> dict[str, Any]:
    """nnU-Net's ``arch_kwargs`` of a 3D ResidualEncoderUNet with ``channels`` (= ``features_per_stage``).

    Empty lists take nnU-Net's defaults: 3×3×3 kernels, stride 1 then 2 per stage, ResEnc planner blocks
    (1, 3, 4, 6, 6, ...) and one decoder convolution per stage; instance norm (eps 1e-5, affine), leaky ReLU,
    conv bias, as the ResEnc planners write them.
    """
    n = len(channels)
    kwargs = {
        "n_stages": n,
        "features_per_stage": [int(c) for c in channels],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [list(map(int, k)) for k in kernel_sizes] or [[3, 3, 3]] * n,
        "strides": [list(map(int, s)) for s in strides] or [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_blocks_per_stage": [int(b) for b in blocks_per_stage] or list(NNUNET_BLOCKS[:n]),
        "n_conv_per_stage_decoder": [int(c) for c in decoder_convs] or [1] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    wanted = {"kernel_sizes": n, "strides": n, "n_blocks_per_stage": n, "n_conv_per_stage_decoder": n - 1}
    for key, want in wanted.items():
        if len(kwargs[key]) != want:
            raise ConfigError(f"resenc: {key} needs {want} entries for {n} stages, got {kwargs[key]}")
    for key in ("kernel_sizes", "strides"):
        if any(len(v) != 3 or min(v) < 1 for v in kwargs[key]):
            raise ConfigError(f"resenc: each of {key} must be 3 positive integers (x, y, z), got {kwargs[key]}")
    return kwargs


def model_arch_kwargs(model: Any) -> dict[str, Any]:
    """``resenc_arch_kwargs`` of a ``ModelConfig``."""
    return resenc_arch_kwargs(
        model.channels, model.kernel_sizes, model.strides, model.blocks_per_stage, model.decoder_convs
    )


def stride_products(arch_kwargs: dict[str, Any]) -> list[int]:
    """Total downsampling per axis (x, y, z): the product of every stage's stride."""
    return [math.prod(s[a] for s in arch_kwargs["strides"]) for a in range(3)]


def build_resenc_unet(
    arch_kwargs: dict[str, Any], in_channels: int, num_classes: int, deep_supervision: bool = False
) -> nn.Module:
    """``ResidualEncoderUNet(input_channels, num_classes, **arch_kwargs)`` initialised as nnU-Net does."""
    try:
        from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    except ImportError:
        raise GtgmError(
            "the 'resenc' encoder needs dynamic-network-architectures: pip install 'gtgm[nnunet]'"
        ) from None
    kwargs = dict(arch_kwargs)
    for key in REQUIRES_IMPORT:
        if kwargs.get(key) is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    net = ResidualEncoderUNet(
        input_channels=in_channels, num_classes=num_classes, deep_supervision=deep_supervision, **kwargs
    )
    net.apply(net.initialize)
    return net


class ResEncEncoder(nn.Module):
    """The ``encoder`` (stem + residual stages) of nnU-Net's ResidualEncoderUNet.

    Input (B, C, X, Y, Z) -> features [(B, features_per_stage[k], X / Π strides[:k+1], ...) for each stage].
    Weights under ``encoder.`` exactly as in the U-Net, so ``segmenter_prefix`` is empty.
    """

    segmenter_prefix = ""

    def __init__(self, in_channels: int, arch_kwargs: dict[str, Any], pooling: str = "last"):
        super().__init__()
        self.arch_kwargs = arch_kwargs
        self.pooling = pooling
        self.encoder = build_resenc_unet(arch_kwargs, in_channels, 1).encoder
        self.out_dim = pooled_dim(arch_kwargs["features_per_stage"], pooling)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_features(self.features(x), self.pooling)


def _arch(
    channels: Sequence[int] = (32, 64, 128, 256, 320, 320),
    kernel_sizes: Sequence[Sequence[int]] = (),
    strides: Sequence[Sequence[int]] = (),
    blocks_per_stage: Sequence[int] = (),
    decoder_convs: Sequence[int] = (),
    **_: object,
) -> dict[str, Any]:
    """The registry's keyword arguments -> :func:`resenc_arch_kwargs` (other models' keys are ignored)."""
    return resenc_arch_kwargs(channels, kernel_sizes, strides, blocks_per_stage, decoder_convs)


@register_encoder("resenc")
def resenc_encoder(in_channels: int = 1, pooling: str = "last", **kwargs: Any) -> ResEncEncoder:
    return ResEncEncoder(in_channels, _arch(**kwargs), pooling)


@register_segmenter("resenc")
def resenc_segmenter(num_classes: int, in_channels: int = 1, **kwargs: Any) -> nn.Module:
    """nnU-Net's ResidualEncoderUNet without deep supervision: (B, C, X, Y, Z) -> (B, num_classes, X, Y, Z)."""
    net = build_resenc_unet(_arch(**kwargs), in_channels, num_classes)
    net.encoder_prefix = "encoder."
    return net
