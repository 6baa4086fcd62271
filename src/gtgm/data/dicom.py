"""DICOM series folder -> :class:`~gtgm.data.io.Volume` (pydicom; world converted from LPS to RAS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from gtgm.data.io import Volume
from gtgm.errors import InputError


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
