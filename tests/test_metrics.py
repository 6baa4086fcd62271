"""Dice and HD95 against values computed by hand, including the empty-class conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gtgm.metrics import dice_per_class, hd95_per_class


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
