"""Dataset layouts -> a list of :class:`Case` (paths only; nothing is read here but the index).

Supported, detected from what ``path`` holds:

* ``dataset.json`` in the Medical Segmentation Decathlon form (``modality``, ``labels``, ``training``
  entries with ``image``/``label``, ``test`` list) — gtgm's own corpora use this form with optional
  per-entry fields ``modality`` (CT/MRI/EM), ``group``, ``synthetic``, ``source``, ``channel``,
  ``image_key``/``label_key`` (HDF5) and ``spacing`` (TIFF), and top-level ``groups``
  (``{name: {modality, labels, description}}``);
* ``dataset.json`` in the nnU-Net v2 raw form (``channel_names``, ``labels``, ``file_ending``;
  ``imagesTr/<case>_<XXXX><ending>``, ``labelsTr/<case><ending>``, optional ``imagesTs``);
* a CREMI HDF5 file or a folder of them (``volumes/raw``, ``volumes/labels/neuron_ids``);
* a folder of TIFF stacks (SNEMI3D: ``<name>-input.tif`` paired with ``<name>-labels.tif``);
* a DICOM series folder, or a folder of DICOM series folders;
* a plain folder of NIfTI volumes (unlabeled; the modality must be given).

Every path in a ``dataset.json`` must exist and stay inside the dataset folder; otherwise an
:class:`~gtgm.errors.InputError` names the ``dataset.json`` and the offending entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gtgm.data.io import CREMI_LABELS, HDF5_SUFFIXES, NIFTI_SUFFIXES, TIFF_SUFFIXES, suffix_of
from gtgm.errors import InputError
from gtgm.fsutil import read_json
from gtgm.schemas import DATASET_JSON

MODALITIES = ("CT", "MRI", "EM")


@dataclass
class ImageRef:
    """One array in a file: ``channel`` of a 4D file, ``key`` of an HDF5 file."""

    path: Path
    channel: int | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "channel": self.channel, "key": self.key}


@dataclass
class Case:
    """One imaging case: its channels, optional label map, and provenance."""

    id: str
    images: list[ImageRef]
    label: ImageRef | None = None
    modality: str = "MRI"  # CT | MRI | EM: decides the intensity normalisation
    group: str = "default"
    split: str = "train"  # train | test
    synthetic: bool = False
    source: str = ""
    spacing: list[float] | None = None  # TIFF stacks carry no voxel size
    label_classes: list[int] | None = None  # partial labels: the only classes annotated (None = every class)


@dataclass
class Dataset:
    root: Path
    name: str
    cases: list[Case]
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {modality, labels, ...}

    def select(self, group: str | None = None, labeled: bool | None = None) -> list[Case]:
        return [
            c
            for c in self.cases
            if (group is None or c.group == group) and (labeled is None or (c.label is not None) == labeled)
        ]


def canonical_modality(name: str) -> str:
    """Map a channel name to the normalisation family: CT, EM, or MRI (anything else, as nnU-Net)."""
    upper = str(name).strip().upper()
    if upper in ("CT", "EM"):
        return upper
    return "MRI"


def load_dataset(path: str | Path, modality: str | None = None, spacing: list[float] | None = None) -> Dataset:
    """Index the dataset at ``path`` (see module docstring for the layouts). Case ids name output files, so
    each must be a plain file name (:func:`check_case_id`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "dataset not found")
    if path.is_file():
        if path.name == "dataset.json":
            dataset = _from_json(path)
        elif suffix_of(path) in HDF5_SUFFIXES:
            dataset = Dataset(path.parent, path.stem, [_cremi_case(path)])
        else:
            raise InputError(path, "expected a dataset folder, a dataset.json or a CREMI HDF5 file")
    elif (path / "dataset.json").is_file():
        path = path / "dataset.json"
        dataset = _from_json(path)
    else:
        dataset = _from_folder(path, modality, spacing)
    for case in dataset.cases:
        check_case_id(case.id, path)
    return dataset


def check_case_id(case_id: str, source: str | Path) -> str:
    """``case_id`` if it is a plain file name: no path separator, no ``..``, no leading dot, no control
    character (ids become ``OUT/<id>.npy`` and ``OUT/<id>.nii.gz``: nothing may land outside ``OUT``)."""
    bad = (
        not case_id
        or any(c in case_id for c in "/\\")
        or case_id.startswith(".")
        or any(ord(c) < 32 or ord(c) == 127 for c in case_id)
    )
    if bad:
        raise InputError(
            source, f"case id {case_id!r} is not a plain file name (no '/', '\\', leading '.' or control characters)"
        )
    return case_id


def _from_json(json_path: Path) -> Dataset:
    data = read_json(json_path, schema=DATASET_JSON)  # field types: gtgm.schemas; paths: resolve_entry
    if "channel_names" in data and "file_ending" in data:
        return _from_nnunet(json_path, data)
    return _from_msd(json_path, data)


