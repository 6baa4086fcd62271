"""Frozen-encoder probes: exact feature sampling, AUC by hand, determinism, CLI."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from gtgm.cli import main
from gtgm.config import load_config
from gtgm.fsutil import check_schema
from gtgm.models.checkpoint import save_checkpoint
from gtgm.models.encoders import segmenter_state_dict
from gtgm.schemas import PROBE_RESULT
from gtgm.study.probe import auc, load_frozen_encoder, run_probe, sample_features, stage_maps

TINY = ["model.channels=[4,8,16]", "pretrain.patch_size=[16,16,16]"]


def test_sampled_features_equal_upsampled_maps():
    cfg = load_config(None, TINY)
    enc = load_frozen_encoder(cfg, "", 0)
    image = np.random.default_rng(0).random((1, 13, 10, 9), dtype=np.float32)
    maps, padded = stage_maps(enc, image)
    full = torch.cat([F.interpolate(m, size=padded, mode="trilinear", align_corners=False) for m in maps], 1)[0]
    idx = np.array([[0, 0, 0], [12, 9, 8], [5, 3, 7], [12, 0, 4]])
    expected = torch.stack([full[:, a, b, c] for a, b, c in idx])
    torch.testing.assert_close(sample_features(maps, padded, idx), expected, atol=1e-5, rtol=1e-5)


def test_auc_by_hand():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of 4 pairs ordered -> 0.75; a tie counts one half
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5


def test_probe_is_deterministic_and_tells_encoders_apart(corpus, tmp_path, capsys):
    small = [*TINY, "finetune.label_ratio=0.1", "finetune.test_fraction=0.2"]  # one training case, two test cases
    cfg = load_config("finetune/cpu-small", [f"finetune.cache={corpus / 'cache'}", *small])  # as the CLI
    a = run_probe(cfg, "", "ct_phantom", seed=0)
    assert set(a["voxel"]["dice"]) == {str(c) for c in range(1, 8)} and 0 <= a["voxel"]["mean_dice"] <= 1
    save_checkpoint(tmp_path / "enc.pt", segmenter_state_dict(load_frozen_encoder(cfg, "", 1)))
    argv = ["probe", str(corpus / "cache"), "--encoder", "random", str(tmp_path / "enc.pt"), "--group", "ct_phantom"]
    assert main([*argv, "--out", str(tmp_path / "p"), *small]) == 0
    saved = json.loads((tmp_path / "p" / "probe.json").read_text())
    for r in saved:
        check_schema(r, PROBE_RESULT, "probe.json")  # what the study reads back from its probe files
    assert [r["encoder"] for r in saved] == ["random init (seed 0)", str(tmp_path / "enc.pt")]
    assert saved[0] == a  # same encoder, voxels, windows and cases -> the same figures
    assert saved[1]["voxel"] != a["voxel"]  # another encoder, another figure
    argv = ["probe", str(corpus / "cache"), "--encoder", str(tmp_path / "none.pt"), "--group", "ct_phantom"]
    assert main([*argv, "--out", str(tmp_path / "q")]) == 1
    assert "none.pt: encoder file not found" in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_stage_pooling_concatenates_the_mean_of_every_stage():
    cfg = load_config(None, [*TINY, "model.pooling=stages"])
    enc = load_frozen_encoder(cfg, "", 0)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        pooled, maps = enc(x), enc.features(x)
    assert enc.out_dim == 4 + 8 + 16 and pooled.shape == (2, 28)
    torch.testing.assert_close(pooled, torch.cat([m.mean(dim=(2, 3, 4)) for m in maps], 1))
    last = load_frozen_encoder(load_config(None, TINY), "", 0)
    with torch.no_grad():
        torch.testing.assert_close(last(x), maps[-1].mean(dim=(2, 3, 4)))  # same weights, the paper's pooling


def test_position_baseline_by_hand():
    from types import SimpleNamespace

    from gtgm.train.retrieval import position_baseline

    # four CT boxes of a 90³ volume with distinct captions: two share their stated place (left posterior
    # inferior, peripheral), two have a place of their own -> top-1 = (1/2 + 1/2 + 1 + 1) / 4, top-5 = 1
    starts = [[0, 0, 0], [2, 2, 2], [60, 60, 60], [30, 30, 30]]
    cache = SimpleNamespace(entries=[{"modality": "CT"}], shape=lambda i: [90, 90, 90])
    records = [{"start": s, "size": [16, 16, 16]} for s in starts]
    pairs = SimpleNamespace(records=records, case=[0, 0, 0, 0], cache=cache, rows=[0, 1, 2, 3])
    top1, top5 = position_baseline(pairs, repeats=400)
    assert abs(top1 - 0.75) < 0.04 and top5 == 1.0
