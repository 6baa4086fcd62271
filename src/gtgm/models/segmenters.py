"""Segmentation networks whose encoders are the pretraining encoders, under the same module names.

* ``resunet``: :class:`ResUNet` = ``encoder`` (:class:`~gtgm.models.encoders.ResEncoder`) + MONAI
  ``UnetUpBlock`` decoder with skip connections + ``UnetOutBlock``. Sides divisible by 2^(stages-1).
* ``swinunetr``: MONAI ``SwinUNETR`` itself (its ``swinViT`` is the pretraining encoder). Sides
  divisible by 32.

:func:`load_encoder_weights` loads a pretraining ``encoder.pt`` and reports what matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks import UnetOutBlock, UnetUpBlock
from torch import nn

from gtgm.errors import GtgmError
from gtgm.fsutil import read_json
from gtgm.models.encoders import ResEncoder, instance_norm
from gtgm.models.registry import register_segmenter
from gtgm.schemas import ENCODER_JSON


class ResUNet(nn.Module):
    """(B, C, X, Y, Z) -> logits (B, num_classes, X, Y, Z)."""

    encoder_prefix = "encoder."

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        norm_affine: bool = True,
    ):
        super().__init__()
        self.encoder = ResEncoder(in_channels, channels, norm_affine)
        ch, norm = list(channels), instance_norm(norm_affine)
        self.decoder = nn.ModuleList(
            UnetUpBlock(3, ch[k + 1], ch[k], kernel_size=3, stride=1, upsample_kernel_size=2, norm_name=norm)
            for k in range(len(ch) - 1)
        )
        self.head = UnetOutBlock(3, ch[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.features(x)
        y = feats[-1]
        for k in range(len(feats) - 2, -1, -1):
            y = self.decoder[k](y, feats[k])
        return self.head(y)


@register_segmenter("resunet")
def resunet(
    num_classes: int,
    in_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    norm_affine: bool = True,
    **_: Any,
) -> ResUNet:
    return ResUNet(in_channels, num_classes, channels, norm_affine)


@register_segmenter("swinunetr")
def swinunetr(
    num_classes: int, in_channels: int = 1, feature_size: int = 48, use_checkpoint: bool = False, **_: Any
) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    net = SwinUNETR(
        in_channels=in_channels, out_channels=num_classes, feature_size=feature_size, use_checkpoint=use_checkpoint
    )
    net.encoder_prefix = "swinViT."
    return net


def load_encoder_weights(segmenter: nn.Module, path: str | Path, architecture: str) -> dict[str, int]:
    """Load pretraining weights into ``segmenter``; returns counts of matched / missing / unexpected.

    Refuses (GtgmError) a checkpoint made for another architecture (``encoder.json`` beside it names a
    different encoder), one with tensors whose shapes differ (another width or depth), and one of which
    no tensor matches. Missing = encoder tensors of the segmenter that the file lacks; unexpected =
    file tensors the segmenter does not have.
    """
    from gtgm.models.checkpoint import load_state_dict

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if meta_path.is_file():
        made_for = read_json(meta_path, schema=ENCODER_JSON).get("encoder")
        if made_for and made_for != architecture:
            raise GtgmError(f"{path}: pretrained for encoder '{made_for}', but the segmenter is '{architecture}'")
    weights = load_state_dict(path)
    own = segmenter.state_dict()
    if hasattr(segmenter, "input_windows"):
        weights = widen_stem(weights, own)
    shape_mismatch = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]
    if shape_mismatch:
        k = shape_mismatch[0]
        raise GtgmError(
            f"{path}: {len(shape_mismatch)} tensors have other shapes than the segmenter's "
            f"(e.g. {k}: {tuple(weights[k].shape)} vs {tuple(own[k].shape)}); another architecture?"
        )
    matched = {k: v for k, v in weights.items() if k in own}
    if not matched:
        raise GtgmError(f"{path}: none of its {len(weights)} tensors match the '{architecture}' segmenter")
    prefix = getattr(segmenter, "encoder_prefix", "")
    missing = [k for k in own if k.startswith(prefix) and k not in matched]
    segmenter.load_state_dict(matched, strict=False)
    return {"matched": len(matched), "missing": len(missing), "unexpected": len(weights) - len(matched)}


def widen_stem(weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A one-channel encoder's first convolutions widened for a segmenter fed several CT windows
    (:mod:`gtgm.models.windows`): a kernel (O, 1, ...) where the segmenter has (O, n, ...) keeps its weights on input
    channel 0 (the first window, the cache's own when the preset lists it first) and gets zeros on the others, so
    the loaded encoder computes at the start what it computed in pretraining; the other windows are learnt."""
    out = dict(weights)
    for k, v in weights.items():
        target = own.get(k)
        if (
            target is not None
            and v.ndim == 5
            and v.shape[1] == 1
            and target.shape[1] > 1
            and target.shape[0] == v.shape[0]
        ):
            wide = torch.zeros(target.shape, dtype=v.dtype)
            wide[:, :1] = v
            out[k] = wide
    return out
