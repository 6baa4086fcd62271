"""Dataset layouts: MSD / gtgm dataset.json, nnU-Net raw, plain folders, CREMI, TIFF, DICOM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from gtgm.data.datasets import load_dataset
from gtgm.data.io import write_cremi
from gtgm.errors import InputError
from tests.conftest import save_nifti
from tests.data.test_io import write_dicom_series


def _msd(root, training, **extra):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "toy",
                "modality": {"0": "CT"},
                "labels": {"0": "background", "1": "organ"},
                "training": training,
                **extra,
            }
        )
    )
    return root


def test_msd_dataset_json(tmp_path):
    for name in ("a", "b"):
        save_nifti(tmp_path / "imagesTr" / f"{name}.nii.gz", np.zeros((8, 8, 8), np.float32))
        save_nifti(tmp_path / "labelsTr" / f"{name}.nii.gz", np.zeros((8, 8, 8), np.uint8))
    save_nifti(tmp_path / "imagesTs" / "c.nii.gz", np.zeros((8, 8, 8), np.float32))
    training = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in ("a", "b")]
    ds = load_dataset(_msd(tmp_path, training, test=["./imagesTs/c.nii.gz"]))
    assert [c.id for c in ds.cases] == ["a", "b", "c"]
    assert [c.split for c in ds.cases] == ["train", "train", "test"]
    assert all(c.modality == "CT" for c in ds.cases)
    assert ds.cases[0].label is not None and ds.cases[2].label is None
    assert ds.groups["default"]["labels"] == {0: "background", 1: "organ"}
    assert len(ds.select(labeled=True)) == 2


def test_one_file_name_in_two_folders_is_renamed_and_said(tmp_path, capsys):
    save_nifti(tmp_path / "imagesTr" / "a.nii.gz", np.zeros((8, 8, 8), np.float32))
    save_nifti(tmp_path / "imagesTs" / "a.nii.gz", np.zeros((8, 8, 8), np.float32))
    ds = load_dataset(_msd(tmp_path, ["./imagesTr/a.nii.gz"], test=["./imagesTs/a.nii.gz"]))
    assert [c.id for c in ds.cases] == ["a", "a_test0"]
    assert "test[0] is the second case named 'a': called 'a_test0'" in capsys.readouterr().out


def test_msd_multichannel_uses_modality_channels(tmp_path):
    save_nifti(tmp_path / "imagesTr" / "brain.nii.gz", np.zeros((8, 8, 8, 2), np.float32))
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "modality": {"0": "FLAIR", "1": "T1w"},
                "labels": {"0": "background"},
                "training": [{"image": "./imagesTr/brain.nii.gz", "label": None}],
            }
        )
    )
    case = load_dataset(tmp_path).cases[0]
    assert [r.channel for r in case.images] == [0, 1] and case.modality == "MRI"


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"image": "./imagesTr/missing.nii.gz"}, r"dataset.json: training\[0\].image: file not found.*missing.nii.gz"),
        ({"image": "../outside.nii.gz"}, r"dataset.json: training\[0\].image: '../outside.nii.gz' points outside"),
        ({"label": "./imagesTr/a.nii.gz"}, r"dataset.json: training\[0\].image: missing file path"),
        (
            {"image": "./imagesTr/a.nii.gz", "label": "/etc/passwd"},
            r"training\[0\].label: '/etc/passwd' points outside",
        ),
    ],
)
def test_bad_dataset_entries_name_the_file(tmp_path, entry, match):
    root = tmp_path / "ds"
    save_nifti(root / "imagesTr" / "a.nii.gz", np.zeros((8, 8, 8), np.float32))
    save_nifti(tmp_path / "outside.nii.gz", np.zeros((8, 8, 8), np.float32))
    with pytest.raises(InputError, match=match):
        load_dataset(_msd(root, [entry]))


def test_broken_dataset_json(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="dataset.json: not valid JSON"):
        load_dataset(tmp_path)
    _msd(tmp_path, [])
    with pytest.raises(InputError, match="no 'training' or 'test' entries"):
        load_dataset(tmp_path)


def _nnunet(root, n_cases=2, channels=("T2", "ADC"), num_training=None):
    for i in range(n_cases):
        for c in range(len(channels)):
            save_nifti(root / "imagesTr" / f"prostate_{i:03d}_{c:04d}.nii.gz", np.zeros((8, 8, 8), np.float32))
        save_nifti(root / "labelsTr" / f"prostate_{i:03d}.nii.gz", np.zeros((8, 8, 8), np.uint8))
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {str(c): n for c, n in enumerate(channels)},
                "labels": {"background": 0, "PZ": 1, "TZ": 2},
                "numTraining": n_cases if num_training is None else num_training,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


def test_nnunet_raw_layout(tmp_path):
    ds = load_dataset(_nnunet(tmp_path))
    assert [c.id for c in ds.cases] == ["prostate_000", "prostate_001"]
    assert [r.path.name for r in ds.cases[0].images] == ["prostate_000_0000.nii.gz", "prostate_000_0001.nii.gz"]
    assert ds.cases[0].label.path.name == "prostate_000.nii.gz"
    assert ds.groups["default"]["labels"] == {0: "background", 1: "PZ", 2: "TZ"}


def test_nnunet_errors(tmp_path):
    with pytest.raises(InputError, match="numTraining is 5 but imagesTr holds 2"):
        load_dataset(_nnunet(tmp_path / "a", num_training=5))
    root = _nnunet(tmp_path / "b")
    (root / "imagesTr" / "prostate_001_0001.nii.gz").unlink()
    with pytest.raises(InputError, match="prostate_001_0001.nii.gz"):
        load_dataset(root)


def test_plain_folder_needs_modality(tmp_path):
    save_nifti(tmp_path / "x.nii.gz", np.zeros((8, 8, 8), np.float32))
    with pytest.raises(InputError, match="--modality"):
        load_dataset(tmp_path)
    ds = load_dataset(tmp_path, modality="CT")
    assert ds.cases[0].id == "x" and ds.cases[0].modality == "CT"


def test_cremi_tiff_and_dicom_folders(tmp_path):
    write_cremi(
        tmp_path / "cremi" / "sample_A.hdf",
        np.zeros((8, 8, 4), np.uint8),
        (4, 4, 40),
        labels=np.ones((8, 8, 4), np.uint64),
    )
    case = load_dataset(tmp_path / "cremi").cases[0]
    assert case.modality == "EM" and case.label.key == "volumes/labels/neuron_ids"
    assert load_dataset(tmp_path / "cremi" / "sample_A.hdf").cases[0].id == "sample_A"

    tif = tmp_path / "snemi"
    tif.mkdir()
    tifffile.imwrite(tif / "train-input.tif", np.zeros((4, 8, 8), np.uint8), photometric="minisblack")
    tifffile.imwrite(tif / "train-labels.tif", np.ones((4, 8, 8), np.uint16), photometric="minisblack")
    tifffile.imwrite(tif / "test-input.tif", np.zeros((4, 8, 8), np.uint8), photometric="minisblack")
    cases = {c.id: c for c in load_dataset(tif, spacing=[6, 6, 29]).cases}
    assert set(cases) == {"train", "test"}
    assert cases["train"].label.path.name == "train-labels.tif" and cases["test"].label is None
    assert cases["train"].spacing == [6, 6, 29]

    write_dicom_series(tmp_path / "dicoms" / "s1", [np.zeros((4, 4), np.int16)] * 3)
    write_dicom_series(tmp_path / "dicoms" / "s2", [np.zeros((4, 4), np.int16)] * 3)
    assert [c.id for c in load_dataset(tmp_path / "dicoms").cases] == ["s1", "s2"]
    assert [c.id for c in load_dataset(tmp_path / "dicoms" / "s1").cases] == ["s1"]


def test_missing_dataset(tmp_path):
    with pytest.raises(InputError, match="nowhere.*not found"):
        load_dataset(tmp_path / "nowhere")
