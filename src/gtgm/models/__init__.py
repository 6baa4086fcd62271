"""Networks: encoders and segmenters from one registry, projection heads, the pretraining model."""

from gtgm.models.registry import create_encoder, list_encoders

__all__ = ["create_encoder", "list_encoders"]
