"""Inference inside the body (CT): crop to the body's box, predict there, background everywhere else.

A model fine-tuned with ``finetune.body_crop`` records it in ``best.pt`` (``body_crop: {"margin_mm": m}``); its
validation and test scores (the cached body masks), ``gtgm predict`` and the MONAI bundle (masks from the input's HU,
:func:`gtgm.infer.prepare.prepare_input`) all crop with :func:`body_box` and paste back with :func:`paste_in_body`,
so no voxel outside the body (:mod:`gtgm.data.body`) is ever labelled — the air around the patient is never "lung".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gtgm.data.body import body_mask, margin_voxels, mask_box
from gtgm.infer.sliding import predict_array


def body_box(body: np.ndarray, margin_mm: float, spacing: list[float]) -> tuple[slice, ...]:
    """The (X, Y, Z) slices of the body's box grown by ``margin_mm``."""
    lo, hi = mask_box(body, margin_voxels(margin_mm, spacing))
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def paste_in_body(inside: np.ndarray, box: tuple[slice, ...], body: np.ndarray, output: str) -> np.ndarray:
    """A prediction on the box (labels (x, y, z), or probabilities (K, x, y, z)) on the whole grid of ``body``:
    outside the body the labels are 0 and the probabilities those of background (1 for class 0, 0 for others)."""
    if output == "labels":
        out = np.zeros(body.shape, dtype=inside.dtype)
        out[box] = inside
        out[~body] = 0
        return out
    out = np.zeros((inside.shape[0], *body.shape), dtype=inside.dtype)
    out[(slice(None), *box)] = inside
    out[:, ~body] = 0.0
    out[0][~body] = 1.0
    return out


def outside_body(prediction: str | Path, image: str | Path, threshold: float = -500.0) -> tuple[int, int]:
    """(voxels, of all labelled voxels) of the label map ``prediction`` that lie outside the body of the CT ``image``
    (the same grid; :func:`gtgm.data.body.body_mask` of its HU)."""
    import nibabel as nib

    pred = np.asarray(nib.as_closest_canonical(nib.load(str(prediction))).dataobj) > 0
    hu = np.asarray(nib.as_closest_canonical(nib.load(str(image))).dataobj, dtype=np.float32)
    return int((pred & ~body_mask(hu, threshold)).sum()), int(pred.sum())


def predict_in_body(
    model: Any,
    image: np.ndarray,
    body: np.ndarray,
    margin_mm: float,
    spacing: list[float],
    patch: list[int],
    output: str = "labels",
    **sliding: Any,
) -> np.ndarray:
    """:func:`~gtgm.infer.sliding.predict_array` of ``image`` (C, X, Y, Z) on the body's box only, pasted back."""
    box = body_box(body, margin_mm, spacing)
    inside = predict_array(model, np.asarray(image[(slice(None), *box)]), patch, output=output, **sliding)
    return paste_in_body(inside, box, body, output)
