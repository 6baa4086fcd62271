"""A labelled gtgm dataset (or one of its groups) as an nnU-Net v2 raw dataset.

Layout written (nnU-Net v2's ``dataset_format.md``)::

    OUT/DatasetXXX_Name/
        dataset.json        channel_names, labels {"background": 0, ...}, numTraining, file_ending
        imagesTr/CASE_0000.nii.gz   (one file per channel, _0001, ... for more)
        labelsTr/CASE.nii.gz

Every labelled case of the group goes to ``imagesTr`` (nnU-Net makes its own cross-validation folds);
unlabelled cases, and partial-label cases (``label_classes``: nnU-Net would take their unannotated organs for
background), are left out. Images keep their voxels and geometry (the affine of the file they came
from, whatever its format); labels are written as unsigned integers with the image's affine. The folder is
written under a temporary name and renamed at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gtgm.data.datasets import Case, Dataset
from gtgm.data.io import read_label, read_volume, write_nifti
from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import write_json

FILE_ENDING = ".nii.gz"


def nnunet_labels(labels: dict[int, str], where: str) -> dict[str, int]:
    """gtgm's ``{0: "background", 1: "liver", ...}`` -> nnU-Net's ``{"background": 0, "liver": 1, ...}``.

    nnU-Net needs consecutive integers from 0 (background) and one name per value."""
    values = sorted(labels)
    if not values or values[0] != 0 or values != list(range(len(values))):
        raise GtgmError(f"{where}: nnU-Net needs label values 0, 1, 2, ... without gaps, got {values}")
    names = [labels[v] for v in values]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GtgmError(f"{where}: label names must differ for nnU-Net, repeated: {', '.join(dupes)}")
    return {("background" if v == 0 else labels[v]): v for v in values}


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset501_CtPhantom``: nnU-Net's id (1..999) and a name of letters, digits, ``-`` and ``_``."""
    if not 1 <= dataset_id <= 999:
        raise GtgmError(f"--id {dataset_id}: nnU-Net dataset ids are 1 to 999")
    clean = re.sub(r"[^A-Za-z0-9_-]+", "", name.replace(" ", "_"))
    if not clean:
        raise GtgmError(f"dataset name {name!r} has no letters or digits")
    return f"Dataset{dataset_id:03d}_{clean}"


def _case_arrays(case: Case) -> tuple[list[Any], Any]:
    """Read a case's channels and label; they must share one grid."""
    channels = [read_volume(ref.path, ref.channel, ref.key, case.spacing) for ref in case.images]
    label = read_label(case.label.path, case.label.channel, case.label.key, case.spacing)  # type: ignore[union-attr]
    for vol in channels:
        if vol.shape != label.shape:
            raise InputError(vol.path, f"shape {vol.shape} differs from its label's {label.shape} ({label.path})")
    return channels, label


def _check_values(label: np.ndarray, allowed: dict[str, int], path: str) -> None:
    extra = sorted(set(np.unique(label).tolist()) - set(allowed.values()))
    if extra:
        raise InputError(path, f"label values {extra[:10]} are not declared in the dataset's labels")


def export_nnunet_raw(dataset: Dataset, group: str | None, dataset_id: int, out: str | Path, name: str = "") -> Path:
    """Write ``dataset``'s labelled cases of ``group`` (all groups when None and there is one) under ``out``.

    Returns the ``DatasetXXX_Name`` folder. Refuses an id already used under ``out`` (nnU-Net looks datasets
    up by id), a group without labelled cases, label maps with undeclared values or another shape than
    their image.
    """
    groups = sorted({c.group for c in dataset.cases if c.label is not None})
    if group is None:
        if len(groups) != 1:
            raise GtgmError(f"{dataset.root}: choose a group with --group (labelled groups: {', '.join(groups)})")
        group = groups[0]
    cases = dataset.select(group, labeled=True)
    partial = [c.id for c in cases if c.label_classes is not None]
    if partial:  # nnU-Net takes every unlabelled voxel as background: a partial label map would teach it wrong
        print(f"[export] {', '.join(partial)}: partial labels (label_classes), which nnU-Net cannot take; left out")
        cases = [c for c in cases if c.label_classes is None]
    if not cases:
        raise GtgmError(f"{dataset.root}: no labelled cases in group '{group}' (labelled groups: {', '.join(groups)})")
    info = dataset.groups.get(group, {})
    labels = nnunet_labels(dict(info.get("labels", {})), f"{dataset.root} group '{group}'")
    out = Path(out)
    folder = out / dataset_folder_name(dataset_id, name or group)
    taken = sorted(p.name for p in out.glob(f"Dataset{dataset_id:03d}_*")) if out.is_dir() else []
    if taken:
        raise GtgmError(f"{out}: nnU-Net dataset id {dataset_id} is already used by {taken[0]}; choose another --id")
    tmp = out / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        n_channels = _write_cases(cases, labels, tmp)
        write_json(tmp / "dataset.json", _dataset_json(dataset, group, cases, labels, n_channels, info))
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_cases(cases: list[Case], labels: dict[str, int], tmp: Path) -> int:
    n_channels = {len(c.images) for c in cases}
    if len(n_channels) != 1:
        raise GtgmError(f"cases have different numbers of channels ({sorted(n_channels)}); nnU-Net needs one")
    for case in tqdm(cases, desc="export nnU-Net", unit="case", leave=False):
        channels, label = _case_arrays(case)
        _check_values(label.array, labels, label.path)
        for k, vol in enumerate(channels):
            write_nifti(tmp / "imagesTr" / f"{case.id}_{k:04d}{FILE_ENDING}", vol.array, vol.affine)
        write_nifti(tmp / "labelsTr" / f"{case.id}{FILE_ENDING}", label.array, channels[0].affine)
    return n_channels.pop()


def _dataset_json(
    dataset: Dataset, group: str, cases: list[Case], labels: dict[str, int], n_channels: int, info: dict
) -> dict[str, Any]:
    modality = str(info.get("modality") or cases[0].modality)
    channel_names = {str(k): modality for k in range(n_channels)}  # "CT": nnU-Net's CT normalisation
    return {
        "channel_names": channel_names,
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "name": f"{dataset.name}/{group}",
        "description": f"written by gtgm data export-nnunet from {dataset.root} (group {group})",
    }
