"""Readers and writers: geometry round trips for every format, and every kind of bad input."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from gtgm.data.io import read_label, read_volume, write_cremi, write_nifti, write_volume
from gtgm.errors import InputError
from tests.conftest import save_nifti

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- NIfTI
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_geometry(tmp_path, lps_affine, suffix):
    array = RNG.normal(size=(7, 9, 5)).astype(np.float32)
    src = save_nifti(tmp_path / f"in{suffix}", array, lps_affine)
    vol = read_volume(src)
    assert vol.shape == (7, 9, 5) and vol.axcodes == ("L", "P", "S")
    np.testing.assert_allclose(vol.spacing, [0.8, 0.8, 3.0])
    out = write_volume(tmp_path / f"out{suffix}", vol.array * 2, vol)
    back = read_volume(out)
    np.testing.assert_array_equal(back.affine, vol.affine)
    np.testing.assert_allclose(back.array, array * 2, rtol=1e-6)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_nifti_writer_restores_header_codes(tmp_path, lps_affine):
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), lps_affine)
    img.set_qform(lps_affine, code=1)
    img.set_sform(lps_affine, code=4)  # MNI
    nib.save(img, str(tmp_path / "src.nii.gz"))
    vol = read_volume(tmp_path / "src.nii.gz")
    write_nifti(tmp_path / "dst.nii.gz", np.ones((4, 5, 6), np.uint8), vol.affine, vol.header)
    dst = nib.load(str(tmp_path / "dst.nii.gz"))
    assert int(dst.header["sform_code"]) == 4 and int(dst.header["qform_code"]) == 1
    assert dst.get_data_dtype() == np.uint8
    np.testing.assert_allclose(dst.affine, lps_affine)


# ----------------------------------------------------------------------------- HDF5 (CREMI)
def test_cremi_round_trip(tmp_path):
    raw = RNG.integers(0, 255, (12, 10, 4)).astype(np.uint8)  # (x, y, z)
    ids = RNG.integers(1, 50, (12, 10, 4)).astype(np.uint64)
    path = write_cremi(tmp_path / "sample.hdf", raw, (4.0, 4.0, 40.0), labels=ids)
    with h5py.File(path) as f:
        assert f["volumes/raw"].shape == (4, 10, 12)  # stored (z, y, x)
        assert list(f["volumes/raw"].attrs["resolution"]) == [40.0, 4.0, 4.0]
    vol = read_volume(path)
    lab = read_label(path)
    np.testing.assert_array_equal(vol.array, raw)
    np.testing.assert_array_equal(lab.array, ids)
    assert vol.unit == "nm" and vol.spacing == (4.0, 4.0, 40.0)
    back = read_volume(write_volume(tmp_path / "copy.h5", vol.array, vol))
    np.testing.assert_array_equal(back.affine, vol.affine)


def test_cremi_missing_dataset_lists_keys(tmp_path):
    path = write_cremi(tmp_path / "raw_only.hdf", np.zeros((4, 4, 4), np.uint8), (1, 1, 1))
    with pytest.raises(InputError, match=r"raw_only.hdf.*volumes/labels/neuron_ids.*volumes/raw"):
        read_label(path)


# ----------------------------------------------------------------------------- TIFF (SNEMI3D)
def test_tiff_stack_is_read_as_xyz(tmp_path):
    stack = RNG.integers(0, 255, (5, 8, 6)).astype(np.uint8)  # (z, y, x) pages
    tifffile.imwrite(tmp_path / "train-input.tif", stack, photometric="minisblack")
    vol = read_volume(tmp_path / "train-input.tif", spacing=[6.0, 6.0, 29.0])
    assert vol.shape == (6, 8, 5)
    np.testing.assert_array_equal(vol.array, stack.transpose(2, 1, 0))
    assert vol.spacing == (6.0, 6.0, 29.0)


# ----------------------------------------------------------------------------- DICOM
def write_dicom_series(folder, slices, ipp0=(-100.0, -80.0, 10.0), dz=2.5, spacing=(0.7, 0.6), prefix="IM"):
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    order = RNG.permutation(len(slices))  # files written in shuffled order
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.Modality = series_uid, "CT"
        ds.Rows, ds.Columns = slices[k].shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.ImagePositionPatient = [ipp0[0], ipp0[1], ipp0[2] + dz * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(spacing)
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = slices[k].astype(np.int16).tobytes()
        ds.save_as(folder / f"{prefix}{n:04d}.dcm", enforce_file_format=True)
    return folder


def test_dicom_series_geometry_and_hu(tmp_path):
    slices = [RNG.integers(0, 2000, (5, 4)).astype(np.int16) for _ in range(3)]  # (rows, cols)
    folder = write_dicom_series(tmp_path / "series", slices)
    (folder / "README.txt").write_text("not a DICOM file")
    vol = read_volume(folder)
    assert vol.shape == (4, 5, 3)  # (columns, rows, slices)
    for k in range(3):
        np.testing.assert_array_equal(vol.array[:, :, k], slices[k].T.astype(np.float32) - 1024)
    expected = np.array([[-0.6, 0, 0, 100.0], [0, -0.7, 0, 80.0], [0, 0, 2.5, 10.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, expected)
    assert vol.axcodes == ("L", "P", "S")


def test_dicom_single_slice_and_gaps_are_errors(tmp_path):
    one = write_dicom_series(tmp_path / "one", [np.zeros((4, 4), np.int16)])
    with pytest.raises(InputError, match="one.*2D image"):
        read_volume(one)
    gap = write_dicom_series(tmp_path / "gap", [np.zeros((4, 4), np.int16)] * 4)
    next(p for p in sorted(gap.iterdir()) if float(pydicom.dcmread(p).ImagePositionPatient[2]) == 12.5).unlink()
    with pytest.raises(InputError, match="gap.*irregular slice spacing"):
        read_volume(gap)
    other = write_dicom_series(tmp_path / "mixed", [np.zeros((4, 4), np.int16)] * 2)
    write_dicom_series(other, [np.zeros((4, 4), np.int16)] * 2, ipp0=(0.0, 0.0, 0.0), prefix="B")
    with pytest.raises(InputError, match="mixed.*2 DICOM series"):
        read_volume(other)


# ----------------------------------------------------------------------------- bad input
def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    good = save_nifti(tmp_path / "vol.nii.gz", RNG.normal(size=(20, 20, 20)).astype(np.float32))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated.nii.gz.*truncated or corrupt"):
        read_volume(truncated)
    raw = save_nifti(tmp_path / "raw.nii", RNG.normal(size=(20, 20, 20)).astype(np.float32))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw.read_bytes()[:1000])
    with pytest.raises(InputError, match="cut.nii"):
        read_volume(cut)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a volume" * 10)
    with pytest.raises(InputError, match="garbage.nii.gz"):
        read_volume(garbage)
    h5 = write_cremi(tmp_path / "em.hdf", np.zeros((30, 30, 8), np.uint8), (4, 4, 40))
    broken = tmp_path / "broken.hdf"
    broken.write_bytes(h5.read_bytes()[:800])
    with pytest.raises(InputError, match="broken.hdf"):
        read_volume(broken)
    with pytest.raises(InputError, match="missing.nii.gz.*not found"):
        read_volume(tmp_path / "missing.nii.gz")


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 1)])
def test_2d_images_are_rejected(tmp_path, shape):
    path = save_nifti(tmp_path / "flat.nii.gz", np.zeros(shape, np.float32))
    with pytest.raises(InputError, match="flat.nii.gz.*2D image"):
        read_volume(path)


def test_4d_needs_a_channel_choice(tmp_path):
    data = RNG.normal(size=(6, 6, 6, 3)).astype(np.float32)
    path = save_nifti(tmp_path / "multi.nii.gz", data)
    with pytest.raises(InputError, match=r"multi.nii.gz.*4D volume with 3 channels"):
        read_volume(path)
    np.testing.assert_array_equal(read_volume(path, channel=2).array, data[..., 2])
    with pytest.raises(InputError, match="channel 5 out of range"):
        read_volume(path, channel=5)
    single = save_nifti(tmp_path / "single.nii.gz", data[..., :1])  # trailing singleton: squeezed
    assert read_volume(single).shape == (6, 6, 6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_voxels_are_rejected(tmp_path, bad):
    data = np.zeros((6, 6, 6), np.float32)
    data[1, 2, 3] = bad
    path = save_nifti(tmp_path / "nonfinite.nii.gz", data)
    with pytest.raises(InputError, match="nonfinite.nii.gz.*NaN"):
        read_volume(path)


def test_labels_must_be_non_negative_integers(tmp_path):
    frac = np.zeros((6, 6, 6), np.float32)
    frac[0, 0, 0] = 0.5
    with pytest.raises(InputError, match="fractional.nii.gz.*non-integer"):
        read_label(save_nifti(tmp_path / "fractional.nii.gz", frac))
    neg = np.zeros((6, 6, 6), np.int16)
    neg[0, 0, 0] = -1
    with pytest.raises(InputError, match="negative.nii.gz.*negative"):
        read_label(save_nifti(tmp_path / "negative.nii.gz", neg))
    ok = np.zeros((6, 6, 6), np.float32)
    ok[1, 1, 1] = 3.0  # float storage of whole numbers is fine
    lab = read_label(save_nifti(tmp_path / "ok.nii.gz", ok))
    assert lab.array.dtype == np.uint8 and lab.array.max() == 3
