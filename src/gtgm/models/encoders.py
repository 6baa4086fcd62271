"""3D image encoders. Each returns multi-scale feature maps (``features``) and a global feature per
patch (``forward``, shape (B, ``out_dim``)), pooled as ``model.pooling`` says (:func:`pool_features`):

* ``last``: the spatial mean of the deepest map, ``out_dim`` = its channels (the paper's choice);
* ``stages``: the spatial means of every stage, concatenated, ``out_dim`` = the sum of the stages' channels
  (multi-scale: the shallow stages still say which intensities and edges a patch holds).

Each encoder knows the prefix its weights carry inside the matching segmenter (``segmenter_prefix``),
so ``encoder.pt`` (:func:`segmenter_state_dict`) loads one-to-one into the fine-tuning network:

* ``resunet``: a residual 3D U-Net encoder of MONAI ``UnetResBlock`` stages (instance norm, strided
  convolutions); fast on CPU. Segmenter: gtgm's ``ResUNet``, weights under ``encoder.``.
* ``swinunetr``: the Swin-ViT encoder of MONAI ``SwinUNETR``, built by SwinUNETR itself so the module
  is identical; weights under ``swinViT.`` exactly as in ``monai.networks.nets.SwinUNETR``.
  Patch sides must be divisible by 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetResBlock
from torch import nn

from gtgm.models.registry import register_encoder


def instance_norm(affine: bool = True) -> tuple[str, dict[str, bool]]:
    """MONAI ``norm_name`` of the resunet blocks. ``affine``: a learnt scale and shift per channel (as nnU-Net
    and MONAI's DynUNet). Without them every channel is forced to zero mean and unit variance per patch, and
    in our CPU runs the CT phantoms' spleen and left kidney stayed at Dice 0 for 300 fine-tuning steps; with
    them they were learnt (``model.norm_affine``; False rebuilds models saved before it)."""
    return ("instance", {"affine": affine})


POOLINGS = ("last", "stages")


def pool_features(feats: list[torch.Tensor], pooling: str) -> torch.Tensor:
    """[(B, c_k, ...)] -> (B, D): ``last`` = mean over space of feats[-1] (D = c_K); ``stages`` = concatenation
    of every stage's mean over space (D = Σ c_k)."""
    if pooling == "last":
        return feats[-1].mean(dim=(2, 3, 4))
    if pooling == "stages":
        return torch.cat([f.mean(dim=(2, 3, 4)) for f in feats], dim=1)
    raise ValueError(f"unknown pooling {pooling!r} (known: {', '.join(POOLINGS)})")


def pooled_dim(stage_channels: Sequence[int], pooling: str) -> int:
    """``out_dim`` of :func:`pool_features` for stages with these channel counts."""
    return int(stage_channels[-1]) if pooling == "last" else int(sum(stage_channels))


class ResEncoder(nn.Module):
    """Stages of ``UnetResBlock`` (two 3×3×3 convs + residual); stage k halves the size for k ≥ 1.

    Input (B, C, X, Y, Z) -> features [(B, c_k, X/2^k, Y/2^k, Z/2^k) for k = 0..K-1].
    """

    segmenter_prefix = "encoder."

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        norm_affine: bool = True,
        pooling: str = "last",
    ):
        super().__init__()
        self.channels = list(channels)
        self.pooling = pooling
        self.stages = nn.ModuleList()
        prev = in_channels
        for k, ch in enumerate(self.channels):
            norm = instance_norm(norm_affine)
            self.stages.append(UnetResBlock(3, prev, ch, kernel_size=3, stride=1 if k == 0 else 2, norm_name=norm))
            prev = ch
        self.out_dim = pooled_dim(self.channels, pooling)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_features(self.features(x), self.pooling)


class SwinEncoder(nn.Module):
    """MONAI SwinUNETR's ``swinViT`` (stages of 1, 2, 4, 8, 16 × feature_size channels)."""

    segmenter_prefix = ""  # the module is called swinViT, as in SwinUNETR

    def __init__(
        self,
        in_channels: int = 1,
        feature_size: int = 48,
        use_checkpoint: bool = False,
        normalize: bool = True,
        pooling: str = "last",
    ):
        super().__init__()
        from monai.networks.nets import SwinUNETR

        self.swinViT = SwinUNETR(
            in_channels=in_channels, out_channels=1, feature_size=feature_size, use_checkpoint=use_checkpoint
        ).swinViT
        self.normalize = normalize
        self.pooling = pooling
        self.out_dim = pooled_dim([feature_size * 2**k for k in range(5)], pooling)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if any(s % 32 for s in x.shape[2:]):
            raise ValueError(f"swinunetr needs patch sides divisible by 32, got {tuple(x.shape[2:])}")
        return list(self.swinViT(x, self.normalize))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_features(self.features(x), self.pooling)


@register_encoder("resunet")
def resunet(
    in_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    norm_affine: bool = True,
    pooling: str = "last",
    **_: object,
) -> ResEncoder:
    return ResEncoder(in_channels, channels, norm_affine, pooling)


@register_encoder("swinunetr")
def swinunetr(
    in_channels: int = 1, feature_size: int = 48, use_checkpoint: bool = False, pooling: str = "last", **_: object
) -> SwinEncoder:
    return SwinEncoder(in_channels, feature_size, use_checkpoint, pooling=pooling)


def segmenter_state_dict(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights keyed as in its segmenter (plain tensors on CPU)."""
    prefix = getattr(encoder, "segmenter_prefix", "")
    return {prefix + k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
