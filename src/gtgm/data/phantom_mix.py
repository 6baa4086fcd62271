"""CT phantoms (:mod:`gtgm.data.phantom_ct`) as partial-label training cases of a real-CT dataset.

One labelled real patient teaches few shapes and positions. The phantoms hold many (per-case size, position, warp)
of the organs both label sets name. :func:`add_phantoms` writes ``n`` of them into a dataset folder made by
``gtgm data fetch-real`` (or any dataset whose ``dataset.json`` has ``groups``), with their label ids renamed by
class name onto the group's classes (:data:`PHANTOM_TO_REAL`), and lists them in ``dataset.json`` as partial-label
cases (``label_classes``): each annotates only the classes it maps. Phantom bone (vertebrae, spinous processes and
ribs under one label) maps to no class, so it is background among the annotated classes (not liver, not lung, ...),
and the loss leaves vertebrae and ribs out for these cases, as for every class a phantom does not annotate.

The cases are marked ``synthetic`` with their generator seed as provenance; ``dataset.json`` is rewritten
atomically after the volumes are written, so an interrupted call leaves the dataset as it was listed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gtgm.data.datasets import label_names
from gtgm.data.io import write_nifti
from gtgm.data.phantom_ct import CT_LABELS, make_ct_phantom
from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import read_json, write_json
from gtgm.schemas import DATASET_JSON

# phantom class -> real-CT class of the same organ (gtgm data fetch-real's names); bone has none (see the module)
PHANTOM_TO_REAL = {
    "liver": "liver",
    "spleen": "spleen",
    "kidney_right": "kidney_right",
    "kidney_left": "kidney_left",
    "aorta": "aorta",
    "lungs": "lungs",
}
PREFIX = "phantom_mix_"
# generator seeds SEED + i. The examples use 1000+, 3000+ and 4000+, bench_phantom_select 7000+; a sealed phantom test
# set (gtgm data examples --sealed-seed) may use 5000+ too, but not in a corpus with these phantoms (write_examples
# refuses it: they would be pretrained on)
SEED = 5000


def add_phantoms(data: Path, group: str, n: int, seed: int = SEED, classes: list[str] | None = None) -> list[str]:
    """Write phantoms ``seed + i`` (i < ``n``) into ``data/<group>/`` as ``phantom_mix_<i>.nii.gz`` + ``_label``
    and list them in ``data/dataset.json`` (replacing earlier phantom cases); returns their case ids.

    Label map: phantom id k -> the group's id of ``PHANTOM_TO_REAL[CT_LABELS[k]]``, 0 where none; the case's
    ``label_classes`` are the mapped classes the group holds, or only those of them named in ``classes``. An organ
    left out keeps its id in the label file but is not declared, so its voxels are unknown to the loss (ignored),
    neither that class nor background."""
    path = data / "dataset.json"
    if n < 0:
        raise GtgmError(f"add_phantoms: the number of phantoms must be >= 0, got {n}")
    if not path.is_file():
        raise InputError(path, "not found (a dataset folder made by gtgm data fetch-real holds one)")
    dataset = read_json(path, schema=DATASET_JSON)
    groups = dataset.get("groups") or {}
    if group not in groups:
        raise InputError(path, f"no group '{group}' (groups: {', '.join(sorted(groups)) or 'none'})")
    ids = {name: k for k, name in label_names(groups[group].get("labels")).items()}
    lut = np.zeros(max(CT_LABELS) + 1, dtype=np.uint8)
    for k, name in CT_LABELS.items():
        lut[k] = ids.get(PHANTOM_TO_REAL.get(name, ""), 0)
    annotated = [real for real in PHANTOM_TO_REAL.values() if real in ids]
    if not annotated:
        raise InputError(path, f"group '{group}' names none of the phantoms' classes ({', '.join(PHANTOM_TO_REAL)})")
    if classes is not None:
        unknown = sorted(set(classes) - set(annotated))
        if unknown or not classes:
            raise GtgmError(
                f"add_phantoms: {', '.join(unknown) or 'no class'}: the phantoms' classes in group '{group}' are "
                f"{', '.join(annotated)}"
            )
        annotated = [c for c in annotated if c in classes]
    (data / group).mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        case = f"{PREFIX}{i:03d}"
        hu, lab, affine = make_ct_phantom(seed=seed + i)
        write_nifti(data / group / f"{case}.nii.gz", hu, affine)
        write_nifti(data / group / f"{case}_label.nii.gz", lut[lab], affine)
        entries.append(_entry(case, group, seed + i, annotated))
    kept = [e for e in dataset.get("training") or [] if not str(e.get("id", "")).startswith(PREFIX)]
    dataset["training"] = kept + entries
    dataset["numTraining"] = len(dataset["training"])
    mapping = {k: v for k, v in groups[group].get("label_mapping", {}).items() if not k.startswith(PREFIX)}
    groups[group]["label_mapping"] = {**mapping, **{e["id"]: {c: c for c in annotated} for e in entries}}
    write_json(path, dataset)
    new = {e["id"] for e in entries}
    for old in (data / group).glob(f"{PREFIX}*.nii.gz"):  # an earlier call's extra phantoms, no longer listed
        if old.name.removesuffix(".nii.gz").removesuffix("_label") not in new:
            old.unlink()
    return [e["id"] for e in entries]


def _entry(case: str, group: str, seed: int, annotated: list[str]) -> dict:
    return {
        "id": case,
        "image": f"{group}/{case}.nii.gz",
        "label": f"{group}/{case}_label.nii.gz",
        "group": group,
        "modality": "CT",
        "synthetic": True,
        "source": f"gtgm.data.phantom_ct.make_ct_phantom(seed={seed}); partial: {', '.join(annotated)}",
        "label_classes": annotated,
    }