def resolve_entry(json_path: Path, value: Any, where: str) -> Path:
    """Resolve a dataset.json path; it must be a string, exist and stay inside the dataset folder."""
    root = json_path.parent.resolve()
    if not isinstance(value, str) or not value:
        raise InputError(json_path, f"{where}: missing file path (got {value!r})")
    target = (root / value).resolve()
    if target != root and root not in target.parents:
        raise InputError(json_path, f"{where}: '{value}' points outside the dataset folder {root}")
    if not target.exists():
        raise InputError(json_path, f"{where}: file not found: {target}")
    return target


def _field(data: dict[str, Any], key: str, default: Any = None) -> Any:
    """``data[key]``, or ``default`` when absent or null (types are checked against ``DATASET_JSON`` on reading)."""
    value = data.get(key)
    return default if value is None else value


def label_names(raw: Any) -> dict[int, str]:
    """Label id -> class name of a ``labels`` mapping in either form: MSD's ``{"0": "background"}`` or nnU-Net's
    ``{"background": 0}``; anything else gives ``{}``."""
    if not isinstance(raw, dict):
        return {}
    out: dict[int, str] = {}
    for k, v in raw.items():
        if str(k).lstrip("-").isdigit():  # MSD: {"0": "background"}
            out[int(k)] = str(v)
        elif isinstance(v, int):  # nnU-Net: {"background": 0}
            out[v] = str(k)
    return dict(sorted(out.items()))


def _from_msd(json_path: Path, data: dict[str, Any]) -> Dataset:
    channel_names = _field(data, "modality", {"0": "MRI"})
    if isinstance(channel_names, str):
        channel_names = {"0": channel_names}
    default_modality = canonical_modality(next(iter(channel_names.values()), "MRI"))
    groups = {}
    for name, g in _field(data, "groups", {}).items():
        groups[name] = {**g, "labels": label_names(g.get("labels", {}))}
    labels = _field(data, "labels", {})
    groups.setdefault("default", {"modality": default_modality, "labels": label_names(labels)})
    cases: list[Case] = []
    entries = [("training", i, e) for i, e in enumerate(_field(data, "training", []))]
    entries += [("test", i, e) for i, e in enumerate(_field(data, "test", []))]
    if not entries:
        raise InputError(json_path, "no 'training' or 'test' entries")
    seen: set[str] = set()
    for key, i, entry in entries:
        split = "train" if key == "training" else "test"
        case = _msd_case(json_path, entry, f"{key}[{i}]", split, channel_names, groups)
        if case.id in seen:
            if isinstance(entry, dict) and entry.get("id"):
                raise InputError(json_path, f"{key}[{i}]: id '{case.id}' is already used by an earlier entry")
            new_id = f"{case.id}_{split}{i}"  # the same file name in two folders (e.g. imagesTr and imagesTs)
            print(f"[data] {json_path}: {key}[{i}] is the second case named '{case.id}': called '{new_id}'")
            case.id = new_id
        seen.add(case.id)
        cases.append(case)
    return Dataset(json_path.parent, str(data.get("name", json_path.parent.name)), cases, groups)


def _msd_case(
    json_path: Path, entry: Any, where: str, split: str, channel_names: dict, groups: dict[str, dict]
) -> Case:
    if isinstance(entry, str):
        entry = {"image": entry}
    image = resolve_entry(json_path, entry.get("image"), f"{where}.image")
    group = str(entry.get("group", "default"))
    if group not in groups:
        raise InputError(json_path, f"{where}: group '{group}' is not declared in 'groups'")
    modality = canonical_modality(entry.get("modality", groups[group].get("modality", "MRI")))
    if "channel" in entry:
        images = [ImageRef(image, entry["channel"], entry.get("image_key"))]
    elif len(channel_names) > 1:
        images = [ImageRef(image, int(c), entry.get("image_key")) for c in sorted(channel_names, key=int)]
    else:
        images = [ImageRef(image, None, entry.get("image_key"))]
    label = None
    if entry.get("label") is not None:
        label = ImageRef(resolve_entry(json_path, entry["label"], f"{where}.label"), None, entry.get("label_key"))
    raw_id = entry.get("id")
    if raw_id is not None and (not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool) or raw_id == ""):
        raise InputError(json_path, f"{where}.id: {raw_id!r} is not a case id (give a non-empty name, or no 'id')")
    case_id = _strip_suffix(image.name) if raw_id is None else str(raw_id)
    partial = _label_classes(json_path, entry, where, groups[group].get("labels", {}))
    return Case(
        case_id,
        images,
        label,
        modality,
        group,
        split,
        bool(entry.get("synthetic", False)),
        str(entry.get("source", "")),
        entry.get("spacing"),
        partial,
    )


