"""Pieces both trainers share: mixed precision set-up and the (GradScaler-aware) optimiser step."""

from __future__ import annotations

import math

import torch

from gtgm.errors import GtgmError


def amp_setup(
    mode: str, device: torch.device, key: str = "amp"
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """``auto`` / ``none`` / ``bf16`` / ``fp16`` -> (autocast dtype or None, GradScaler for fp16 or None).

    ``auto`` is bf16 on a CUDA GPU that supports it, else full precision. ``key`` names the setting in errors.
    """
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    if mode == "none":
        return None, None
    if mode == "fp16":
        if device.type != "cuda":
            raise GtgmError(f"{key}=fp16 needs a CUDA GPU (use bf16 or none on CPU)")
        return torch.float16, torch.amp.GradScaler("cuda")
    return torch.bfloat16, None


def optimizer_step(
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    params: list[torch.nn.Parameter] | None = None,
    clip: float = 0.0,
) -> float | None:
    """Unscale (fp16), clip the gradient norm of ``params`` to ``clip`` (> 0), then step; returns the norm."""
    norm = None
    if scaler:
        scaler.unscale_(opt)
    if clip > 0 and params is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return norm


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear 1/warmup..1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_poly(step: int, warmup: int, total: int, exponent: float = 0.9) -> float:
    """LR multiplier: linear 1/warmup..1 over ``warmup`` steps, then nnU-Net's poly decay (1 - step / total)^exponent
    (its ``PolyLRScheduler``; with ``warmup`` = 0 exactly nnU-Net's)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, 1 - step / max(1, total)) ** exponent


def schedule_multiplier(step: int, warmup: int, total: int, schedule: str = "cosine") -> float:
    """The fine-tuning schedule ``finetune.schedule``: ``cosine`` (:func:`warmup_cosine` to 0) or ``poly``
    (:func:`warmup_poly`)."""
    if schedule == "poly":
        return warmup_poly(step, warmup, total)
    return warmup_cosine(step, warmup, total, 0.0)


def encoder_multiplier(step: int, freeze: int, warmup: int, total: int, schedule: str = "cosine") -> float:
    """LR multiplier of a fine-tuned encoder: 0 while frozen (``step < freeze``), then a fresh linear warm-up over
    ``warmup`` steps times the run's schedule, ``min(1, (step - freeze + 1) / warmup) * schedule(step)``;
    without a freeze (``freeze`` = 0) the run's schedule alone (:func:`schedule_multiplier`).

    Without the re-warm-up, Adam's first update after unfreezing moves every encoder weight by about ±lr
    (its moments start at that step's gradient, so m / sqrt(v) = ±1).
    """
    if step < freeze:
        return 0.0
    rewarm = min(1.0, (step - freeze + 1) / max(1, warmup)) if freeze > 0 else 1.0  # (no freeze: the run's own)
    return rewarm * schedule_multiplier(step, warmup, total, schedule)
