"""EM end to end on tiny synthetic volumes: preprocess -> finetune --task em -> predict -> evaluate."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile
import torch

from gtgm.cli import main
from gtgm.config import FinetuneConfig
from gtgm.data.io import write_cremi
from gtgm.data.patches import VolumeCache
from gtgm.data.splits import IGNORE, make_split
from gtgm.data.synthetic_em import EM_RESOLUTION_XYZ, make_em_volume
from gtgm.metrics import neuron_scores
from gtgm.train.losses import affinity_loss

TINY = [
    "model.channels=[4,8,16]",
    "finetune.patch_size=[32,32,8]",
    "finetune.batch_size=2",
    "finetune.steps=3",
    "finetune.val_every=3",
    "finetune.warmup_steps=1",
    "finetune.region_bounds=[0.5,0.625]",
    "em.thresholds=[0.3,0.5]",
]


@pytest.fixture(scope="module")
def em_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("em")
    for i in range(2):
        raw, ids = make_em_volume(seed=10 + i, shape=(40, 40, 16), n_cells=8)
        write_cremi(root / "raw" / f"vol{i}.hdf", raw, EM_RESOLUTION_XYZ, labels=ids)
    assert main(["data", "preprocess", str(root / "raw"), "--out", str(root / "cache")]) == 0
    return root


def test_em_split_cuts_every_volume_along_z(em_data):
    cache = VolumeCache(em_data / "cache", labeled=True)
    cfg = FinetuneConfig(split="region", region_axis=2, region_bounds=[0.5, 0.625], label_slices="block")
    split = make_split(cache, cfg)
    assert [p.case for p in split["train"]] == [0, 1] == [p.case for p in split["test"]]
    assert [(p.lo[2], p.hi[2]) for p in split["train"]] == [(0, 8)] * 2
    assert [(p.lo[2], p.hi[2]) for p in split["val"]] == [(8, 10)] * 2
    assert [(p.lo[2], p.hi[2]) for p in split["test"]] == [(10, 16)] * 2
    quarter = make_split(cache, FinetuneConfig(**{**cfg.__dict__, "label_ratio": 0.25}))
    assert [p.slices for p in quarter["train"]] == [[3, 4], [3, 4]]  # a central block: z pairs stay learnable


def test_affinity_loss_weights_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0]).reshape(1, 1, 4, 1, 1)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(logits.shape)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(logits.shape)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten()
    plain = affinity_loss(logits, target, mask, "bce", balance=False)
    assert plain.item() == pytest.approx(bce[:3].mean().item())
    balanced = affinity_loss(logits, target, mask, "bce", balance=True)  # 1 connected, 2 cut pairs known
    assert balanced.item() == pytest.approx((bce[0] / 2 + (bce[1] + bce[2]) / 4).item())
    mse = affinity_loss(logits, target, mask, "mse", balance=False)
    assert mse.item() == pytest.approx(((logits.sigmoid().flatten()[:3] - target.flatten()[:3]) ** 2).mean().item())


def test_finetune_predict_evaluate_em(em_data, tmp_path, capsys):
    run = tmp_path / "ft"
    args = ["finetune", str(em_data / "cache"), "--config", "finetune/em-synthetic", "--task", "em"]
    assert main([*args, "--label-ratio", "0.25", "--out", str(run), "finetune.group=null", *TINY]) == 0
    assert "test VOI split" in capsys.readouterr().out
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["task"] == "em" and best["num_classes"] == 3 and best["em"]["threshold"] in (0.3, 0.5)
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["labelled_slices"] == [2, 2]
    assert {"voi_split", "voi_merge", "arand", "cremi"} <= set(metrics["test"])

    out = tmp_path / "pred"
    assert main(["predict", str(run / "best.pt"), str(em_data / "raw"), "--out", str(out), "--task", "em"]) == 0
    with h5py.File(out / "vol0.hdf", "r") as f:
        assert f["volumes/labels/neuron_ids"].shape == (16, 40, 40)  # stored (z, y, x) as CREMI
        assert f["volumes/predictions/affinities"].shape == (3, 16, 40, 40)
        assert list(f["volumes/labels/neuron_ids"].attrs["resolution"]) == [40.0, 8.0, 8.0]
        seg = f["volumes/labels/neuron_ids"][:].transpose(2, 1, 0)
        affs = f["volumes/predictions/affinities"][:]
    assert seg.min() >= 1 and 0.0 <= affs.min() and affs.max() <= 1.0
    assert main(["evaluate", str(out), str(em_data / "raw"), "--task", "em", "--border-nm", "16"]) == 0
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    with h5py.File(em_data / "raw" / "vol0.hdf", "r") as f:
        gt = f["volumes/labels/neuron_ids"][:].transpose(2, 1, 0).astype(np.int64)
    expected = neuron_scores(seg.astype(np.int64), gt, border=2.0)
    assert rows[0]["case"] == "vol0" and rows[0]["voi"] == pytest.approx(expected["voi"])
    assert (out / "metrics.csv").read_text().splitlines()[0] == "case,voi_split,voi_merge,voi,arand,cremi"
    tiff = tmp_path / "snemi"  # the same reference as SNEMI3D-style TIFF stacks (no resolution: the prediction's)
    tiff.mkdir()
    tifffile.imwrite(tiff / "vol0-input.tif", np.zeros(gt.shape[::-1], np.uint8))
    tifffile.imwrite(tiff / "vol0-labels.tif", gt.transpose(2, 1, 0).astype(np.uint32))
    assert main(["evaluate", str(out), str(tiff), "--task", "em", "--border-nm", "16", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["rows"][0]["voi"] == pytest.approx(expected["voi"])

    assert (
        main(["predict", str(run / "best.pt"), str(em_data / "raw"), "--out", str(out), "--task", "segmentation"]) == 1
    )
    assert "trained for task 'em'" in capsys.readouterr().err


def test_instance_labels_need_the_em_task(em_data, tmp_path, capsys):
    code = main(["finetune", str(em_data / "cache"), "--out", str(tmp_path / "x"), *TINY, "model.channels=[4,8,16]"])
    assert code == 1 and "finetune.task=em" in capsys.readouterr().err


def test_ignored_labels_make_unknown_affinities(em_data):
    cache = VolumeCache(em_data / "cache", labeled=True)
    lab = torch.from_numpy(np.asarray(cache.label(0)).astype(np.int64))
    lab[:, :, 8:] = IGNORE
    from gtgm.em.affinities import NEAREST_ZYX, affinities_torch, offsets_xyz

    _, mask = affinities_torch(lab, offsets_xyz(NEAREST_ZYX))
    assert mask[0, :, :, 8:].sum() == 0 and mask[0, :, :, 1:8].all()  # z pairs: known only inside sections 0-7
