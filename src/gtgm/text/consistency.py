"""Does an augmented view still match its caption? Re-measure the facts a ``describe`` caption states.

A caption states, for its box: where the box lies (left / right, anterior / posterior, superior /
inferior words of :func:`~gtgm.data.measure.position`), the voxel scale (the box is shown at
the cache's spacing), and intensity shares at 5 % resolution (CT: Hounsfield bands; MRI: background,
hyperintense, hypointense shares). A view breaks a fact when

* ``location``: it mirrors an axis whose position word is not the middle one, or turns the axial plane
  while the left-right or anterior-posterior word is not the middle one (the content of the right side
  would then sit on the left, and a caption saying "right" teaches laterality invariance);
* ``scale``: it crops and resizes (the caption's sizes and the fine-tuning voxel size no longer hold);
* ``share:<name>``: a share moves by more than the caption's 5 % resolution.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from gtgm.data.augment import CropResize, Flip, Rot90, apply_ops
from gtgm.data.boxes import Patch
from gtgm.data.measure import ct_shares, mri_stats, position

RESOLUTION = 0.05  # the caption's rounding of shares (describe.pct)
MID_WORDS = ("midline", "mid", "mid-level")


def stated_shares(patch: Patch) -> dict[str, float]:
    """The shares a caption of ``patch`` states: CT Hounsfield bands, or MRI background / bright / dark."""
    if patch.modality == "CT":
        return ct_shares(patch)
    if patch.modality == "MRI":
        s = mri_stats(patch)
        return {k: s[k] for k in ("background", "bright", "dark")}
    return {}


def broken_facts(patch: Patch, ops: list[Any]) -> list[str]:
    """The facts of ``patch``'s caption that the view ``apply_ops(patch.image, ops)`` no longer shows."""
    words = position(patch)
    axis_words = [words["lr"], words["ap"], words["si"]]
    broken = set()
    for op in ops:
        if isinstance(op, Flip) and any(axis_words[a] not in MID_WORDS for a in op.axes):
            broken.add("location")
        if isinstance(op, Rot90) and (axis_words[0] not in MID_WORDS or axis_words[1] not in MID_WORDS):
            broken.add("location")
        if isinstance(op, CropResize):
            broken.add("scale")
    view = apply_ops(torch.from_numpy(np.ascontiguousarray(patch.image)), ops).numpy()
    before, after = stated_shares(patch), stated_shares(dataclasses.replace(patch, image=view))
    broken.update(f"share:{k}" for k in before if abs(after[k] - before[k]) > RESOLUTION)
    return sorted(broken)
