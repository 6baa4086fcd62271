"""What a run did to its weights and features: numbers the study reports beside the Dice.

* :func:`encoder_drift` — how far fine-tuning moved each encoder kernel from where it started (cosine), and
  what the normalisation layers' scale / shift became: a pretrained encoder whose kernels end at cosine ≈ 0 to
  their start was erased by fine-tuning, whatever it had learnt.
* :func:`feature_stats` — the spread and effective rank of a batch of embeddings during pretraining: a collapsed
  representation (every patch mapped to one point) shows as spread → 0 and rank → 1 long before any probe.
* :func:`confusion_counts` — a label map against its reference, class by class (left/right swaps show here).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

NORMS = (nn.modules.instancenorm._InstanceNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def encoder_weights(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Copies (CPU, float) of ``model``'s parameters whose names start with ``prefix`` (its encoder)."""
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if n.startswith(prefix)}


def encoder_drift(start: dict[str, torch.Tensor], model: nn.Module, prefix: str) -> dict[str, object]:
    """Per encoder kernel (parameters with ≥ 2 dims), the cosine ``<w0, w> / (|w0| |w|)`` between its start
    ``start[name]`` and its value in ``model``, plus their mean and minimum; and, over the encoder's
    normalisation layers with an affine part, the mean and std of the scales (weights) and shifts (biases).
    Returns ``{"cosine": {name: c}, "cosine_mean", "cosine_min", "norm_scale_mean", "norm_scale_std",
    "norm_shift_mean", "norm_shift_std"}`` (norm entries NaN when the encoder has no affine norm)."""
    now = encoder_weights(model, prefix)
    cosine = {
        n: float(nn.functional.cosine_similarity(start[n].ravel(), w.ravel(), dim=0))
        for n, w in now.items()
        if w.dim() >= 2 and n in start
    }
    scales, shifts = [], []
    for name, module in model.named_modules():
        if name.startswith(prefix.rstrip(".")) and isinstance(module, NORMS):
            if getattr(module, "weight", None) is not None:
                scales.append(module.weight.detach().float().cpu().ravel())
            if getattr(module, "bias", None) is not None:
                shifts.append(module.bias.detach().float().cpu().ravel())
    values = list(cosine.values())
    out: dict[str, object] = {
        "cosine": cosine,
        "cosine_mean": float(np.mean(values)) if values else float("nan"),
        "cosine_min": float(np.min(values)) if values else float("nan"),
    }
    for key, parts in (("norm_scale", scales), ("norm_shift", shifts)):
        v = torch.cat(parts) if parts else torch.tensor([float("nan")])
        out[f"{key}_mean"], out[f"{key}_std"] = float(v.mean()), float(v.std()) if v.numel() > 1 else 0.0
    return out


@torch.no_grad()
def feature_stats(z: torch.Tensor) -> dict[str, float]:
    """Spread and effective rank of embeddings ``z`` (B, D), B ≥ 2.

    ``feature_std``: the per-dimension std over the batch of the L2-normalised embeddings, averaged over
    dimensions (collapse → 0; for uniformly spread unit vectors ≈ 1/sqrt(D)). ``effective_rank``: exp of the
    entropy of the normalised singular values p_i = s_i / Σ s of the centred batch (RankMe; 1 = collapsed,
    at most min(B - 1, D))."""
    z = nn.functional.normalize(z.detach().float(), dim=1)
    std = float(z.std(dim=0).mean())
    s = torch.linalg.svdvals(z - z.mean(dim=0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return {"feature_std": std, "effective_rank": float(torch.exp(entropy))}


def confusion_counts(pred: np.ndarray, ref: np.ndarray, n: int) -> list[list[int]]:
    """``C[r][p]``: voxels of reference class ``r`` predicted as ``p`` (``n`` classes, background 0 included;
    reference values outside ``[0, n)``, e.g. the ignore label, are skipped)."""
    r, p = ref.astype(np.int64).ravel(), pred.astype(np.int64).ravel()
    keep = (r >= 0) & (r < n) & (p >= 0) & (p < n)
    return np.bincount(r[keep] * n + p[keep], minlength=n * n).reshape(n, n).tolist()
