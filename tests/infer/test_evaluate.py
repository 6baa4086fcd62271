"""``gtgm evaluate``: scores in world space, empty references, classes only a prediction has, ambiguous names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gtgm.cli import main
from tests.conftest import save_nifti


def _labels(shape=(12, 10, 8)) -> np.ndarray:
    rng = np.random.default_rng(0)
    lab = np.zeros(shape, np.uint8)
    lab[2:7, 1:6, 1:5] = 1
    lab[6:11, 5:9, 3:7] = 2
    lab[rng.random(shape) < 0.05] = 3  # asymmetric speckle: any wrong voxel order is seen
    return lab


def _evaluate(tmp_path, *extra) -> dict:
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--out", str(tmp_path / "m"), *extra])
    assert code == 0
    return json.loads((tmp_path / "m" / "metrics.json").read_text())


def test_a_flipped_and_permuted_copy_scores_one(tmp_path, lps_affine):
    lab = _labels()
    save_nifti(tmp_path / "ref" / "a.nii.gz", lab, lps_affine)
    # x flipped in the array and in the affine: the same label map in world space
    flip = lps_affine.copy()
    flip[:3, 0] *= -1
    flip[:3, 3] = lps_affine[:3, :3] @ [lab.shape[0] - 1, 0, 0] + lps_affine[:3, 3]
    save_nifti(tmp_path / "pred" / "a.nii.gz", lab[::-1].copy(), flip)
    # and a second case with x and z swapped
    save_nifti(tmp_path / "ref" / "b.nii.gz", lab, lps_affine)
    save_nifti(tmp_path / "pred" / "b.nii.gz", lab.transpose(2, 1, 0).copy(), lps_affine[:, [2, 1, 0, 3]])
    res = _evaluate(tmp_path)
    assert {r["dice"] for r in res["rows"]} == {1.0}
    assert {r["hd95"] for r in res["rows"]} == {0.0}


@pytest.mark.parametrize(
    "change",
    ["spacing", "shift_half_voxel", "smaller"],
)
def test_a_prediction_on_another_grid_is_refused(tmp_path, capsys, lps_affine, change):
    lab = _labels()
    aff, pred = lps_affine.copy(), lab
    if change == "spacing":
        aff[:3, :3] *= 2
    elif change == "shift_half_voxel":
        aff[0, 3] += 0.4
    else:
        pred = lab[:-2]
    save_nifti(tmp_path / "ref" / "a.nii.gz", lab, lps_affine)
    save_nifti(tmp_path / "pred" / "a.nii.gz", pred, aff)
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "a.nii.gz" in err and "not on its reference's grid" in err and "reference a.nii.gz: shape" in err
    assert not (tmp_path / "m" / "metrics.json").exists()


def test_empty_references_are_scored(tmp_path):
    empty = np.zeros((8, 8, 8), np.uint8)
    save_nifti(tmp_path / "ref" / "normal.nii.gz", empty)
    save_nifti(tmp_path / "pred" / "normal.nii.gz", empty)
    assert _evaluate(tmp_path)["rows"] == [{"case": "normal", "class": 1, "dice": 1.0, "hd95": 0.0}]
    fp = empty.copy()
    fp[2:4, 2:4, 2:4] = 1
    save_nifti(tmp_path / "pred" / "normal.nii.gz", fp)
    row = _evaluate(tmp_path)["rows"][0]
    assert row["dice"] == 0.0 and np.isnan(row["hd95"])


def test_a_class_no_reference_has_counts_as_a_false_positive(tmp_path):
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[1:4, 1:4, 1:4] = 1
    pred = ref.copy()
    pred[5:7, 5:7, 5:7] = 2
    save_nifti(tmp_path / "ref" / "a.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "a.nii.gz", pred)
    res = _evaluate(tmp_path)
    assert res["classes"] == [1, 2]
    assert res["mean"]["1"]["dice"] == 1.0 and res["mean"]["2"]["dice"] == 0.0
    # the classes a user names are the ones scored
    assert _evaluate(tmp_path, "--classes", "1")["classes"] == [1]


def test_two_files_of_one_case_are_refused(tmp_path, capsys):
    lab = _labels()
    save_nifti(tmp_path / "ref" / "a.nii.gz", lab)
    save_nifti(tmp_path / "pred" / "a.nii.gz", lab)
    save_nifti(tmp_path / "pred" / "a.nii", lab)
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code != 0 and "a.nii" in err and "a.nii.gz" in err and "same case" in err


def test_em_references_may_be_a_plain_folder_of_nifti_neuron_ids(tmp_path):
    import h5py

    ids = np.zeros((12, 10, 6), np.int64)  # (x, y, z)
    ids[:6], ids[6:] = 1, 2
    save_nifti(tmp_path / "ref" / "a.nii.gz", ids.astype(np.int32))
    (tmp_path / "pred").mkdir()
    with h5py.File(tmp_path / "pred" / "a.hdf", "w") as f:
        f.create_dataset("volumes/labels/neuron_ids", data=ids.transpose(2, 1, 0))  # CREMI order (z, y, x)
    argv = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--task", "em", "--out", str(tmp_path / "m")]
    assert main(argv) == 0
    res = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert res["mean"]["voi"] == pytest.approx(0.0, abs=1e-9) and res["mean"]["arand"] == pytest.approx(0.0, abs=1e-9)
