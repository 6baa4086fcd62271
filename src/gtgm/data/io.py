"""Read and write 3D volumes with their geometry.

Every reader returns a :class:`Volume`: a 3D array in *array order* plus a 4×4 affine mapping voxel
indices (i, j, k) to world coordinates. Conventions:

* NIfTI and DICOM: world is RAS+ in millimetres (DICOM's LPS is converted), the array keeps the file's
  own axis order (preprocessing reorients to RAS).
* CREMI HDF5 and TIFF stacks store sections as (z, y, x); gtgm transposes them to (x, y, z) so that
  axis 2 is always the slice axis, and the affine is ``diag(res_x, res_y, res_z)`` in nanometres.

Bad input raises :class:`~gtgm.errors.InputError` whose message starts with the file's path: unreadable
or truncated files, 2D images, 4D volumes without a channel choice, NaN/Inf voxels, non-integer labels.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import pydicom
import tifffile
from pydicom.errors import InvalidDicomError

from gtgm.errors import InputError
from gtgm.fsutil import atomic_path, fits_in_memory

NIFTI_SUFFIXES = (".nii", ".nii.gz")
HDF5_SUFFIXES = (".h5", ".hdf", ".hdf5")
TIFF_SUFFIXES = (".tif", ".tiff")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
CREMI_RAW = "volumes/raw"
CREMI_LABELS = "volumes/labels/neuron_ids"


@dataclass
class Volume:
    """A 3D array with its geometry.

    ``array``: (X, Y, Z) in array order. ``affine``: 4×4, voxel index -> world (``unit``).
    ``header``: the NIfTI header it came from, if any, so writers can restore codes and units.
    """

    array: np.ndarray
    affine: np.ndarray
    path: str = ""
    unit: str = "mm"
    header: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along each array axis (norm of the affine's columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore

    @property
    def axcodes(self) -> tuple[str, str, str]:
        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]


def suffix_of(path: str | Path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def read_volume(
    path: str | Path,
    channel: int | None = None,
    key: str | None = None,
    spacing: list[float] | None = None,
) -> Volume:
    """Read one 3D image volume (float-valued), validated.

    ``channel`` picks a frame of a 4D file (required when it has more than one). ``key`` is the HDF5
    dataset (default ``volumes/raw``). ``spacing`` (x, y, z) sets the voxel size of TIFF stacks.
    """
    vol = _read_any(Path(path), channel, key or CREMI_RAW, spacing)
    if vol.array.dtype.kind in "OSUVM":  # objects, strings, bytes, records, dates
        raise InputError(path, f"voxels of type {vol.array.dtype} are not numeric; an image needs numbers")
    if vol.array.dtype.kind == "c":
        raise InputError(path, f"voxels of type {vol.array.dtype} are complex; an image needs real numbers")
    if not np.issubdtype(vol.array.dtype, np.number) or vol.array.dtype == bool:
        vol.array = vol.array.astype(np.float32)
    check_finite(vol.array, path)
    check_float32_range(vol.array, path)
    return vol


def read_label(
    path: str | Path,
    channel: int | None = None,
    key: str | None = None,
    spacing: list[float] | None = None,
) -> Volume:
    """Read a label map (integer classes or instance ids); non-integer values are an error."""
    vol = _read_any(Path(path), channel, key or CREMI_LABELS, spacing)
    vol.array = as_integer_labels(vol.array, path)
    return vol


def _read_any(path: Path, channel: int | None, key: str, spacing: list[float] | None) -> Volume:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        vol = read_dicom_series(path)
    else:
        suffix = suffix_of(path)
        if suffix in NIFTI_SUFFIXES:
            vol = _read_nifti(path)
        elif suffix in HDF5_SUFFIXES:
            vol = _read_hdf5(path, key)
        elif suffix in TIFF_SUFFIXES:
            vol = _read_tiff(path, spacing)
        elif suffix in NRRD_SUFFIXES:
            vol = _read_nrrd(path)
        elif suffix == ".npy":
            vol = Volume(_guard(path, "NumPy array", lambda: np.load(path)), np.eye(4), unit="voxel")
        else:
            raise InputError(path, f"unsupported file type '{suffix}' (expected NIfTI, HDF5, TIFF, NRRD, DICOM folder)")
    vol.path = str(path)
    vol.array = select_3d(vol.array, path, channel)
    return vol


def _guard(path: Path, kind: str, fn: Any) -> Any:
    """Run a read and turn any library exception into an InputError naming the file."""
    try:
        return fn()
    except InputError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise InputError(path, f"cannot read {kind}: truncated or corrupt file ({type(exc).__name__}: {exc})") from exc


def _check_pixdim(path: Path, img: Any) -> None:
    """A header without a qform / sform takes its voxel size from ``pixdim``; nibabel turns a zero there into 1 mm
    without a word, so the raw header is read again and a zero or negative size is an error."""
    header = img.header
    if not hasattr(header, "get_qform") or int(header["qform_code"]) or int(header["sform_code"]):
        return
    with nib.openers.ImageOpener(str(path)) as fh:
        raw = type(header).from_fileobj(fh, check=False)
    pixdim = [float(v) for v in raw["pixdim"][1:4]]
    if not all(v > 0 for v in pixdim):
        raise InputError(path, f"voxel size (pixdim) {pixdim} has a zero or negative size and no qform / sform")


def _read_nifti(path: Path) -> Volume:
    img = _guard(path, "NIfTI", lambda: nib.load(str(path)))
    if 0 in img.shape:
        raise InputError(path, f"empty volume: the header's shape {img.shape} has an axis of length 0")
    _check_pixdim(path, img)
    affine = img.affine if img.affine is not None else np.full((4, 4), np.nan)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        axes = np.round(affine[:3, :3], 4).tolist()
        raise InputError(path, f"singular or missing affine (voxel axes {axes}); fix the header's sform / qform")
    ok, gb = fits_in_memory(img.shape, max(np.dtype(img.get_data_dtype()).itemsize, 4))
    if not ok:
        raise InputError(path, f"header declares {img.shape} voxels ({gb:.1f} GB), more than this machine can hold")
    array = _guard(path, "NIfTI", lambda: np.asanyarray(img.dataobj))
    return Volume(np.asarray(array), affine.astype(np.float64), header=img.header)


def _read_nrrd(path: Path) -> Volume:
    """NRRD through SimpleITK (installed with nnU-Net): its (z, y, x) array is transposed to (x, y, z) and its
    LPS geometry (direction D, spacing s, origin o: world = o + D·diag(s)·ijk) turned into a RAS affine."""
    try:
        import SimpleITK as sitk
    except ImportError:
        raise InputError(path, "reading NRRD needs SimpleITK (pip install SimpleITK)") from None
    img = _guard(path, "NRRD", lambda: sitk.ReadImage(str(path)))
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            path,
            f"{img.GetDimension()}D image of {img.GetNumberOfComponentsPerPixel()} component(s): "
            "gtgm needs a 3D volume of scalars",
        )
    array = np.asarray(sitk.GetArrayFromImage(img)).transpose(2, 1, 0)
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3) @ np.diag(img.GetSpacing())
    affine[:3, 3] = img.GetOrigin()
    affine[:2] *= -1  # LPS -> RAS
    return Volume(array, affine, str(path), unit="mm")


def _read_hdf5(path: Path, key: str) -> Volume:
    def read() -> tuple[np.ndarray, list[float]]:
        with h5py.File(path, "r") as f:
            if key not in f:
                keys: list[str] = []
                f.visit(lambda name: keys.append(name) if isinstance(f[name], h5py.Dataset) else None)
                raise InputError(path, f"HDF5 has no dataset '{key}' (datasets: {', '.join(keys) or 'none'})")
            dset = f[key]
            res = dset.attrs.get("resolution", f.attrs.get("resolution", (1.0, 1.0, 1.0)))
            return dset[()], [float(r) for r in np.ravel(res)]

    array, res_zyx = _guard(path, "HDF5", read)
    if array.dtype.kind in "OSUVM":
        raise InputError(path, f"HDF5 dataset '{key}' holds {array.dtype} values, not numeric voxels")
    if array.ndim != 3:
        raise InputError(path, f"HDF5 dataset '{key}' has shape {array.shape}, expected a 3D (z, y, x) volume")
    if len(res_zyx) != 3:
        raise InputError(path, f"HDF5 'resolution' attribute {res_zyx} must have 3 values (z, y, x)")
    affine = np.diag([res_zyx[2], res_zyx[1], res_zyx[0], 1.0])
    return Volume(np.ascontiguousarray(array.transpose(2, 1, 0)), affine, unit="nm")


def _read_tiff(path: Path, spacing: list[float] | None) -> Volume:
    array = _guard(path, "TIFF", lambda: tifffile.imread(str(path)))
    if array.ndim == 3:
        array = np.ascontiguousarray(array.transpose(2, 1, 0))  # (z, y, x) stack -> (x, y, z)
    sx, sy, sz = spacing or (1.0, 1.0, 1.0)
    return Volume(array, np.diag([sx, sy, sz, 1.0]), unit="nm")


def select_3d(array: np.ndarray, path: str | Path, channel: int | None) -> np.ndarray:
    """Reduce an array to 3D: squeeze trailing singleton axes, pick ``channel`` of a 4D volume."""
    while array.ndim > 3 and array.shape[-1] == 1 and channel in (None, 0):
        array = array[..., 0]
    if array.ndim == 4:
        frames = array.shape[3]
        if channel is None:
            raise InputError(
                path, f"4D volume with {frames} channels/frames {array.shape}; choose one (channel=0..{frames - 1})"
            )
        if not 0 <= channel < frames:
            raise InputError(path, f"channel {channel} out of range: the volume has {frames} channels")
        array = array[..., channel]
    elif channel not in (None, 0):
        raise InputError(path, f"channel {channel} requested but the volume is {array.ndim}D")
    if array.ndim < 3 or min(array.shape) == 1:
        raise InputError(path, f"2D image of shape {array.shape}; gtgm needs a 3D volume")
    if array.ndim != 3:
        raise InputError(path, f"{array.ndim}D array of shape {array.shape}; expected a 3D volume")
    return array


def check_finite(array: np.ndarray, path: str | Path) -> None:
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            raise InputError(path, f"{n_nan} NaN and {n_inf} Inf voxels; fix or mask them before use")


def check_float32_range(array: np.ndarray, path: str | Path) -> None:
    """A float64 image must fit float32 (the cache's type): |v| <= 3.4e38, else it would turn into Inf."""
    if array.dtype == np.float64 and array.size:
        peak = float(np.abs(array).max())
        if peak > float(np.finfo(np.float32).max):
            raise InputError(path, f"voxel values up to {peak:.3g} do not fit float32 (at most 3.4e38); rescale them")


def as_integer_labels(array: np.ndarray, path: str | Path) -> np.ndarray:
    """Return labels as the smallest fitting unsigned/signed integer type; reject non-integers."""
    if np.issubdtype(array.dtype, np.floating):
        check_finite(array, path)
        frac = array != np.round(array)
        if frac.any():
            example = float(array[frac].flat[0])
            raise InputError(path, f"label map has non-integer values ({int(frac.sum())} voxels, e.g. {example})")
        array = np.round(array).astype(np.int64)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(path, f"label map has non-numeric type {array.dtype}")
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if lo < 0:
        raise InputError(path, f"label map has negative values (min {lo})")
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if hi <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    return array


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, header: Any = None) -> Path:
    """Write a NIfTI file atomically; with the source ``header`` its codes and units are kept."""
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64), header=header)
    img.set_data_dtype(np.asarray(array).dtype)
    if header is not None:
        img.set_qform(affine, code=int(header["qform_code"]) or 1)
        img.set_sform(affine, code=int(header["sform_code"]) or 1)
    else:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    with atomic_path(path, suffix_of(path)) as tmp:
        nib.save(img, str(tmp))
    return path


