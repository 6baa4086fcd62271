"""Masked image modelling (MAE-style, for CNNs): the image-only control of the pretraining study.

The whole segmenter (encoder + decoder, one output channel) sees a view with ``mask_ratio`` of its
``block``³-voxel blocks set to 0 (the normalised mean) and reconstructs the view; the loss is the mean squared
error on the masked voxels only (:class:`gtgm.train.losses.MaskedReconstructionLoss`). Dense convolutions see
the mask's edges, unlike SparK's sparse ones: this is the in-painting form (Models Genesis) of the idea. Only the
encoder's tensors are kept (:meth:`MIMModel.encoder_weights`), keyed as in the segmenter, like every
``encoder.pt``. ``inputs`` names the one batch entry it reads: ``view2`` of a caption box's two views
(objective ``mim``) or ``image``, a crop at the fine-tuning field of view (``mim_dense``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gtgm.models.registry import architecture_kwargs, create_segmenter
from gtgm.models.windows import refuse_in_pretraining


def block_mask(
    shape: tuple[int, ...], ratio: float, block: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A (B, 1, X, Y, Z) float mask, 1 = hidden: each sample hides ``round(ratio · n)`` of its n blocks of
    ``block``³ voxels (a partial block at the far edge belongs to the block it starts in)."""
    b, _, *size = shape
    grid = [-(-s // block) for s in size]
    n = grid[0] * grid[1] * grid[2]
    scores = torch.rand(b, n, generator=generator)
    hidden = scores.argsort(dim=1)[:, : round(ratio * n)]
    mask = torch.zeros(b, n).scatter_(1, hidden, 1.0).view(b, 1, *grid)
    for axis in range(3):
        mask = mask.repeat_interleave(block, dim=axis + 2)
    return mask[:, :, : size[0], : size[1], : size[2]]


class MIMModel(nn.Module):
    def __init__(self, segmenter: nn.Module, mask_ratio: float = 0.6, block: int = 4, image: str = "view2"):
        super().__init__()
        self.segmenter, self.mask_ratio, self.block = segmenter, mask_ratio, block
        self.inputs = (image,)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, X, Y, Z) -> ``reconstruction`` (B, C, X, Y, Z), ``target`` (the unmasked image), ``mask``
        (B, 1, X, Y, Z)."""
        mask = block_mask(tuple(image.shape), self.mask_ratio, self.block).to(image.device, image.dtype)
        return {"reconstruction": self.segmenter(image * (1 - mask)), "target": image, "mask": mask}

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        """The encoder's tensors (names under the segmenter's ``encoder_prefix``), on CPU."""
        prefix = self.segmenter.encoder_prefix
        return {k: v.detach().cpu().clone() for k, v in self.segmenter.state_dict().items() if k.startswith(prefix)}


def build_mim_model(model: Any, mask_ratio: float, block: int, image: str = "view2") -> MIMModel:
    """The segmenter of a model section with ``in_channels`` outputs, wrapped for masked reconstruction of the batch
    entry ``image``."""
    refuse_in_pretraining(model)
    seg = create_segmenter(model.encoder, model.in_channels, **architecture_kwargs(model))
    return MIMModel(seg, mask_ratio, block, image)
