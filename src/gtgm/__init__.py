"""gtgm: generative text-guided 3D vision-language pretraining for medical image segmentation."""

__version__ = "0.1.0"
