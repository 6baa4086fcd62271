"""The pretraining model: a 3D encoder plus image and text projection heads.

``forward(view1, view2, text)`` returns a dict whose keys are the loss's arguments (open_clip style):
``image_features_1``, ``image_features_2`` (B, embed_dim) and ``text_features`` (B, embed_dim). Text
arrives as frozen embeddings from the text cache (B, text_dim); the text encoder never runs here.
"""

from __future__ import annotations

import torch
from torch import nn

from gtgm.models.heads import ProjectionHead


class VLPModel(nn.Module):
    def __init__(self, encoder: nn.Module, text_dim: int, embed_dim: int = 512, hidden_dim: int = 1024):
        super().__init__()
        self.encoder = encoder
        self.image_head = ProjectionHead(encoder.out_dim, hidden_dim, embed_dim)
        self.text_head = ProjectionHead(text_dim, hidden_dim, embed_dim)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) -> (B, embed_dim)."""
        return self.image_head(self.encoder(x))

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        b = view1.shape[0]
        images = self.encode_image(torch.cat([view1, view2]))  # one pass: both views share BN statistics
        return {"image_features_1": images[:b], "image_features_2": images[b:], "text_features": self.text_head(text)}
