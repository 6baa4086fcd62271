"""Electron-microscopy neuron segmentation: affinity targets (:mod:`.affinities`) and their
agglomeration into neurons (:mod:`.agglomerate`). Metrics live in :mod:`gtgm.metrics`."""
