"""Losses: small modules, the formula in each docstring, the terms as pure functions.

Pretraining (one loss per objective of :data:`gtgm.train.objectives.OBJECTIVES`): CLIP, Barlow Twins, VICReg and
their sum :class:`GTGMLoss`; masked reconstruction :class:`MaskedReconstructionLoss`; the region objectives'
:class:`RegionLoss`. Fine-tuning: masked Dice + CE
(:func:`seg_loss`) and the masked affinity loss for EM (:func:`affinity_loss`).

The pretraining losses take embeddings of shape (N, D). With ``gather=True`` they first concatenate the
embeddings of every process (:func:`~gtgm.runtime.gather_with_grad`), so N processes with batch b compute the
loss of one process with batch N·b (CLIP negatives and the cross-correlation span the global batch).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from gtgm.data.splits import IGNORE
from gtgm.runtime import gather_with_grad


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021).

    ``u = image/|image|``, ``v = text/|text|``, ``S = s · u vᵀ`` (s = 1/τ);
    ``L = ½ [CE(S, diag) + CE(Sᵀ, diag)]`` — pair i is the positive of row i and column i.
    Aligned orthonormal pairs give ``log(1 + (N-1)e^{-s})``; a collapsed batch gives ``log N``.
    """
    u, v = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale * u @ v.T
    labels = torch.arange(len(u), device=u.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-dimension batch standardisation ``(z - mean) / sqrt(var + eps)`` (biased var, as BatchNorm)."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def barlow_twins_loss(
    z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 0.0051, normalize: bool = True
) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021), negative-free.

    ``C = ẑ1ᵀ ẑ2 / N`` with ``ẑ = standardize(z)`` (or raw ``z`` when ``normalize=False``, the GTGM
    reference code's variant); ``L = Σ_i (1 - C_ii)² + λ Σ_{i≠j} C_ij²``. Identical standardised views
    give ``Σ_i (1 - C_ii)² ≈ 0``; a collapsed batch (all rows equal) gives ``C = 0`` and ``L = D``.
    """
    if normalize:
        z1, z2 = standardize(z1), standardize(z2)
    c = z1.T @ z2 / z1.shape[0]
    on = (1 - torch.diagonal(c)).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lambda_offdiag * off


def vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, sim: float = 25.0, var: float = 25.0, cov: float = 1.0
) -> torch.Tensor:
    """VICReg (Bardes et al. 2022), negative-free, as in the authors' code.

    ``L = sim · MSE(z1, z2) + var · ½ Σ_z mean_j relu(1 - sqrt(Var z_j + 1e-4)) + cov · Σ_z Σ_{i≠j} Cov(z)_ij² / D``
    (Var and Cov with the N-1 denominator).
    """
    inv = F.mse_loss(z1, z2)
    d = z1.shape[1]
    std_term, cov_term = 0.0, 0.0
    for z in (z1, z2):
        zc = z - z.mean(0)
        std_term = std_term + F.relu(1 - torch.sqrt(zc.var(0) + 1e-4)).mean() / 2
        c = zc.T @ zc / (len(z) - 1)
        cov_term = cov_term + (c.pow(2).sum() - torch.diagonal(c).pow(2).sum()) / d
    return sim * inv + var * std_term + cov * cov_term


class ClipLoss(nn.Module):
    """:func:`clip_loss` with temperature τ (fixed, or learnable as ``log(1/τ)`` clamped to s ≤ 100)."""

    def __init__(self, temperature: float = 0.07, learnable: bool = False, gather: bool = False):
        super().__init__()
        self.gather = gather
        init = torch.tensor(math.log(1 / temperature))
        if learnable:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.gather:
            image, text = gather_with_grad(image), gather_with_grad(text)
        return clip_loss(image, text, self.scale)


class BarlowTwinsLoss(nn.Module):
    """:func:`barlow_twins_loss` (λ_offdiag = 0.0051; ``normalize=False`` for the reference variant)."""

    def __init__(self, lambda_offdiag: float = 0.0051, normalize: bool = True, gather: bool = False):
        super().__init__()
        self.lambda_offdiag, self.normalize, self.gather = lambda_offdiag, normalize, gather

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if self.gather:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
        return barlow_twins_loss(z1, z2, self.lambda_offdiag, self.normalize)


class VICRegLoss(nn.Module):
    """:func:`vicreg_loss` with weights (25, 25, 1)."""

    def __init__(self, sim: float = 25.0, var: float = 25.0, cov: float = 1.0, gather: bool = False):
        super().__init__()
        self.sim, self.var, self.cov, self.gather = sim, var, cov, gather

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if self.gather:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
        return vicreg_loss(z1, z2, self.sim, self.var, self.cov)


class GTGMLoss(nn.Module):
    """The GTGM objective on the model's output dict; returns every term, keys ending in ``_loss``.

    Default (paper): ``w·CLIP(v1, t) + w·CLIP(v2, t) + λ·BT(v1, v2)`` with w = 1, λ = 0.01. The
    image-text term can be a negative-free one (``image_text="barlow"|"vicreg"``), the image-image term
    VICReg or none. The total is the sum of the returned terms. ``text_views=1``: only view 1 is paired
    with the text (caption-consistent views, ``augment.caption_consistent``): ``w·CLIP(v1, t) + λ·BT(v1, v2)``.
    """

    def __init__(self, cfg, gather: bool = False, text_views: int = 2):
        super().__init__()
        self.cfg, self.text_views = cfg, text_views
        self.clip = ClipLoss(cfg.temperature, cfg.learnable_temperature, gather)
        self.terms = nn.ModuleDict(
            {
                "barlow": BarlowTwinsLoss(cfg.barlow_lambda, cfg.barlow_normalize == "batch", gather),
                "vicreg": VICRegLoss(gather=gather),
            }
        )

    def forward(
        self, image_features_1: torch.Tensor, image_features_2: torch.Tensor, text_features: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        cfg, out = self.cfg, {}
        if cfg.text_weight > 0:
            it = self.clip if cfg.image_text == "clip" else self.terms[cfg.image_text]
            out["text1_loss"] = cfg.text_weight * it(image_features_1, text_features)
            if self.text_views == 2:
                out["text2_loss"] = cfg.text_weight * it(image_features_2, text_features)
        if cfg.image_image != "none" and cfg.image_weight > 0:
            out["views_loss"] = cfg.image_weight * self.terms[cfg.image_image](image_features_1, image_features_2)
        return out


class MaskedReconstructionLoss(nn.Module):
    """Masked image modelling: ``Σ mask · (reconstruction − target)² / (Σ mask · C)``, the mean squared error over
    the hidden voxels only (shapes (B, C, X, Y, Z), mask (B, 1, X, Y, Z) with 1 = hidden)."""

    def forward(
        self, reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        err = (reconstruction - target) ** 2 * mask
        return {"mim_loss": err.sum() / (mask.sum() * target.shape[1]).clamp_min(1.0)}


class RegionLoss(nn.Module):
    """The region objectives on :class:`~gtgm.models.regions.RegionModel`'s outputs (keys ending in ``_loss``).

    ``text``: ``region_loss`` = mean over regions of ``CE(z_r · T^T / τ, own row)`` with the bank rows of the same
    content (``content``, (N,)) but another wording masked to -inf; z and T L2-normalised. ``facts``:
    ``facts_loss`` = mean squared error over regions and facts."""

    def __init__(self, temperature: float, content: np.ndarray | None = None):
        super().__init__()
        self.temperature = temperature
        if content is not None:
            self.register_buffer("content", torch.as_tensor(content, dtype=torch.int64), persistent=False)

    def forward(self, **out: torch.Tensor) -> dict[str, torch.Tensor]:
        if "predicted" in out:
            return {"facts_loss": F.mse_loss(out["predicted"], out["facts"])}
        z, bank = F.normalize(out["region_features"], dim=-1), F.normalize(out["bank_features"], dim=-1)
        target = out["target"]
        logits = z @ bank.T / self.temperature
        rows = torch.arange(bank.shape[0], device=z.device)
        same = (self.content[None, :] == self.content[target][:, None]) & (rows[None, :] != target[:, None])
        return {"region_loss": F.cross_entropy(logits.masked_fill(same, float("-inf")), target)}


_dice = DiceLoss(include_background=True, softmax=False, to_onehot_y=False, reduction="none")


def seg_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weight: torch.Tensor | None = None,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dice + CE over labelled voxels. ``logits`` (B, K, ...), ``target`` (B, 1, ...) int64 (IGNORE = -1).

    Dice: soft Dice per sample and class (background included), averaged. CE: mean over labelled voxels, optionally
    with per-class weights ``class_weight`` (K,) (:func:`gtgm.train.tasks.class_weights`).

    Partial labels: ``classes`` (B, K) bool marks the classes each sample's labels annotate. The others are left
    out of that sample's softmax (their logits replaced by a constant, so their gradient is exactly 0), of its CE
    and of its Dice mean: a voxel labelled 0 there is "none of the annotated classes", not background.
    """
    valid = (target != IGNORE).float()
    t = target.clamp_min(0)
    w = None if class_weight is None else class_weight.to(logits.device)
    x = logits.float()
    if classes is not None:
        keep = classes.to(logits.device).bool()
        x = torch.where(keep.view(*keep.shape, *([1] * (x.ndim - 2))), x, torch.full_like(x, -1e4))
    ce = F.cross_entropy(x, torch.where(target[:, 0] == IGNORE, -100, t[:, 0]), weight=w, ignore_index=-100)
    probs = x.softmax(1) * valid
    onehot = F.one_hot(t[:, 0], logits.shape[1]).movedim(-1, 1).float() * valid
    dice = _dice(probs, onehot).reshape(logits.shape[0], logits.shape[1])  # (B, K)
    if classes is None:
        return dice.mean() + ce
    keep = classes.to(dice.device).float()
    return (dice * keep).sum() / keep.sum().clamp_min(1) + ce


def affinity_loss(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "bce", balance: bool = True
) -> torch.Tensor:
    """Masked affinity loss; all (B, C, X, Y, Z). ``kind`` bce (on logits) or mse (on sigmoid probabilities).

    With ``balance``, connected (1) and cut (0) affinities carry half the weight each:
    w = mask · (t / (2 n₁) + (1 − t) / (2 n₀)), n₁ / n₀ = known connected / cut pairs in the batch;
    otherwise w = mask / n. loss = Σ w · ℓ.
    """
    x, t, m = logits.float(), target.float(), mask.float()
    per = F.binary_cross_entropy_with_logits(x, t, reduction="none") if kind == "bce" else (x.sigmoid() - t) ** 2
    if balance:
        n1, n0 = (m * t).sum().clamp_min(1), (m * (1 - t)).sum().clamp_min(1)
        w = m * (t / (2 * n1) + (1 - t) / (2 * n0))
    else:
        w = m / m.sum().clamp_min(1)
    return (w * per).sum()
