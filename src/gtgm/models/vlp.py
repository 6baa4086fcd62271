"""The pretraining model: a 3D encoder plus image and text projection heads.

``forward(view1, view2, text)`` returns a dict whose keys are the loss's arguments (open_clip style):
``image_features_1``, ``image_features_2`` (B, embed_dim) and ``text_features`` (B, embed_dim). Text
arrives as frozen embeddings from the text cache (B, text_dim); the text encoder never runs here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gtgm.models.encoders import segmenter_state_dict
from gtgm.models.heads import ProjectionHead
from gtgm.models.registry import architecture_kwargs, create_encoder
from gtgm.models.windows import refuse_in_pretraining


class VLPModel(nn.Module):
    def __init__(self, encoder: nn.Module, text_dim: int, embed_dim: int = 512, hidden_dim: int = 1024):
        super().__init__()
        self.encoder = encoder
        self.image_head = ProjectionHead(encoder.out_dim, hidden_dim, embed_dim)
        self.text_head = ProjectionHead(text_dim, hidden_dim, embed_dim)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) -> (B, embed_dim)."""
        return self.image_head(self.encoder(x))

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        """The encoder's tensors keyed as in its segmenter (``encoder.pt``)."""
        return segmenter_state_dict(self.encoder)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        b = view1.shape[0]
        images = self.encode_image(torch.cat([view1, view2]))  # one pass: both views share BN statistics
        return {"image_features_1": images[:b], "image_features_2": images[b:], "text_features": self.text_head(text)}


def build_encoder(model: Any) -> nn.Module:
    """The 3D encoder a model section (:class:`gtgm.config.ModelConfig`) describes: registry name, channels /
    feature size, norm, pooling."""
    refuse_in_pretraining(model)
    return create_encoder(model.encoder, pooling=model.pooling, **architecture_kwargs(model))


def build_model(model: Any, text_dim: int) -> VLPModel:
    """Encoder + image and text heads for a model section (``embed_dim``, ``head_hidden``) and text width."""
    return VLPModel(build_encoder(model), text_dim, model.embed_dim, model.head_hidden)