def _label_classes(json_path: Path, entry: dict[str, Any], where: str, labels: dict[int, str]) -> list[int] | None:
    """An entry's ``label_classes`` (names of its group's classes, the only ones its label map annotates) as label
    values; None when absent (every class annotated). A name the group does not declare is an error."""
    names = entry.get("label_classes")
    if names is None:
        return None
    if entry.get("label") is None:
        raise InputError(json_path, f"{where}: label_classes without a label")
    ids = {str(n): int(k) for k, n in labels.items()}
    unknown = [n for n in names if n not in ids]
    if unknown:
        raise InputError(json_path, f"{where}.label_classes: {unknown} are not classes of its group ({sorted(ids)})")
    return sorted(ids[n] for n in names)


def _from_nnunet(json_path: Path, data: dict[str, Any]) -> Dataset:
    root, ending = json_path.parent, _field(data, "file_ending")
    names = _field(data, "channel_names")
    if not names or ending is None:
        raise InputError(json_path, "an nnU-Net dataset.json needs 'channel_names' and 'file_ending'")
    channels = sorted(names, key=int)
    modality = canonical_modality(names[channels[0]])
    cases = []
    for split, img_dir, lab_dir in (("train", "imagesTr", "labelsTr"), ("test", "imagesTs", None)):
        folder = root / img_dir
        if not folder.is_dir():
            continue
        ids = sorted({p.name[: -len(ending) - 5] for p in folder.glob(f"*_0000{ending}")})
        for cid in ids:
            images = []
            for c in channels:
                p = folder / f"{cid}_{int(c):04d}{ending}"
                if not p.exists():
                    raise InputError(json_path, f"case '{cid}': channel {c} file not found: {p}")
                images.append(ImageRef(p))
            label = None
            if lab_dir and (root / lab_dir / f"{cid}{ending}").exists():
                label = ImageRef(root / lab_dir / f"{cid}{ending}")
            cases.append(Case(cid, images, label, modality, "default", split))
    expected = _field(data, "numTraining")
    n_train = sum(c.split == "train" for c in cases)
    if expected is not None and expected != n_train:
        raise InputError(json_path, f"numTraining is {expected} but imagesTr holds {n_train} cases")
    if not cases:
        raise InputError(json_path, f"no cases found in imagesTr/ with file ending '{ending}'")
    groups = {"default": {"modality": modality, "labels": label_names(_field(data, "labels", {}))}}
    return Dataset(root, str(data.get("name", root.name)), cases, groups)


def _strip_suffix(name: str) -> str:
    for suffix in (*NIFTI_SUFFIXES[::-1], *HDF5_SUFFIXES, *TIFF_SUFFIXES, ".npy"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _cremi_case(path: Path) -> Case:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            has_labels = CREMI_LABELS in f
    except OSError as exc:
        raise InputError(path, f"cannot read HDF5: truncated or corrupt file ({exc})") from exc
    label = ImageRef(path, key=CREMI_LABELS) if has_labels else None
    return Case(_strip_suffix(path.name), [ImageRef(path)], label, "EM", "default", "train")


def _from_folder(folder: Path, modality: str | None, spacing: list[float] | None) -> Dataset:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    h5 = [p for p in files if suffix_of(p) in HDF5_SUFFIXES]
    tif = [p for p in files if suffix_of(p) in TIFF_SUFFIXES]
    nii = [p for p in files if suffix_of(p) in NIFTI_SUFFIXES]
    if h5:
        return Dataset(folder, folder.name, [_cremi_case(p) for p in h5])
    if tif:
        return Dataset(folder, folder.name, _tiff_cases(tif, spacing))
    mod = canonical_modality(modality) if modality else None
    if nii:
        if mod is None:
            raise InputError(folder, "a plain folder of NIfTI volumes needs --modality CT|MRI|EM")
        return Dataset(folder, folder.name, [Case(_strip_suffix(p.name), [ImageRef(p)], modality=mod) for p in nii])
    series = [folder] if files else sorted(p for p in folder.iterdir() if p.is_dir())
    if series:
        cases = [Case(s.name, [ImageRef(s)], modality=mod or "CT") for s in series]
        return Dataset(folder, folder.name, cases)
    raise InputError(folder, "no dataset.json, volumes, HDF5/TIFF files or DICOM series found")


def _tiff_cases(files: list[Path], spacing: list[float] | None) -> list[Case]:
    labels = {p for p in files if _strip_suffix(p.name).lower().endswith(("-labels", "_labels"))}
    cases = []
    for p in files:
        if p in labels:
            continue
        stem = _strip_suffix(p.name)
        base = stem[: -len("-input")] if stem.lower().endswith(("-input", "_input")) else stem
        match = next(
            (
                q
                for q in labels
                if _strip_suffix(q.name).lower() in (f"{base}-labels".lower(), f"{base}_labels".lower())
            ),
            None,
        )
        label = ImageRef(match) if match else None
        cases.append(Case(base, [ImageRef(p)], label, "EM", spacing=spacing))
    return cases
