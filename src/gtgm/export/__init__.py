"""Exports to other tools: nnU-Net v2 raw datasets and pretrained weights, MONAI bundles."""
