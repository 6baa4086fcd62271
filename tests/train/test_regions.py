"""Region-level alignment (study arms ``region_text`` / ``region_facts``): pooling, crops, the loss, a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gtgm.data.boxes import make_patch
from gtgm.data.measure import measure
from gtgm.data.patches import VolumeCache, read_patch
from gtgm.models.regions import pool_regions
from gtgm.models.registry import create_segmenter
from gtgm.models.segmenters import load_encoder_weights
from gtgm.text.captioners.describe import DescribeCaptioner
from gtgm.text.captions import read_captions
from gtgm.text.encoders import TextCache
from gtgm.train.losses import RegionLoss
from gtgm.train.pretrain import pretrain
from gtgm.train.regions import RegionCrops, content_ids, content_key
from gtgm.train.reserved import drop_reserved
from tests.train.test_pretrain import _cfg

CROP = [64, 64, 32]  # the CT preset's fine-tuning field of view


def test_pool_regions_is_the_mean_over_each_boxs_cells():
    feats = [torch.randn(2, 3, 16, 16, 8), torch.randn(2, 5, 4, 4, 2)]  # strides 2 and 8 of a 32 x 32 x 16 crop
    boxes = torch.tensor([[[0, 0, 0, 16, 16, 16], [16, 8, 0, 32, 24, 8]], [[8, 8, 8, 24, 24, 16], [0, 0, 0, 1, 1, 1]]])
    pooled = pool_regions(feats, boxes, (32, 32, 16), "stages")
    assert pooled.shape == (2, 2, 8)
    want = [
        torch.cat([feats[0][0, :, :8, :8, :8].mean((1, 2, 3)), feats[1][0, :, :2, :2, :2].mean((1, 2, 3))]),
        torch.cat([feats[0][0, :, 8:, 4:12, :4].mean((1, 2, 3)), feats[1][0, :, 2:, 1:3, :1].mean((1, 2, 3))]),
        torch.cat([feats[0][1, :, 4:12, 4:12, 4:].mean((1, 2, 3)), feats[1][1, :, 1:3, 1:3, 1:].mean((1, 2, 3))]),
        torch.cat([feats[0][1, :, 0, 0, 0], feats[1][1, :, 0, 0, 0]]),  # a box smaller than a cell: its one cell
    ]
    torch.testing.assert_close(pooled.reshape(4, 8), torch.stack(want))
    torch.testing.assert_close(pool_regions(feats, boxes, (32, 32, 16), "last"), pooled[..., 3:])


def test_each_region_of_a_crop_holds_exactly_its_caption_box(corpus):
    cache = VolumeCache(corpus / "cache")
    ct = [r for r in read_captions(corpus / "captions.jsonl") if r["modality"] == "CT"]
    volume = ct[0]["volume"]
    # a fine-tuning test slab through the volume: boxes touching it are dropped (as pretraining does), and crops that
    # reach it around the kept boxes see the pad value there
    x = next(e["shape"][0] for e in cache.entries if e["id"] == volume)
    slab = {"volume": volume, "lo": [x - 8, 0, 0], "hi": [x, 10_000, 10_000]}  # its last 8 sagittal slices
    records, dropped = drop_reserved([r for r in ct if r["volume"] == volume], [slab])
    assert dropped and records
    crops = RegionCrops(cache, records, TextCache(corpus / "text"), CROP, None, "text", reserved=[slab])
    pad = cache.pad_value(int(crops.case[0]))[0]
    counts, blanked = [], 0
    for i in range(16):
        s = crops[i]
        image, n = s["image"].numpy(), int(s["valid"].sum())
        counts.append(n)
        assert n >= 1 and image.shape[1:] == tuple(CROP)
        x0 = np.clip(x - 8 - int(s["crop_start"][0]), 0, CROP[0])
        blanked += int(x0 < CROP[0])
        assert (image[:, x0:] == pad).all()
        for box, k, row in zip(s["boxes"][:n].tolist(), s["index"][:n].tolist(), s["target"][:n].tolist()):
            lo, hi = np.array(box[:3]), np.array(box[3:])
            assert (lo >= 0).all() and (hi <= CROP).all() and (hi - lo == crops.size[k]).all() and row == crops.row[k]
            assert (crops.start[k] - lo == s["crop_start"].numpy()).all()
            box_pixels = read_patch(cache.image(int(crops.case[k])), crops.start[k].tolist(), crops.size[k].tolist())
            np.testing.assert_array_equal(image[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], box_pixels)
    assert max(counts) > 1 and blanked  # a crop at the fine-tuning field of view holds several boxes, and the slab
    assert crops.bank.shape[0] == len(set(crops.row.tolist())) <= len(records)


def test_same_content_in_other_words_has_one_key_and_is_masked(corpus):
    cache = VolumeCache(corpus / "cache")
    case = next(i for i, e in enumerate(cache.entries) if e["modality"] == "CT")
    patches = [make_patch(cache, case, start, [32, 32, 32], cache.meta(case)) for start in ([0, 0, 0], [32, 32, 0])]
    describe = DescribeCaptioner()
    a, b = (describe.caption(patches[:1], seed)[0] for seed in (0, 1))
    other = describe.caption(patches[1:], 0)[0]
    assert a != b  # two wordings of one box's facts
    m0, m1 = measure(patches[0]), measure(patches[1])
    assert content_key(a, m0) == content_key(b, m0) != content_key(other, m1)
    assert content_ids([a, b, other, "", ""], [m0, m0, m1, m0, m0]).tolist() == [0, 0, 1, 2, 3]  # nothing read: alone

    bank = F.normalize(torch.randn(3, 8), dim=-1)
    region = bank[1:2] * 5  # closest to row 1: the same content as its own row 0, in other words
    out = {"region_features": region, "bank_features": bank, "target": torch.tensor([0])}
    masked = RegionLoss(0.5, np.array([7, 7, 9]))(**out)["region_loss"]
    unmasked = RegionLoss(0.5, np.array([7, 8, 9]))(**out)["region_loss"]
    logits = F.normalize(region, dim=-1) @ bank.T / 0.5
    torch.testing.assert_close(masked, F.cross_entropy(logits[:, [0, 2]], torch.tensor([0])))
    torch.testing.assert_close(unmasked, F.cross_entropy(logits, torch.tensor([0])))
    assert masked < unmasked


@pytest.mark.parametrize("objective", ["region", "region_facts"])
def test_region_pretraining_exports_an_encoder_fine_tuning_loads(corpus, tmp_path, objective):
    over = [f"pretrain.objective={objective}", f"finetune.patch_size={CROP}", "pretrain.batch_size=2"]
    pretrain(_cfg(corpus, tmp_path / "a", *over), progress=False)
    half = pretrain(_cfg(corpus, tmp_path / "b", *over), progress=False, stop_after=3)
    assert not half["finished"]
    pretrain(_cfg(corpus, tmp_path / "b", *over), resume=True, progress=False)
    a, b = (torch.load(tmp_path / r / "encoder.pt", weights_only=True) for r in "ab")
    for key in a:  # resumed = uninterrupted: the same crops in the same order
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    out = tmp_path / "a"
    assert json.loads((out / "encoder.json").read_text())["objective"] == objective
    term = "region_loss" if objective == "region" else "facts_loss"
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r[term]) for r in rows if term in r) and any(term in r for r in rows)
    stats = load_encoder_weights(create_segmenter("resunet", 8, channels=[4, 8, 16]), out / "encoder.pt", "resunet")
    assert stats["matched"] > 0 and stats["missing"] == 0 and stats["unexpected"] == 0
