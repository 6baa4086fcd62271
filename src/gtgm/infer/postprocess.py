"""Post-processing as nnU-Net does it: per class, keep only the largest connected component, where that raises
the mean validation Dice of the class.

A segmenter trained on few cases leaves stray islands of a class far from the organ (a second "spleen" in the
liver's intensity band, a fleck of "kidney" in a vertebra). They cost little Dice but dominate the Hausdorff
distance. Removing every component but the largest (26-connectivity, MONAI's
``KeepLargestConnectedComponent``; the removed voxels become background) fixes that for single-component
organs, and would break classes that are several components (both lungs under one label, bone). The rule, per
class:

* named in ``finetune.single_component``: always kept as its largest component;
* one component in every training label map (:func:`one_piece_classes`): kept by default, unless validation
  shows a clear loss (mean Dice down by more than :data:`CLEAR_LOSS`): one validation case cannot drop it on a tie;
* any other class that is one component in every validation reference: kept only where that raises its mean
  validation Dice (nnU-Net's rule);

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


CLEAR_LOSS = 0.02  # mean validation Dice a default-kept class must lose before validation drops its post-processing


def one_piece_classes(blocks: list[tuple[np.ndarray, list[int]]], classes: list[int]) -> list[int]:
    """The ``classes`` that are one 26-connected component in every block that holds them, and are held by one at
    least. ``blocks``: (label array, the classes it annotates) per contiguously labelled block of the training
    data (a whole volume, or a run of labelled slices)."""
    counts: dict[int, list[int]] = {c: [] for c in classes}
    for label, annotated in blocks:
        for c in classes:
            if c in annotated and (label == c).any():
                counts[c].append(_components(label == c))
    return [c for c in classes if counts[c] and all(n == 1 for n in counts[c])]


def choose_keep_largest(
    preds: list[np.ndarray], refs: list[np.ndarray], classes: list[int], default: list[int] = ()
) -> list[int]:
    """The classes whose mean Dice over the cases (``preds[i]`` against ``refs[i]``) rises when only their
    largest component is kept (nnU-Net's rule, ``determine_postprocessing``: applied only where it improves),
    among the classes that are one component in every reference.

    The second condition is gtgm's: nnU-Net decides on the cross-validation predictions of every training case,
    gtgm on one or two validation cases, where a class of several components (both lungs under one label) can be
    predicted as one joined component with a few islands — keeping its largest then wins on validation and
    deletes a lung on every test case (measured on the demo). A tie is not enough either.

    The classes of ``default`` (one piece in every training label map) are kept unless their mean Dice falls by
    more than :data:`CLEAR_LOSS` (with no validation case, they are kept)."""
    default = [c for c in default if c in classes]
    if not preds:
        return sorted(default)
    single = [c for c in classes if c in default or all(_components(r == c) <= 1 for r in refs)]
    raw = [dice_per_class(p, r, single) for p, r in zip(preds, refs)]
    kept = [dice_per_class(keep_largest(p, single), r, single) for p, r in zip(preds, refs)]
    gain = {c: float(np.mean([k[c] for k in kept]) - np.mean([d[c] for d in raw])) for c in single}
    return [c for c in single if (gain[c] >= -CLEAR_LOSS if c in default else gain[c] > 0)]


def _components(mask: np.ndarray) -> int:
    """Number of 26-connected components of ``mask``."""
    from scipy import ndimage

    return int(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])


def postprocess_label(label: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """``label`` post-processed as ``meta`` (a ``best.pt`` or a bundle's ``gtgm`` entry) says; unchanged when
    it records no post-processing (checkpoints written before it existed, or ``finetune.postprocess`` off)."""
    classes = list((meta.get("postprocess") or {}).get("keep_largest") or [])
    return keep_largest(label, [int(c) for c in classes]) if classes else label
