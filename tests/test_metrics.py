"""Dice and HD95 against values computed by hand, including the empty-class conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gtgm.metrics import (
    adapted_rand,
    border_mask,
    cremi_score,
    dice_per_class,
    hd95_per_class,
    neuron_scores,
    voi,
)


def test_dice_by_hand():
    ref = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros((6, 6, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1  # 8 voxels
    pred[1:3, 1:4, 1:3] = 1  # 12 voxels, 8 shared
    ref[4, 4, 4] = 2  # class 2 present in the reference only
    pred[0, 5, 5] = 3  # class 3 predicted but absent from the reference
    d = dice_per_class(pred, ref, [1, 2, 3, 4])
    assert d[1] == pytest.approx(2 * 8 / (8 + 12))
    assert d[2] == 0.0  # missed
    assert d[3] == 0.0  # false positive class
    assert d[4] == 1.0  # absent from both: documented convention
    assert dice_per_class(ref, ref, [1, 2])[1] == 1.0


def test_hd95_by_hand():
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros((10, 10, 10), np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    pred[2:5, 2:5, 4:7] = 1  # shifted by 2 voxels along z
    hd = hd95_per_class(pred, ref, [1, 2, 3], spacing=[1.0, 1.0, 2.5])
    assert hd[1] == pytest.approx(2 * 2.5)  # every surface voxel is at most 2 slices (5 mm) away
    assert hd[2] == 0.0  # absent from both
    pred[0, 0, 0] = 3
    assert math.isnan(hd95_per_class(pred, ref, [3])[3])  # absent from the reference only: undefined


# --- neuron segmentation metrics ----------------------------------------------------------------------


def _pair():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 6, (10, 9, 4))  # 0 = background, ignored
    seg = (gt * 7 + rng.integers(0, 3, gt.shape)) % 11  # splits and merges, its own 0 counted
    return seg, gt


def test_voi_and_adapted_rand_agree_with_skimage():
    from skimage.metrics import adapted_rand_error, variation_of_information

    seg, gt = _pair()
    split, merge = variation_of_information(gt, seg, ignore_labels=[0])  # H(seg | gt), H(gt | seg)
    assert split > 1.0 > merge  # seg cuts every neuron in about 3
    assert voi(seg, gt) == pytest.approx((split, merge), rel=1e-9)
    assert adapted_rand(seg, gt) == pytest.approx(adapted_rand_error(gt, seg, ignore_labels=(0,))[0], rel=1e-9)
    no_ignore = variation_of_information(gt, seg)
    assert voi(seg, gt, ignore=()) == pytest.approx(tuple(no_ignore), rel=1e-9)


def test_perfect_merged_and_split_segmentations_by_hand():
    gt = np.zeros((4, 2, 1), dtype=np.int64)
    gt[:2], gt[2:] = 1, 2  # two neurons of 4 voxels
    relabelled = np.where(gt == 1, 5, 9)
    assert voi(relabelled, gt) == (0.0, 0.0) and adapted_rand(relabelled, gt) == 0.0
    merged = np.ones_like(gt)  # H(gt | seg) = 1 bit; pairs: 2·(4·3) same in both, 8·7 same in seg
    assert voi(merged, gt) == pytest.approx((0.0, 1.0))
    precision, recall = 24 / 56, 1.0
    assert adapted_rand(merged, gt) == pytest.approx(1 - 2 * precision * recall / (precision + recall))
    split = np.arange(8).reshape(gt.shape)  # H(seg | gt) = log2(4) = 2 bits; no pair kept together
    assert voi(split, gt) == pytest.approx((2.0, 0.0))
    assert adapted_rand(split, gt) == 1.0
    s = neuron_scores(merged, gt)
    assert s["cremi"] == pytest.approx(np.sqrt(s["arand"] * 1.0))
    assert cremi_score(0.0, 0.0, 0.0) == 0.0


def test_background_is_ignored_and_border_mask_as_cremi():
    gt = np.zeros((6, 6, 2), dtype=np.int64)
    gt[:3], gt[3:] = 1, 2
    gt[:, :, 1] = 0  # a background section: whatever the segmentation says there does not count
    seg = gt.copy()
    seg[:, :, 1] = 7
    assert voi(seg, gt) == (0.0, 0.0)
    mask = border_mask(gt, 1.0)
    assert mask[:, :, 0].any(axis=1).tolist() == [False, True, True, True, True, False]  # x = 1..4 near x 2|3
    assert not mask[:, :, 1].any()  # a section of one label has no boundary
    wrong_at_border = gt.copy()
    wrong_at_border[2, :, 0] = 2
    assert voi(wrong_at_border, gt)[1] > 0
    assert neuron_scores(wrong_at_border, gt, border=1.0)["voi"] == 0.0
