"""Masked image modelling (study arms ``mae``, ``mae_dense``): the mask, the loss, a run whose encoder fine-tuning
loads."""

from __future__ import annotations

import json

import pytest
import torch

from gtgm.models.mim import block_mask
from gtgm.models.registry import create_segmenter
from gtgm.models.segmenters import load_encoder_weights
from gtgm.train.losses import MaskedReconstructionLoss
from gtgm.train.pretrain import pretrain
from tests.train.test_pretrain import _cfg


def test_block_mask_hides_the_share_in_whole_blocks():
    mask = block_mask((3, 1, 16, 16, 10), 0.6, 4, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 16, 16, 10)
    blocks = mask[:, 0, ::4, ::4, ::4]  # one voxel per block (4 x 4 x 3 blocks, the last partial in z)
    assert [int(b.sum()) for b in blocks] == [round(0.6 * 48)] * 3
    tiles = mask[:, :, :4, :4, :4].flatten(1)  # within a block every voxel agrees
    assert bool(((tiles == 0) | (tiles == 1)).all()) and bool((tiles.min(1).values == tiles.max(1).values).all())


def test_reconstruction_loss_counts_hidden_voxels_only():
    target, mask = torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2)
    mask[..., 0, 0, 0] = 1
    recon = torch.full_like(target, 5.0)
    recon[..., 0, 0, 0] = 2.0
    assert float(MaskedReconstructionLoss()(recon, target, mask)["mim_loss"]) == pytest.approx(4.0)


@pytest.mark.parametrize("objective", ["mim", "mim_dense"])
def test_mim_pretraining_exports_an_encoder_fine_tuning_loads(corpus, tmp_path, objective):
    over = [f"pretrain.objective={objective}", "pretrain.steps=6", "pretrain.mask_block=4"]
    if objective == "mim_dense":  # whole crops at the fine-tuning field of view, placed on the caption grid
        over += ["finetune.patch_size=[64, 32, 32]", "pretrain.batch_size=2"]
    cfg = _cfg(corpus, tmp_path / "mim", *over)
    pretrain(cfg, progress=False)
    out = tmp_path / "mim"
    assert (out / "encoder.pt").is_file() and not (out / "heads.pt").exists()  # no projection heads to query with
    encoder = json.loads((out / "encoder.json").read_text())
    assert encoder["objective"] == objective
    assert encoder["patch_size"] == ([64, 32, 32] if objective == "mim_dense" else cfg.pretrain.patch_size)
    losses = [
        json.loads(line)["mim_loss"] for line in (out / "log.jsonl").read_text().splitlines() if "mim_loss" in line
    ]
    assert losses and all(v > 0 for v in losses)
    seg = create_segmenter("resunet", 8, channels=[4, 8, 16])
    stats = load_encoder_weights(seg, out / "encoder.pt", "resunet")
    assert stats["matched"] > 0 and stats["missing"] == 0 and stats["unexpected"] == 0