def write_cremi(
    path: str | Path,
    raw: np.ndarray | None,
    spacing: tuple[float, float, float] | list[float],
    labels: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write CREMI-layout HDF5 atomically.

    Arrays are given in gtgm's (x, y, z) order and stored as (z, y, x); ``spacing`` is (x, y, z) nm and
    is stored as the ``resolution`` attribute (z, y, x) of every dataset. ``extra`` maps more dataset
    names to arrays (x, y, z) or (C, x, y, z) (stored as (C, z, y, x)).
    """
    res_zyx = [float(spacing[2]), float(spacing[1]), float(spacing[0])]
    items: dict[str, np.ndarray] = {}
    if raw is not None:
        items[CREMI_RAW] = raw
    if labels is not None:
        items[CREMI_LABELS] = labels
    items.update(extra or {})
    with atomic_path(path, suffix_of(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["resolution"] = res_zyx
            for name, arr in items.items():
                arr = np.asarray(arr)
                stored = arr.transpose(2, 1, 0) if arr.ndim == 3 else arr.transpose(0, 3, 2, 1)
                dset = f.create_dataset(name, data=np.ascontiguousarray(stored), compression="gzip", compression_opts=4)
                dset.attrs["resolution"] = res_zyx
    return Path(path)


def write_volume(path: str | Path, array: np.ndarray, like: Volume) -> Path:
    """Write ``array`` (same array order as ``like``) with ``like``'s geometry, format from the suffix."""
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return write_nifti(path, array, like.affine, like.header)
    if suffix in HDF5_SUFFIXES:
        return write_cremi(path, array, like.spacing)
    raise InputError(path, f"cannot write '{suffix}' files (use .nii.gz or .h5)")


# DICOM series folder -> Volume (pydicom; world converted from LPS to RAS)
def read_dicom_series(folder: Path) -> Volume:
    """Read every DICOM slice in ``folder`` (one series) into an (X=columns, Y=rows, Z=slices) volume.

    Voxel (i, j, k) sits at ``IPP_0 + i·Δc·r + j·Δr·c + k·s`` in LPS, with r, c the row and column
    direction cosines (ImageOrientationPatient), Δr, Δc the PixelSpacing and s the step between sorted
    slice positions; x and y are negated for RAS. Pixel values get RescaleSlope/Intercept (CT -> HU).
    """
    slices = _load_slices(folder)
    iop = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    r, c = iop[:3], iop[3:]
    normal = np.cross(r, c)
    slices.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=np.float64), normal)))
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in slices])
    step = _slice_step(folder, positions)
    row_sp, col_sp = (float(v) for v in slices[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = r * col_sp, c * row_sp, step, positions[0]
    affine[:2] *= -1  # LPS -> RAS
    shapes = {ds.pixel_array.shape for ds in slices}
    if len(shapes) != 1:
        raise InputError(folder, f"DICOM slices have different sizes {sorted(shapes)}")
    array = np.stack([_hu(ds).T for ds in slices], axis=2)
    return Volume(array, affine, str(folder), unit="mm")


def _load_slices(folder: Path) -> list[pydicom.Dataset]:
    slices, series = [], set()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            continue  # not a DICOM file (a README, a DICOMDIR index...)
        except (OSError, EOFError, ValueError) as exc:
            raise InputError(path, f"cannot read DICOM: truncated or corrupt file ({exc})") from exc
        if "PixelData" not in ds:
            continue
        try:
            _ = ds.pixel_array  # decoded now, so that a truncated slice is named (pydicom keeps the array)
        except (ValueError, TypeError, AttributeError, NotImplementedError, RuntimeError) as exc:
            raise InputError(path, f"cannot decode the DICOM pixel data: truncated or corrupt slice ({exc})") from exc
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds:
                raise InputError(path, f"DICOM slice lacks {tag}; cannot place it in 3D")
        series.add(str(ds.get("SeriesInstanceUID", "")))
        slices.append(ds)
    if not slices:
        raise InputError(folder, "folder holds no DICOM image slices")
    if len(series) > 1:
        raise InputError(folder, f"folder mixes {len(series)} DICOM series; give one series per folder")
    return slices


def _slice_step(folder: Path, positions: np.ndarray) -> np.ndarray:
    if len(positions) < 2:
        raise InputError(folder, "2D image: the DICOM series has a single slice; gtgm needs a 3D volume")
    gaps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    if gaps.min() <= 0 or (gaps.max() - gaps.min()) > 0.01 * gaps.mean() + 1e-3:
        raise InputError(
            folder, f"irregular slice spacing ({gaps.min():.3f}..{gaps.max():.3f} mm): missing or duplicate slices"
        )
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    pixels = ds.pixel_array.astype(np.float32)
    return pixels * slope + intercept if (slope, intercept) != (1.0, 0.0) else pixels
