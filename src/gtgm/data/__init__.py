"""Volumes on disk: readers and writers, dataset layouts, preprocessing cache, patches, example data."""

from gtgm.data.io import Volume, read_label, read_volume, write_cremi, write_nifti, write_volume

__all__ = ["Volume", "read_volume", "read_label", "write_nifti", "write_cremi", "write_volume"]
