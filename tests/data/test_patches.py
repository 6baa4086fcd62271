"""Patch sampling from the memory-mapped cache; determinism across DataLoader workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gtgm.config import AugmentConfig, PreprocessConfig
from gtgm.data.datasets import load_dataset
from gtgm.data.patches import TwoViewPatchDataset, VolumeCache, read_patch
from gtgm.data.preprocess import preprocess_dataset
from gtgm.errors import GtgmError
from tests.conftest import save_nifti


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    training = []
    for i, shape in enumerate([(40, 36, 30), (24, 24, 12)]):  # the second is smaller than the patch
        img = rng.normal(100, 20, shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        lab[5:8, 6:9, 4:7] = 1 + i  # a small object
        save_nifti(root / f"img{i}.nii.gz", img)
        save_nifti(root / f"lab{i}.nii.gz", lab)
        training.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "training": training}))
    out = tmp_path_factory.mktemp("cache")
    preprocess_dataset(load_dataset(root), out, PreprocessConfig(), progress=False)
    return VolumeCache(out)


def test_cache_is_memory_mapped(cache):
    assert isinstance(cache.image(0), np.memmap) and cache.image(0).shape == (1, 40, 36, 30)
    assert isinstance(cache.label(0), np.memmap)
    with pytest.raises(GtgmError, match="no cached cases"):
        VolumeCache(cache.root, group="nope")


def test_read_patch_inside_and_overhanging():
    arr = np.arange(2 * 6 * 5 * 4, dtype=np.float32).reshape(2, 6, 5, 4)
    np.testing.assert_array_equal(read_patch(arr, [1, 1, 0], [3, 2, 4]), arr[:, 1:4, 1:3, 0:4])
    out = read_patch(arr, [-2, 3, 2], [4, 4, 4], pad_value=[-1.0, -2.0])
    np.testing.assert_array_equal(out[:, 2:, :2, :2], arr[:, 0:2, 3:5, 2:4])
    assert (out[0, :2] == -1).all() and (out[1, :, 2:] == -2).all()
    assert (read_patch(arr, [10, 0, 0], [2, 2, 2], 7.0) == 7).all()  # fully outside


def _batches(loader):
    return [(b["view1"].clone(), b["view2"].clone(), b["start"].clone()) for b in loader]


def test_two_view_dataset_reproducible_across_workers(cache):
    data = TwoViewPatchDataset(cache, [16, 16, 16], AugmentConfig(), samples_per_epoch=8, seed=3)
    item = data[0]
    assert item["view1"].shape == (1, 16, 16, 16) and item["view2"].shape == (1, 16, 16, 16)
    assert json.loads(item["ops"]) and len(json.loads(item["ops"])) == 2
    serial = _batches(DataLoader(data, batch_size=4, num_workers=0))
    parallel = _batches(DataLoader(data, batch_size=4, num_workers=2))
    for (a1, a2, s), (b1, b2, t) in zip(serial, parallel):
        torch.testing.assert_close(a1, b1)
        torch.testing.assert_close(a2, b2)
        torch.testing.assert_close(s, t)
    data.set_epoch(1)
    assert not torch.equal(data[0]["view1"], item["view1"])
    other_seed = TwoViewPatchDataset(cache, [16, 16, 16], AugmentConfig(), samples_per_epoch=8, seed=4)
    assert not torch.equal(other_seed[0]["view1"], item["view1"])


def test_two_view_dataset_from_given_boxes(cache):
    boxes = [(1, [0, 0, 0]), (0, [10, 10, 10])]
    data = TwoViewPatchDataset(cache, [16, 16, 16], AugmentConfig(), samples_per_epoch=6, boxes=boxes)
    for i in range(6):
        item = data[i]
        case, start = boxes[item["box"]]
        assert item["case"] == case and item["start"].tolist() == start
