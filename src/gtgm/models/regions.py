"""Region-level pretraining model: one crop at the fine-tuning field of view, a feature per caption box in it.

The encoder sees a whole crop (e.g. the CT preset's 64 × 64 × 32, where the box-level model sees one 32³ box),
so its normalisation statistics and receptive fields are those of fine-tuning. Each caption box inside the crop
is pooled from the encoder's feature maps over the cells that cover it (:func:`pool_regions`, the same ``last`` /
``stages`` pooling as :func:`gtgm.models.encoders.pool_features`) and projected by one head:

* ``target="text"``: ``image_head`` into the shared space, and ``text_head`` for the caption bank (the frozen
  embeddings of every training caption, a buffer): the arm ``region_text`` (:class:`gtgm.train.losses.RegionLoss`).
* ``target="facts"``: ``facts_head`` regresses the box's measured facts (standardised), no text: its control.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gtgm.models.encoders import segmenter_state_dict
from gtgm.models.heads import ProjectionHead
from gtgm.models.vlp import build_encoder


def cell_masks(boxes: torch.Tensor, crop: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """(B, R, x, y, z) float masks of the feature cells covering each box.

    ``boxes`` (B, R, 6): ``lo`` (3) and ``hi`` (3, exclusive) in the crop's voxels (X, Y, Z) = ``crop``; a feature
    map of size ``grid`` covers voxel v with cell ``v · grid / crop``: a box covers cells
    ``[floor(lo · g / X), ceil(hi · g / X))``, at least one per axis."""
    masks = []
    for axis in range(3):
        scale = grid[axis] / crop[axis]
        lo = torch.floor(boxes[..., axis].float() * scale).clamp(0, grid[axis] - 1)
        hi = torch.maximum(torch.ceil(boxes[..., axis + 3].float() * scale), lo + 1)
        at = torch.arange(grid[axis], device=boxes.device, dtype=torch.float32)
        masks.append((at >= lo[..., None]) & (at < hi[..., None]))  # (B, R, g)
    mx, my, mz = masks
    return (mx[..., :, None, None] & my[..., None, :, None] & mz[..., None, None, :]).float()


def pool_regions(feats: list[torch.Tensor], boxes: torch.Tensor, crop: tuple[int, ...], pooling: str) -> torch.Tensor:
    """[(B, c_k, x_k, y_k, z_k)] and boxes (B, R, 6) -> (B, R, D) float32: the mean of each map over each box's
    cells; ``last`` uses the deepest map (D = c_K), ``stages`` concatenates every stage's (D = Σ c_k). Summed in
    float32 (a float16 sum over a large box's cells would overflow)."""
    if pooling not in ("last", "stages"):
        raise ValueError(f"unknown pooling {pooling!r} (known: last, stages)")
    used = feats[-1:] if pooling == "last" else feats
    out = []
    with torch.autocast(boxes.device.type, enabled=False):
        for f in used:
            mask = cell_masks(boxes, tuple(crop), tuple(f.shape[2:]))
            weights = mask / mask.sum(dim=(2, 3, 4), keepdim=True)
            out.append(torch.einsum("bcxyz,brxyz->brc", f.float(), weights))
    return torch.cat(out, dim=-1)


class RegionModel(nn.Module):
    """Encoder + region pooling + one head (see the module docstring).

    ``forward(image (B, C, X, Y, Z), boxes (B, R, 6) long, valid (B, R) bool, target)`` returns, for the M valid
    boxes: ``text``: ``region_features`` (M, E), ``bank_features`` (N, E) and ``target`` (M,) bank rows;
    ``facts``: ``predicted`` and ``facts`` (M, F)."""

    inputs = ("image", "boxes", "valid", "target")

    def __init__(self, encoder: nn.Module, target: str, dim: int, embed_dim: int, hidden_dim: int, bank=None):
        super().__init__()
        self.encoder, self.target = encoder, target
        if target == "text":
            self.image_head = ProjectionHead(encoder.out_dim, hidden_dim, embed_dim)
            self.text_head = ProjectionHead(dim, hidden_dim, embed_dim)
            self.register_buffer("bank", torch.as_tensor(bank, dtype=torch.float32), persistent=False)
        else:
            self.facts_head = nn.Sequential(
                nn.Linear(encoder.out_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim)
            )

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) -> (B, embed_dim): the whole input as one region (held-out retrieval of 32³ boxes)."""
        return self.image_head(self.encoder(x))

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        return segmenter_state_dict(self.encoder)

    def forward(
        self, image: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        pooled = pool_regions(self.encoder.features(image), boxes, tuple(image.shape[2:]), self.encoder.pooling)
        pooled = pooled[valid]  # (M, D)
        if self.target == "facts":
            return {"predicted": self.facts_head(pooled), "facts": target[valid]}
        return {
            "region_features": self.image_head(pooled),
            "bank_features": self.text_head(self.bank),
            "target": target[valid],
        }


def build_region_model(model: Any, target: str, dim: int, bank=None) -> RegionModel:
    """The region model for a model section; ``dim``: the text width (``text``) or the number of facts."""
    return RegionModel(build_encoder(model), target, dim, model.embed_dim, model.head_hidden, bank)
