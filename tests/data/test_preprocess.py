"""Preprocessing: RAS reorientation, resampling, normalisation, idempotence, atomic failure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gtgm.cli import main
from gtgm.config import PreprocessConfig
from gtgm.data.datasets import load_dataset
from gtgm.data.geometry import from_ras, resample, to_ras
from gtgm.data.normalize import normalize_ct, normalize_em, normalize_mri
from gtgm.data.preprocess import preprocess_dataset
from gtgm.errors import GtgmError
from tests.conftest import save_nifti

RNG = np.random.default_rng(1)


def test_to_ras_matches_nibabel_canonical(lps_affine):
    import nibabel as nib

    aff = lps_affine[:, [1, 2, 0, 3]]  # permuted axes too: P, S, L
    data = RNG.normal(size=(5, 6, 7)).astype(np.float32)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, aff))
    ras, ras_aff, transform = to_ras(data[None], aff)
    np.testing.assert_array_equal(ras[0], np.asarray(canonical.dataobj))
    np.testing.assert_allclose(ras_aff, canonical.affine)
    np.testing.assert_array_equal(from_ras(ras, transform)[0], data)


def test_resample_keeps_world_positions():
    aff = np.diag([2.0, 2.0, 4.0, 1.0])
    aff[:3, 3] = [10, -5, 3]
    x = np.indices((20, 20, 10)).sum(0).astype(np.float32)  # linear ramp: trilinear is exact
    out, new_aff = resample(x, aff, [1.0, 1.0, 2.0], order=1)
    assert out.shape == (40, 40, 20)
    np.testing.assert_allclose(np.linalg.norm(new_aff[:3, :3], axis=0), [1, 1, 2])
    np.testing.assert_allclose(new_aff[:3, 3], aff[:3, 3])  # voxel 0 stays put
    np.testing.assert_allclose(out[4, 6, 2], x[2, 3, 1], atol=1e-4)  # same world point
    labels = (x > 20).astype(np.uint8) * 3
    lab, _ = resample(labels, aff, [1.0, 1.0, 2.0], order=0)
    assert set(np.unique(lab)) == {0, 3}


def test_normalisations():
    hu = np.array([-2000, -1000, 0, 1000, 3000], np.int16).reshape(1, 1, 5)
    ct, rec = normalize_ct(hu, [-1000, 1000])
    np.testing.assert_allclose(ct.ravel(), [0, 0, 0.5, 1, 1])
    assert rec["window"] == [-1000, 1000]
    mri = np.zeros((20, 20, 20), np.float32)
    mri[5:15, 5:15, 5:15] = RNG.normal(500, 50, (10, 10, 10))
    z, rec = normalize_mri(mri, [0.5, 99.5], 0.05)
    fg = z[5:15, 5:15, 5:15]
    assert abs(fg.mean()) < 0.05 and abs(fg.std() - 1) < 0.1
    assert rec["foreground_fraction"] == pytest.approx(0.125)
    em, _ = normalize_em(np.array([0, 51, 255], np.uint8).reshape(1, 1, 3))
    np.testing.assert_allclose(em.ravel(), [0, 0.2, 1])


def _toy_dataset(root, lps_affine, n=3, label_shape=None):
    training = []
    for i in range(n):
        hu = RNG.integers(-1000, 1000, (16, 12, 8)).astype(np.int16)
        lab = np.zeros((16, 12, 8), np.uint8)
        lab[4:8, 3:6, 2:5] = 1
        if label_shape is not None and i == n - 1:
            lab = np.zeros(label_shape, np.uint8)
        save_nifti(root / "imagesTr" / f"c{i}.nii.gz", hu, lps_affine)
        save_nifti(root / "labelsTr" / f"c{i}.nii.gz", lab, lps_affine)
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (root / "dataset.json").write_text(
        json.dumps({"modality": {"0": "CT"}, "labels": {"0": "bg", "1": "x"}, "training": training})
    )
    return root


def test_cache_content_and_geometry(tmp_path, lps_affine):
    import nibabel as nib

    root = _toy_dataset(tmp_path / "raw", lps_affine)
    index = preprocess_dataset(load_dataset(root), tmp_path / "cache", PreprocessConfig(), progress=False)
    assert [c["id"] for c in index["cases"]] == ["c0", "c1", "c2"]
    image = np.load(tmp_path / "cache" / "volumes" / "c0.npy", mmap_mode="r")
    label = np.load(tmp_path / "cache" / "volumes" / "c0.label.npy")
    meta = json.loads((tmp_path / "cache" / "volumes" / "c0.json").read_text())
    src = nib.as_closest_canonical(nib.load(str(root / "imagesTr" / "c0.nii.gz")))
    expected = (np.clip(np.asarray(src.dataobj, np.float32), -1000, 1000) + 1000) / 2000
    assert image.shape == (1, 16, 12, 8) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], expected, atol=1e-6)
    np.testing.assert_allclose(meta["affine"], src.affine)
    assert meta["original"]["axcodes"] == "LPS" and meta["normalization"][0]["method"] == "ct_window"
    assert label.dtype == np.uint8 and label.sum() == 36
    with np.load(tmp_path / "cache" / "volumes" / "c0.fg.npz") as fg:
        locs = fg["class_1"]
    assert len(locs) == 36 and (label[tuple(locs.T)] == 1).all()


def test_resampled_cache(tmp_path, lps_affine):
    root = _toy_dataset(tmp_path / "raw", lps_affine, n=1)
    cfg = PreprocessConfig(target_spacing=[1.6, 1.6, 1.5])
    index = preprocess_dataset(load_dataset(root), tmp_path / "cache", cfg, progress=False)
    assert index["cases"][0]["shape"] == [8, 6, 16]
    np.testing.assert_allclose(index["cases"][0]["spacing"], [1.6, 1.6, 1.5])
    label = np.load(tmp_path / "cache" / "volumes" / "c0.label.npy")
    assert label.shape == (8, 6, 16) and set(np.unique(label)) == {0, 1}


def test_rerun_skips_unchanged_and_redoes_changed(tmp_path, lps_affine):
    root = _toy_dataset(tmp_path / "raw", lps_affine)
    cache = tmp_path / "cache"
    preprocess_dataset(load_dataset(root), cache, PreprocessConfig(), progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (cache / "volumes").iterdir()}
    preprocess_dataset(load_dataset(root), cache, PreprocessConfig(), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "volumes").iterdir()} == mtimes
    save_nifti(root / "imagesTr" / "c1.nii.gz", np.zeros((16, 12, 8), np.int16), lps_affine)  # input changed
    preprocess_dataset(load_dataset(root), cache, PreprocessConfig(), progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (cache / "volumes").iterdir()}
    assert after["c0.npy"] == mtimes["c0.npy"] and after["c1.npy"] != mtimes["c1.npy"]
    preprocess_dataset(load_dataset(root), cache, PreprocessConfig(ct_window=[-100, 100]), progress=False)
    assert (cache / "volumes" / "c0.npy").stat().st_mtime_ns != mtimes["c0.npy"]  # config changed


def test_the_same_dataset_by_a_relative_and_an_absolute_path_is_one_dataset(tmp_path, lps_affine, monkeypatch):
    root = _toy_dataset(tmp_path / "raw", lps_affine)
    monkeypatch.chdir(tmp_path)
    preprocess_dataset(load_dataset("raw"), tmp_path / "cache", PreprocessConfig(), progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "volumes").iterdir()}
    preprocess_dataset(load_dataset(root.resolve()), tmp_path / "cache", PreprocessConfig(), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "volumes").iterdir()} == mtimes
    other = _toy_dataset(tmp_path / "other", lps_affine)  # the same case ids from another folder: still refused
    with pytest.raises(GtgmError, match="already cached from dataset"):
        preprocess_dataset(load_dataset(other), tmp_path / "cache", PreprocessConfig(), progress=False)
    _toy_dataset(tmp_path / "elsewhere" / "raw", lps_affine)  # the same relative name, from another directory
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(GtgmError, match="already cached from dataset"):
        preprocess_dataset(load_dataset("raw"), tmp_path / "cache", PreprocessConfig(), progress=False)


def test_bad_case_leaves_nothing_and_names_the_file(tmp_path, lps_affine):
    root = _toy_dataset(tmp_path / "raw", lps_affine, label_shape=(16, 12, 9))
    cache = tmp_path / "cache"
    with pytest.raises(GtgmError, match=r"labelsTr/c2.nii.gz: label shape \(16, 12, 9\) differs"):
        preprocess_dataset(load_dataset(root), cache, PreprocessConfig(), progress=False)
    names = sorted(p.name for p in (cache / "volumes").iterdir())
    assert not any(n.startswith("c2") for n in names), names
    assert not any(".tmp" in n for n in names), names
    assert {"c0.npy", "c0.json", "c1.npy", "c1.json"} <= set(names)
    assert not (cache / "index.json").exists()


@pytest.mark.parametrize("problem", ["nan", "float_label", "truncated"])
def test_cli_preprocess_bad_input_exit_code(tmp_path, lps_affine, capsys, problem):
    root = _toy_dataset(tmp_path / "raw", lps_affine, n=1)
    bad = root / ("labelsTr" if problem == "float_label" else "imagesTr") / "c0.nii.gz"
    if problem == "nan":
        data = np.zeros((16, 12, 8), np.float32)
        data[0, 0, 0] = np.nan
        save_nifti(bad, data, lps_affine)
    elif problem == "float_label":
        save_nifti(bad, np.full((16, 12, 8), 0.25, np.float32), lps_affine)
    else:
        bad.write_bytes(bad.read_bytes()[:200])
    code = main(["data", "preprocess", str(root), "--out", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 1 and str(bad) in err, err
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no file, and no empty folder left
    assert not (tmp_path / "cache").exists()


def test_parallel_workers_match_serial(tmp_path, lps_affine):
    root = _toy_dataset(tmp_path / "raw", lps_affine)
    preprocess_dataset(load_dataset(root), tmp_path / "a", PreprocessConfig(), workers=1, progress=False)
    preprocess_dataset(load_dataset(root), tmp_path / "b", PreprocessConfig(), workers=2, progress=False)
    for i in range(3):
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / "volumes" / f"c{i}.npy"), np.load(tmp_path / "b" / "volumes" / f"c{i}.npy")
        )
