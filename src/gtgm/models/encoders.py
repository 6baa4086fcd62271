"""3D image encoders. Each returns multi-scale feature maps (``features``) and a global feature per
patch (``forward``: the spatially averaged deepest map, shape (B, ``out_dim``)).

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


class ResEncoder(nn.Module):
    """Stages of ``UnetResBlock`` (two 3×3×3 convs + residual); stage k halves the size for k ≥ 1.

    Input (B, C, X, Y, Z) -> features [(B, c_k, X/2^k, Y/2^k, Z/2^k) for k = 0..K-1].
    """

    segmenter_prefix = "encoder."

    def __init__(
        self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128, 256), norm_affine: bool = True
    ):
        super().__init__()
        self.channels = list(channels)
        self.stages = nn.ModuleList()
        prev = in_channels
        for k, ch in enumerate(self.channels):
            norm = instance_norm(norm_affine)
            self.stages.append(UnetResBlock(3, prev, ch, kernel_size=3, stride=1 if k == 0 else 2, norm_name=norm))
            prev = ch
        self.out_dim = self.channels[-1]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1].mean(dim=(2, 3, 4))


class SwinEncoder(nn.Module):
    """MONAI SwinUNETR's ``swinViT``; global feature = mean of the deepest stage (16·feature_size)."""

    segmenter_prefix = ""  # the module is called swinViT, as in SwinUNETR

    def __init__(
        self, in_channels: int = 1, feature_size: int = 48, use_checkpoint: bool = False, normalize: bool = True
    ):
        super().__init__()
        from monai.networks.nets import SwinUNETR

        self.swinViT = SwinUNETR(
            in_channels=in_channels, out_channels=1, feature_size=feature_size, use_checkpoint=use_checkpoint
        ).swinViT
        self.normalize = normalize
        self.out_dim = 16 * feature_size

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if any(s % 32 for s in x.shape[2:]):
            raise ValueError(f"swinunetr needs patch sides divisible by 32, got {tuple(x.shape[2:])}")
        return list(self.swinViT(x, self.normalize))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1].mean(dim=(2, 3, 4))


@register_encoder("resunet")
def resunet(
    in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128, 256), norm_affine: bool = True, **_: object
) -> ResEncoder:
    return ResEncoder(in_channels, channels, norm_affine)


@register_encoder("swinunetr")
def swinunetr(in_channels: int = 1, feature_size: int = 48, use_checkpoint: bool = False, **_: object) -> SwinEncoder:
    return SwinEncoder(in_channels, feature_size, use_checkpoint)


def segmenter_state_dict(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights keyed as in its segmenter (plain tensors on CPU)."""
    prefix = getattr(encoder, "segmenter_prefix", "")
    return {prefix + k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
