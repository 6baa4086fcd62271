"""Inference: sliding-window prediction, input preparation and restoration, ``gtgm predict``, ``gtgm evaluate``
and ``gtgm query``."""
