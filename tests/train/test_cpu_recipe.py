"""The CPU fine-tuning recipe (preset finetune/cpu-small), briefly, on tiny whole-body CT phantoms.

Liver and spleen have the same intensity; only their side of the body tells them apart. 250 steps (~25 s) of
the recipe (whole-body patches, class-weighted CE + Dice, lr 0.01 with cosine decay) must lower the loss and
put the predicted liver on the patient's right and the spleen on the left of a held-out phantom (predicted from
its raw NIfTI, at a finer spacing than the model's: class probabilities are resampled to it).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from gtgm.cli import main
from gtgm.data.phantom_ct import CT_LABELS, make_ct_phantom
from gtgm.fsutil import write_json
from tests.conftest import save_nifti

SHAPE, SPACING = (60, 60, 30), (6.0, 10.0)  # 360 mm x 360 mm x 300 mm
CACHED = [9.0, 9.0, 15.0]  # preprocess.group_spacing: 40 x 40 x 20, the whole body in one patch


@pytest.fixture(scope="module")
def tiny_ct(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tiny_ct")
    training = []
    for seed in range(7):
        hu, lab, affine = make_ct_phantom(seed, SHAPE, SPACING)
        save_nifti(root / "raw" / "imagesTr" / f"ct_{seed}.nii.gz", hu, affine)
        save_nifti(root / "raw" / "labelsTr" / f"ct_{seed}.nii.gz", lab, affine)
        training.append({"image": f"imagesTr/ct_{seed}.nii.gz", "label": f"labelsTr/ct_{seed}.nii.gz"})
    hu, lab, affine = make_ct_phantom(100, SHAPE, SPACING)  # held out: predicted from its raw NIfTI
    save_nifti(root / "heldout" / "ct_100.nii.gz", hu, affine)
    save_nifti(root / "heldout_label" / "ct_100.nii.gz", lab, affine)
    labels = {str(k): v for k, v in CT_LABELS.items()}
    write_json(root / "raw" / "dataset.json", {"modality": {"0": "CT"}, "labels": labels, "training": training})
    spacing = f"preprocess.group_spacing={{default: {CACHED}}}"
    assert main(["data", "preprocess", str(root / "raw"), "--out", str(root / "cache"), spacing]) == 0
    return root


def test_cpu_recipe_learns_which_side_liver_and_spleen_are_on(tiny_ct):
    root = tiny_ct
    code = main(
        [
            "finetune",
            str(root / "cache"),
            "--out",
            str(root / "ft"),
            "--config",
            "finetune/cpu-small",
            "model.channels=[8,16,32]",
            "finetune.patch_size=[40,40,20]",
            "finetune.steps=250",
            "finetune.val_every=125",
            "finetune.checkpoint_every=125",
            "finetune.log_every=5",
            "finetune.test_fraction=0.15",
            "finetune.val_fraction=0.15",
        ]
    )
    assert code == 0
    losses = [r["loss"] for r in map(json.loads, (root / "ft" / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:2])
    assert torch.load(root / "ft" / "best.pt", weights_only=True)["preprocess"]["target_spacing"] == CACHED
    assert main(["predict", str(root / "ft" / "best.pt"), str(root / "heldout"), "--out", str(root / "pred")]) == 0
    pred = nib.as_closest_canonical(nib.load(root / "pred" / "ct_100.nii.gz")).get_fdata()  # RAS: +x = right
    assert pred.shape == SHAPE  # probabilities resampled from the 9 x 9 x 15 mm grid back to the input's
    ref = nib.as_closest_canonical(nib.load(root / "heldout_label" / "ct_100.nii.gz")).get_fdata()
    midline = np.nonzero(ref > 0)[0].mean()
    liver, spleen = np.nonzero(pred == 1)[0], np.nonzero(pred == 2)[0]
    assert liver.size > 0.3 * (ref == 1).sum() and spleen.size > 0.3 * (ref == 2).sum()
    assert liver.mean() > midline + 4 and spleen.mean() < midline - 4  # voxels of 6 mm
    assert (pred[int(round(midline)) + 1 :] == 2).sum() < 0.2 * spleen.size  # few spleen voxels on the right
    assert (pred[: int(round(midline))] == 1).sum() < 0.2 * liver.size  # few liver voxels on the left
    # post-processing chosen on validation, stored in best.pt, applied by predict: one component per chosen class
    best = torch.load(root / "ft" / "best.pt", weights_only=True)
    chosen = best["postprocess"]["keep_largest"]
    test = json.loads((root / "ft" / "test_metrics.json").read_text())["test"]
    assert test["keep_largest"] == chosen and 0.0 <= test["dice_raw"] <= 1.0
    for c in chosen:
        assert ndimage.label(pred == c, structure=np.ones((3, 3, 3)))[1] <= 1, f"class {c}: islands left"
