"""Pretraining data: views that keep their caption true, boxes at the fine-tuning scale, a control with shuffled
captions, and a corpus disjoint from the fine-tuning validation and test regions."""

from __future__ import annotations

import json

import numpy as np
import torch

from gtgm.config import AugmentConfig, load_config
from gtgm.data.augment import TwoViews
from gtgm.data.boxes import make_patch
from gtgm.data.patches import VolumeCache
from gtgm.data.splits import make_split
from gtgm.text.captions import read_captions
from gtgm.text.consistency import broken_facts
from gtgm.text.encoders import TextCache
from gtgm.train.losses import GTGMLoss
from gtgm.train.pairs import CaptionPairs
from gtgm.train.reserved import overlaps, reserved_regions

# The share of caption-paired views allowed to break a stated fact (the measured shares: docs/pretraining.md).
BOUND = 0.05


def _boxes(cache: VolumeCache, records: list[dict], n: int = 160) -> list:
    ids = {e["id"]: i for i, e in enumerate(cache.entries)}
    chosen = [r for r in records if r["modality"] in ("CT", "MRI")]
    rng = np.random.default_rng(0)
    chosen = [chosen[k] for k in rng.permutation(len(chosen))[:n]]
    return [make_patch(cache, ids[r["volume"]], r["start"], r["size"], cache.meta(ids[r["volume"]])) for r in chosen]


def test_caption_paired_views_keep_the_caption_true(corpus):
    cache = VolumeCache(corpus / "cache")
    patches = _boxes(cache, read_captions(corpus / "captions.jsonl"))
    assert len(patches) >= 100 and {p.modality for p in patches} == {"CT", "MRI"}
    rng = np.random.default_rng(1)

    def broken_share(views: TwoViews, which: int) -> float:
        broken = 0
        for p in patches:
            ops = views.pipelines()[which - 1]  # mirrors allowed in view 2: the full pipeline
            sampled = [op for op in (w.sample(rng, tuple(p.image.shape[1:])) for w in ops) if op is not None]
            broken += bool(broken_facts(p, sampled))
        return broken / len(patches)

    views = TwoViews(AugmentConfig(), caption_consistent=True)
    consistent, full = broken_share(views, 1), broken_share(views, 2)
    print(f"views breaking a caption fact: caption-consistent {consistent:.3f}, full pipeline {full:.3f}")
    assert consistent <= BOUND
    assert full > 0.5  # the measurement can tell: the full pipeline breaks most captions


def test_boxes_are_shown_at_the_cache_voxel_size(corpus):
    cache = VolumeCache(corpus / "cache")
    text = TextCache(corpus / "text")
    ct = next(i for i, e in enumerate(cache.entries) if e["modality"] == "CT")
    rec = {"key": "k", "volume": cache.entries[ct]["id"], "start": [2, 3, 4], "size": [20, 20, 20], "text": "t"}
    text.lookup = lambda texts: np.zeros(len(texts), dtype=np.int64)  # one row for the made-up caption
    pairs = CaptionPairs(cache, [rec], text, [16, 16, 16], None)
    raw = np.asarray(cache.image(ct)[:, 4:20, 5:21, 6:22])  # centred 16³ crop of the 20³ box: no resizing
    np.testing.assert_array_equal(pairs.patch(0).numpy(), raw)
    small = CaptionPairs(cache, [rec | {"size": [8, 8, 8]}], text, [16, 16, 16], None).patch(0)
    np.testing.assert_array_equal(small[:, :8, :8, :8].numpy(), np.asarray(cache.image(ct)[:, 2:10, 3:11, 4:12]))
    assert float(small[:, 8:].max()) == float(small[:, 8:].min()) == cache.pad_value(ct)[0]  # padded, not stretched


def test_shuffled_text_control_pairs_boxes_with_other_captions(corpus):
    cache = VolumeCache(corpus / "cache")
    text = TextCache(corpus / "text")
    records = read_captions(corpus / "captions.jsonl")[:40]
    real = CaptionPairs(cache, records, text, [16, 16, 16], None)
    shuffled = CaptionPairs(cache, records, text, [16, 16, 16], None, text_control="shuffled")
    assert sorted(shuffled.rows.tolist()) == sorted(real.rows.tolist())  # the same captions ...
    assert (shuffled.rows != real.rows).mean() > 0.8  # ... paired with other boxes


def test_text_loss_on_the_caption_consistent_view_only():
    z = [torch.randn(8, 16) for _ in range(3)]
    cfg = load_config(None).loss
    assert set(GTGMLoss(cfg, text_views=1)(*z)) == {"text1_loss", "views_loss"}
    assert set(GTGMLoss(cfg)(*z)) == {"text1_loss", "text2_loss", "views_loss"}


def test_pretraining_never_sees_finetuning_val_or_test_regions(corpus, tmp_path):
    from gtgm.train.pretrain import load_data, pretrain
    from tests.train.test_pretrain import _cfg

    cfg = _cfg(corpus, tmp_path / "run", "pretrain.steps=2", "pretrain.holdout_fraction=0.0")
    pretrain(cfg, progress=False)
    info = json.loads((tmp_path / "run" / "encoder.json").read_text())
    reserved = json.loads((tmp_path / "run" / "reserved.json").read_text())
    cache = VolumeCache(corpus / "cache", group="ct_phantom", labeled=True)
    split = make_split(cache, cfg.finetune)
    evaluated = {cache.entries[p.case]["id"] for k in ("val", "test") for p in split[k]}
    assert evaluated and not evaluated & set(info["train_volumes"])  # whole CT cases held back
    assert {cache.entries[p.case]["id"] for p in split["train"]} <= set(info["train_volumes"])
    mni = [r for r in reserved["regions"] if r["group"] == "mni152_tissue"]
    assert {r["split"] for r in mni} == {"val", "test"}  # region split: the val and test slabs
    used = load_data(cfg)[0].records
    assert not any(overlaps(r, region) for r in used for region in reserved["regions"])
    assert any(r["volume"] == "mni152_t1" for r in used)  # the MNI152 training slab is still used
    assert reserved["dropped_boxes"] > 0 and reserved_regions(VolumeCache(corpus / "cache"), cfg) == {
        k: reserved[k] for k in ("regions", "unsplittable")
    }


def test_example_counts_are_checked(tmp_path, capsys):
    from gtgm.cli import main

    assert main(["data", "examples", "--out", str(tmp_path / "ex"), "--n-ct-unlabeled", "-1"]) == 1
    assert "n-ct-unlabeled" in capsys.readouterr().err and not (tmp_path / "ex").exists()
