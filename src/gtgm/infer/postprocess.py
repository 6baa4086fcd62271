"""Post-processing as nnU-Net does it: per class, keep only the largest connected component, where that raises
the mean validation Dice of the class.

A segmenter trained on few cases leaves stray islands of a class far from the organ (a second "spleen" in the
liver's intensity band, a fleck of "kidney" in a vertebra). They cost little Dice but dominate the Hausdorff
distance. Removing every component but the largest (26-connectivity, MONAI's
``KeepLargestConnectedComponent``; the removed voxels become background) fixes that for single-component
organs, and would break classes that are several components (both lungs under one label, bone): so the rule
is decided per class on the validation cases, for the classes that are one component in their references,
stored in ``best.pt`` (``postprocess: {keep_largest: [...]}``) and applied by ``gtgm predict``, the MONAI
bundle and the study's test scores.

Removing components of class ``c`` changes only the voxels of ``c`` (to background), so the Dice of every
other foreground class is unchanged and the choice is made for each class independently.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gtgm.metrics import dice_per_class


def keep_largest(label: np.ndarray, classes: list[int]) -> np.ndarray:
    """``label`` (X, Y, Z) ints with every class in ``classes`` reduced to its largest 26-connected component;
    the voxels removed become 0 (background). Other classes are left as they are. Returns a new array."""
    if not classes:
        return label
    from monai.transforms import KeepLargestConnectedComponent

    keep = KeepLargestConnectedComponent(
        applied_labels=list(classes), is_onehot=False, independent=True, connectivity=3
    )
    out = keep(torch.tensor(np.asarray(label)[None]))  # a copy: the transform works in place
    return np.asarray(out[0].cpu().numpy() if isinstance(out, torch.Tensor) else out[0]).astype(label.dtype)


def choose_keep_largest(preds: list[np.ndarray], refs: list[np.ndarray], classes: list[int]) -> list[int]:
    """The classes whose mean Dice over the cases (``preds[i]`` against ``refs[i]``) rises when only their
    largest component is kept (nnU-Net's rule, ``determine_postprocessing``: applied only where it improves),
    among the classes that are one component in every reference.

    The second condition is gtgm's: nnU-Net decides on the cross-validation predictions of every training case,
    gtgm on one or two validation cases, where a class of several components (both lungs under one label) can be
    predicted as one joined component with a few islands — keeping its largest then wins on validation and
    deletes a lung on every test case (measured on the demo). A tie is not enough either."""
    if not preds:
        return []
    single = [c for c in classes if all(_components(r == c) <= 1 for r in refs)]
    raw = [dice_per_class(p, r, single) for p, r in zip(preds, refs)]
    kept = [dice_per_class(keep_largest(p, single), r, single) for p, r in zip(preds, refs)]
    return [c for c in single if np.mean([k[c] for k in kept]) > np.mean([d[c] for d in raw])]


def _components(mask: np.ndarray) -> int:
    """Number of 26-connected components of ``mask``."""
    from scipy import ndimage

    return int(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])


def postprocess_label(label: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """``label`` post-processed as ``meta`` (a ``best.pt`` or a bundle's ``gtgm`` entry) says; unchanged when
    it records no post-processing (checkpoints written before it existed, or ``finetune.postprocess`` off)."""
    classes = list((meta.get("postprocess") or {}).get("keep_largest") or [])
    return keep_largest(label, [int(c) for c in classes]) if classes else label
