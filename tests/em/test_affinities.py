import numpy as np
import pytest
import torch

from gtgm.em.affinities import affinities, affinities_torch, offsets_xyz


def test_nearest_neighbour_affinities_by_hand():
    # (x, y, z) = (3, 2, 2); label 0 is background, -1 ignored
    lab = np.zeros((3, 2, 2), dtype=np.int64)
    lab[:, :, 0] = [[1, 1], [1, 2], [0, 2]]
    lab[:, :, 1] = [[1, 1], [2, 2], [-1, 2]]
    aff, mask = affinities(lab)  # channels z, y, x
    z, y, x = aff
    # z: voxel (x, y, 1) against (x, y, 0); nothing below z = 0
    assert z[:, :, 0].tolist() == [[0, 0], [0, 0], [0, 0]]
    assert z[:, :, 1].tolist() == [[1, 1], [0, 1], [0, 1]]
    assert mask[0][:, :, 0].tolist() == [[0, 0], [0, 0], [0, 0]]
    assert mask[0][:, :, 1].tolist() == [[1, 1], [1, 1], [0, 1]]
    # y: voxel (x, 1, z) against (x, 0, z)
    assert y[:, 0, :].tolist() == [[0, 0], [0, 0], [0, 0]]
    assert y[:, 1, :].tolist() == [[1, 1], [0, 1], [0, 0]]
    assert mask[1][:, 1, :].tolist() == [[1, 1], [1, 1], [1, 0]]
    # x: voxel (x, y, z) against (x - 1, y, z)
    assert x[0].tolist() == [[0, 0], [0, 0]]
    assert x[1].tolist() == [[1, 0], [0, 0]]
    assert x[2].tolist() == [[0, 0], [1, 1]]  # 0 vs 1 is background; (2, 0, 1) is ignored -> masked below
    assert mask[2][2].tolist() == [[1, 0], [1, 1]]


def test_long_range_offset_and_batch_dims():
    lab = torch.arange(4).repeat_interleave(2).reshape(8, 1, 1)  # x: 0 0 1 1 2 2 3 3
    aff, mask = affinities_torch(lab[None, None], offsets_xyz([[0, 0, -2], [0, 0, 1]]))
    assert aff.shape == (1, 1, 2, 8, 1, 1)
    assert aff[0, 0, 0, :, 0, 0].tolist() == [0] * 8  # x - 2 never shares a label
    assert mask[0, 0, 0, :, 0, 0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert aff[0, 0, 1, :, 0, 0].tolist() == [0, 0, 1, 0, 1, 0, 1, 0]  # x + 1; label 0 is background
    assert mask[0, 0, 1, :, 0, 0].tolist() == [1] * 7 + [0]


def test_bad_offset_is_refused():
    with pytest.raises(ValueError, match="non-zero"):
        offsets_xyz([[0, 0, 0]])
