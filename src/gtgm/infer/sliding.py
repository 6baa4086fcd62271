"""Sliding-window prediction of a whole (C, X, Y, Z) array with a segmenter (MONAI's ``sliding_window_inference``,
Gaussian blending). Fine-tuning's validation, ``gtgm predict``, the MONAI bundle and the demo all use it."""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference

SW_OVERLAP, SW_BATCH = 0.25, 4  # sliding-window overlap and windows per forward pass of gtgm predict


def pad_to_patch(image: np.ndarray, patch: list[int]) -> np.ndarray:
    """(C, X, Y, Z) -> float32, padded at the far end to at least ``patch`` with each channel's minimum."""
    pad = [(0, max(p - n, 0)) for p, n in zip(patch, image.shape[1:])]
    lows = np.asarray(image).reshape(image.shape[0], -1).min(1)
    return np.stack([np.pad(np.asarray(c, np.float32), pad, constant_values=lo) for c, lo in zip(image, lows)])


@torch.no_grad()
def predict_array(
    model: torch.nn.Module,
    image: np.ndarray,
    patch: list[int],
    overlap: float = SW_OVERLAP,
    sw_batch: int = SW_BATCH,
    device: torch.device | str = "cpu",
    output: str = "labels",
) -> np.ndarray:
    """Sliding-window prediction (Gaussian blending) of a (C, X, Y, Z) array.

    ``output``: ``labels`` -> argmax label map (X, Y, Z) uint8; ``probabilities`` -> softmax (K, X, Y, Z)
    float32; ``affinities`` -> sigmoid (K, X, Y, Z) float32. An array smaller than the patch is padded with
    each channel's minimum, as training patches are (the cache's pad value), not with 0 (mid-grey after an
    MRI z-score).
    """
    if output not in ("labels", "probabilities", "affinities"):
        raise ValueError(f"unknown output '{output}'")
    model.eval()
    shape = image.shape[1:]
    x = torch.from_numpy(pad_to_patch(image, patch))[None].to(device)
    out = sliding_window_inference(x, patch, sw_batch, model, overlap=overlap, mode="gaussian")
    out = out[(0, slice(None), *(slice(0, n) for n in shape))]
    if output == "affinities":
        return out.sigmoid().cpu().numpy()
    if output == "probabilities":
        return out.float().softmax(0).cpu().numpy()
    return out.argmax(0).cpu().numpy().astype(np.uint8)
