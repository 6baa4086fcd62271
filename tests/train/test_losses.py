"""Losses against values computed by hand on small tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gtgm.config import LossConfig
from gtgm.train.losses import BarlowTwinsLoss, ClipLoss, GTGMLoss, barlow_twins_loss, clip_loss, vicreg_loss


def test_clip_aligned_and_collapsed():
    s = 1 / 0.07
    eye = torch.eye(4, dtype=torch.float64)
    assert clip_loss(eye, eye, s).item() == pytest.approx(math.log(1 + 3 * math.exp(-s)), rel=1e-5)
    same = torch.ones(4, 3)
    assert clip_loss(same, same * 2, s).item() == pytest.approx(math.log(4), rel=1e-6)


def test_clip_small_example_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # second row normalises to (0.7071, 0.7071)
    r = 1 / math.sqrt(2)
    # logits (scale 1) = [[1, r], [0, r]]
    rows = (-math.log(math.e / (math.e + math.exp(r))) - math.log(math.exp(r) / (1 + math.exp(r)))) / 2
    cols = (-math.log(math.e / (math.e + 1)) - math.log(0.5)) / 2
    assert clip_loss(image, text, 1.0).item() == pytest.approx((rows + cols) / 2, rel=1e-6)
    assert clip_loss(text, image, 1.0).item() == pytest.approx(clip_loss(image, text, 1.0).item(), rel=1e-6)


def test_clip_module_temperature():
    fixed = ClipLoss(0.07)
    assert fixed.scale.item() == pytest.approx(1 / 0.07, rel=1e-6) and not list(fixed.parameters())
    learn = ClipLoss(0.07, learnable=True)
    assert len(list(learn.parameters())) == 1
    x = torch.randn(5, 8)
    assert learn(x, x).item() == pytest.approx(fixed(x, x).item(), rel=1e-6)


def test_barlow_twins_by_hand():
    rng = np.random.default_rng(0)
    z = torch.tensor(rng.normal(size=(64, 4)), dtype=torch.float64)
    r = np.corrcoef(z.numpy(), rowvar=False)
    expected = 0.0051 * (np.sum(r**2) - np.sum(np.diag(r) ** 2))  # on-diagonal terms vanish (C_ii = 1)
    assert barlow_twins_loss(z, z).item() == pytest.approx(expected, rel=1e-3, abs=1e-6)
    collapsed = torch.ones(16, 5, dtype=torch.float64)
    assert barlow_twins_loss(collapsed, collapsed).item() == pytest.approx(5.0)  # C = 0 -> D
    raw = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert barlow_twins_loss(raw, raw, normalize=False).item() == pytest.approx(0.5)  # C = I/2
    z2 = torch.tensor(rng.normal(size=(64, 4)))
    z1 = z.float()
    assert barlow_twins_loss(z1, z2.float()).item() == pytest.approx(barlow_twins_loss(z2.float(), z1).item(), rel=1e-5)
    assert BarlowTwinsLoss(0.01)(z1, z1).item() == pytest.approx(barlow_twins_loss(z1, z1, 0.01).item())


def test_vicreg_by_hand():
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    # Var = 8/3 per dim (std > 1: no variance penalty); Cov off-diagonal = 0; identical views: no invariance term
    assert vicreg_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.zeros(4, 2)
    # std = sqrt(0 + 1e-4) = 0.01 -> relu(1 - 0.01) = 0.99 per dim, ½ per branch, two branches, weight 25
    assert vicreg_loss(collapsed, collapsed).item() == pytest.approx(25 * 0.99, rel=1e-6)
    shifted = z + 1.0
    assert vicreg_loss(z, shifted).item() == pytest.approx(25 * 1.0, rel=1e-6)  # MSE = 1


def test_gtgm_objective_terms():
    cfg = LossConfig()
    z1, z2, t = torch.randn(6, 8), torch.randn(6, 8), torch.randn(6, 8)
    out = GTGMLoss(cfg)(z1, z2, t)
    assert set(out) == {"text1_loss", "text2_loss", "views_loss"}
    s = 1 / cfg.temperature
    assert out["text1_loss"].item() == pytest.approx(clip_loss(z1, t, s).item(), rel=1e-5)
    assert out["views_loss"].item() == pytest.approx(0.01 * barlow_twins_loss(z1, z2).item(), rel=1e-5)
    neg_free = GTGMLoss(LossConfig(image_text="barlow", image_image="none"))(z1, z2, t)
    assert set(neg_free) == {"text1_loss", "text2_loss"}
    assert neg_free["text2_loss"].item() == pytest.approx(barlow_twins_loss(z2, t).item(), rel=1e-5)
