"""Networks: encoders and segmenters from one registry, projection heads, the pretraining model, checkpoint I/O.

Importing this package registers every builder (the registry itself imports no model).
"""

from gtgm.models import encoders, resenc, segmenters, windows  # noqa: F401  (each registers its builders)
from gtgm.models.registry import create_encoder, create_segmenter, list_encoders, list_segmenters

__all__ = ["create_encoder", "create_segmenter", "list_encoders", "list_segmenters"]
