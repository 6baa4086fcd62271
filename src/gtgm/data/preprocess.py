"""``gtgm data preprocess``: raw dataset -> normalised, memory-mappable cache.

Cache layout (``OUT/``)::

    index.json                 cases, groups, config; written last, only when every case succeeded;
                               merged with the cases other datasets put there before (never replaced)
    volumes/<id>.npy           image, float32 (C, X, Y, Z), RAS array order
    volumes/<id>.label.npy     label map, smallest unsigned int type, (X, Y, Z)        [labeled cases]
    volumes/<id>.fg.npz        up to N foreground voxel indices per class, int32 (N, 3) [labeled cases]
    volumes/<id>.body.npy      body mask, uint8 (X, Y, Z) (:mod:`gtgm.data.body`)         [CT]
    volumes/<id>.json          geometry (original, RAS, resampled), normalisation, fingerprint

Each case is written through temporary files and renamed; its JSON goes last and carries a fingerprint
of the inputs (sizes, mtimes), the case's settings and the preprocessing config, so a re-run skips cases
that are done and unchanged and redoes the rest (resumable, idempotent). A bad case leaves no file.
"""

from __future__ import annotations

import json
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gtgm.config import PreprocessConfig
from gtgm.data.body import body_mask, mask_box
from gtgm.data.datasets import Case, Dataset
from gtgm.data.geometry import resample, to_ras
from gtgm.data.io import Volume, read_label, read_volume
from gtgm.data.normalize import normalize
from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import atomic_path, digest, file_signature, lock_folder, read_json, remove_stale_temps, write_json

CACHE_VERSION = 1
MAX_FG_CLASSES = 64  # more distinct labels (EM instances): one "foreground" class


def preprocess_dataset(
    dataset: Dataset, out: str | Path, cfg: PreprocessConfig, workers: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Preprocess every case of ``dataset`` into ``out``; returns the index (also written to disk).

    A cache may hold several datasets: the cases of an existing ``index.json`` are kept (merged), a case id that
    another dataset already uses there is refused before anything is written, and temporary files a killed run
    left behind are removed. A run whose cases all fail leaves no empty folder."""
    out = Path(out)
    _previous_index(out, dataset)  # refuses clashing case ids before anything (the lock too) is written
    created = [d for d in (out, out / "volumes") if not d.exists()]
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(out)  # one writer per cache: a second preprocess into it stops here
    try:
        (out / "volumes").mkdir(exist_ok=True)
        old = _previous_index(out, dataset)  # again, under the lock
        remove_stale_temps(out / "volumes")
        remove_stale_temps(out)
        results = _cache_cases(dataset, out, cfg, workers, progress)
        return _write_index(out, dataset, cfg, old, results)
    finally:
        lock.release()
        for d in reversed(created):  # nothing cached (every case failed, a full disk...): no empty folder left
            if d.is_dir() and all(p.name == ".gtgm.lock" for p in d.iterdir()):
                (d / ".gtgm.lock").unlink(missing_ok=True)
                d.rmdir()


def _cache_cases(
    dataset: Dataset, out: Path, cfg: PreprocessConfig, workers: int, progress: bool
) -> list[dict[str, Any]]:
    """Cache every case (in ``workers`` processes); the index entries of the cases. Failed cases are reported
    together, after the others are cached."""
    jobs = [(case, out, cfg) for case in dataset.cases]
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    with tqdm(total=len(jobs), desc="preprocess", unit="case", disable=not progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for res in pool.map(_safe_case, jobs):
                    _collect(res, results, errors, bar)
        else:
            for job in jobs:
                _collect(_safe_case(job), results, errors, bar)
    if errors:
        raise GtgmError(f"{len(errors)} of {len(jobs)} cases failed (the others are cached):\n  " + "\n  ".join(errors))
    return results


def _write_index(
    out: Path, dataset: Dataset, cfg: PreprocessConfig, old: dict[str, Any] | None, results: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write ``out/index.json``: ``results`` (this dataset's cases) merged with the other datasets' cases of ``old``."""
    root = str(Path(dataset.root).resolve())  # absolute: a later run from another directory still matches it
    for entry in results:
        entry["dataset"] = root
    groups = {
        k: {**v, "labels": {str(i): n for i, n in v.get("labels", {}).items()}} for k, v in dataset.groups.items()
    }
    kept = [e for e in (old or {}).get("cases", []) if e["id"] not in {r["id"] for r in results}]
    index = {
        "version": CACHE_VERSION,
        "dataset": dataset.name,
        "source": root,
        "datasets": sorted({root, *(old or {}).get("datasets", [(old or {}).get("source", root)])}),
        "groups": {**(old or {}).get("groups", {}), **groups},
        "config": asdict(cfg),
        "cases": kept + results,
    }
    if kept:
        print(f"[preprocess] {out / 'index.json'}: kept the {len(kept)} cases of other datasets already cached")
    write_json(out / "index.json", index)
    return index


def _same_folder(recorded: str | None, root: str) -> bool:
    """Whether the dataset folder a cache index records is ``root`` (this run's, relative to the working directory or
    absolute). The index records absolute folders; a relative one (older caches) was relative to a working directory
    that is not known, so only the same spelling matches it."""
    if recorded is None or not Path(recorded).is_absolute():
        return recorded == root
    return Path(recorded).resolve() == Path(root).resolve()


def _previous_index(out: Path, dataset: Dataset) -> dict[str, Any] | None:
    """The cache's existing index, checked against ``dataset``: no case id or group of another dataset is
    taken over (that would overwrite its files or change its labels)."""
    path = out / "index.json"
    if not path.is_file():
        return None
    old = read_json(path)
    if not isinstance(old.get("cases"), list):
        raise InputError(path, "not a gtgm cache index (no 'cases' list); choose another --out")
    root, ids = str(dataset.root), {c.id for c in dataset.cases}
    for entry in old["cases"]:
        source = entry.get("dataset", old.get("source"))
        if entry.get("id") in ids and not _same_folder(source, root):
            raise InputError(
                path,
                f"case id {entry['id']!r} is already cached from dataset {source}; ids must be unique in a "
                f"cache: preprocess {root} into another --out",
            )
    for name, group in dataset.groups.items():
        before = old.get("groups", {}).get(name)
        now = {str(i): n for i, n in group.get("labels", {}).items()}
        if before is not None and not _same_folder(old.get("source"), root) and before.get("labels", {}) != now and now:
            raise InputError(
                path,
                f"group {name!r} is already cached from {old.get('source')} with labels "
                f"{before.get('labels')}, here {now}; preprocess into another --out",
            )
    return old


def _collect(res: tuple[str, Any], results: list, errors: list, bar: tqdm) -> None:
    status, value = res
    (results if status == "ok" else errors).append(value)
    bar.update(1)
    if status == "ok":
        bar.set_postfix_str(f"{value['id']} ({'cached' if value.pop('skipped') else 'done'})")


def _safe_case(job: tuple[Case, Path, PreprocessConfig]) -> tuple[str, Any]:
    try:
        return "ok", preprocess_case(*job)
    except InputError as exc:
        return "error", str(exc)


def case_fingerprint(case: Case, cfg: PreprocessConfig) -> str:
    """Digest of the case's inputs and the settings it is preprocessed with (``cfg`` for its group)."""
    refs = [*case.images, *([case.label] if case.label else [])]
    return digest(
        {
            "version": CACHE_VERSION,
            "inputs": [{**r.to_dict(), "signature": file_signature(r.path)} for r in refs],
            "modality": case.modality,
            "spacing": case.spacing,
            "label_classes": case.label_classes,
            "config": {
                k: v
                for k, v in asdict(cfg.for_group(case.group)).items()
                if k != "group_spacing" and (k != "body_threshold" or case.modality == "CT")
            },
        }
    )


def _cached(vol_dir: Path, meta_path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The case's JSON if its cached files are intact for ``fingerprint``, else None (the case is rebuilt).

    Integrity, not existence: the JSON parses, each ``.npy`` opens with the recorded (X, Y, Z) shape (a
    truncated array does not), each ``.npz`` is a whole zip archive.
    """
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("fingerprint") != fingerprint:
        return None
    for name in meta.get("files", {}).values():
        path = vol_dir / name
        try:
            if name.endswith(".npy"):
                if list(np.load(path, mmap_mode="r").shape[-3:]) != list(meta.get("shape", [])):
                    return None
            elif not zipfile.is_zipfile(path):
                return None
        except (OSError, ValueError):
            return None
    return meta


def preprocess_case(case: Case, out: Path, cfg: PreprocessConfig) -> dict[str, Any]:
    """Preprocess one case (skipped if its fingerprint matches); returns its index entry.

    The case's settings are ``cfg.for_group(case.group)`` (``preprocess.group_spacing``); its JSON records
    them under ``preprocess`` so that fine-tuning and prediction reproduce them.
    """
    vol_dir = out / "volumes"
    meta_path = vol_dir / f"{case.id}.json"
    fingerprint = case_fingerprint(case, cfg)
    meta = _cached(vol_dir, meta_path, fingerprint)
    if meta is not None:
        return {**_index_entry(meta), "skipped": True}
    cfg = cfg.for_group(case.group)
    image, label, channels = read_case(case)
    image_ras, affine_ras, transform = to_ras(image, channels[0].affine)
    label_ras = to_ras(label, channels[0].affine)[0] if label is not None else None
    target = cfg.target_spacing if channels[0].unit == "mm" else None
    image_out, affine_out = image_ras, affine_ras
    if target:
        image_out, affine_out = resample(image_ras, affine_ras, target, cfg.image_interpolation_order)
        if label_ras is not None:
            label_ras = resample(label_ras, affine_ras, target, 0)[0]
    normed, records = zip(*(normalize(c, case.modality, cfg) for c in image_out))
    image_final = np.stack(normed).astype(np.float32)
    files = {"image": f"{case.id}.npy"}
    _save_npy(vol_dir / files["image"], image_final)
    meta: dict[str, Any] = {
        "id": case.id,
        "modality": case.modality,
        "group": case.group,
        "split": case.split,
        "synthetic": case.synthetic,
        "source": case.source,
        "fingerprint": fingerprint,
        "inputs": [r.to_dict() for r in case.images],
        "label_input": case.label.to_dict() if case.label else None,
        "shape": list(image_final.shape[1:]),
        "channels": int(image_final.shape[0]),
        "affine": np.asarray(affine_out).tolist(),
        "spacing": _spacing(affine_out),
        "unit": channels[0].unit,
        "original": {
            "shape": list(channels[0].shape),
            "affine": channels[0].affine.tolist(),
            "axcodes": "".join(channels[0].axcodes),
            "spacing": list(channels[0].spacing),
        },
        "ras_transform": np.asarray(transform).tolist(),
        "ras_affine": np.asarray(affine_ras).tolist(),
        "ras_shape": list(image_ras.shape[1:]),
        "target_spacing": target,
        "preprocess": asdict(cfg),
        "normalization": list(records),
        "pad_value": [float(c.min()) for c in image_final],
    }
    if case.modality == "CT":  # on the HU of the first channel, before normalisation
        body = body_mask(image_out[0], cfg.body_threshold)
        files["body"] = f"{case.id}.body.npy"
        _save_npy(vol_dir / files["body"], body.astype(np.uint8))
        meta["body_box"] = list(mask_box(body))
    if label_ras is not None:
        files["label"] = f"{case.id}.label.npy"
        files["foreground"] = f"{case.id}.fg.npz"
        _save_npy(vol_dir / files["label"], label_ras)
        values, fg = foreground_locations(label_ras, cfg.max_foreground_locations)
        meta["num_labels"] = len(values)
        meta["label_values"] = values if len(values) <= MAX_FG_CLASSES + 1 else None
        meta["label_classes"] = case.label_classes
        with atomic_path(vol_dir / files["foreground"], ".npz") as tmp:
            np.savez(tmp, **fg)
    meta["files"] = files
    write_json(meta_path, meta)
    return {**_index_entry(meta), "skipped": False}


def read_case(case: Case) -> tuple[np.ndarray, np.ndarray | None, list[Volume]]:
    channels = [read_volume(r.path, r.channel, r.key, case.spacing) for r in case.images]
    ref = channels[0]
    for ch in channels[1:]:
        if ch.shape != ref.shape or not np.allclose(ch.affine, ref.affine, atol=1e-3):
            raise InputError(ch.path, f"channel shape/geometry {ch.shape} differs from {ref.path} {ref.shape}")
    label = None
    if case.label is not None:
        lab = read_label(case.label.path, case.label.channel, case.label.key, case.spacing)
        if lab.shape != ref.shape:
            raise InputError(
                lab.path, f"label shape {lab.shape} differs from its image {ref.path} of shape {ref.shape}"
            )
        if not np.allclose(lab.affine, ref.affine, atol=1e-3 * max(ref.spacing)):
            raise InputError(lab.path, f"label affine differs from its image {ref.path}")
        label = lab.array
    image = np.stack([c.array for c in channels]).astype(np.float32)
    return image, label, channels


def foreground_locations(
    label: np.ndarray, max_per_class: int, seed: int = 0
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Sample up to ``max_per_class`` voxel indices (N, 3) per class > 0 (one class if > 64 labels).

    Returns the label values present and ``{"class_<v>": idx}`` (or ``{"foreground": idx}``).
    """
    values = [int(v) for v in np.unique(label)]
    rng = np.random.default_rng(seed)
    classes = [v for v in values if v > 0]
    masks = {"foreground": label > 0} if len(classes) > MAX_FG_CLASSES else {f"class_{v}": label == v for v in classes}
    fg = {}
    for name, mask in masks.items():
        idx = np.argwhere(mask)
        if len(idx) > max_per_class:
            idx = idx[rng.choice(len(idx), max_per_class, replace=False)]
        fg[name] = idx.astype(np.int32)
    return values, fg


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array))


def _spacing(affine: np.ndarray) -> list[float]:
    return [float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)]


def _index_entry(meta: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "modality",
        "group",
        "split",
        "synthetic",
        "source",
        "shape",
        "channels",
        "spacing",
        "unit",
        "pad_value",
    )
    extra = {k: meta[k] for k in ("body_box", "label_classes") if meta.get(k) is not None}
    return {**{k: meta[k] for k in keys}, **extra, "files": meta["files"], "meta": f"{meta['id']}.json"}


def check_dataset(dataset: Dataset, progress: bool = True) -> list[str]:
    """Read and validate every case; returns one summary line per case, raises on the first bad one."""
    lines = []
    for case in tqdm(dataset.cases, desc="check", unit="case", disable=not progress):
        image, label, channels = read_case(case)
        ref = channels[0]
        spacing = " x ".join(f"{s:.3g}" for s in ref.spacing)
        extra = f", labels {sorted(int(v) for v in np.unique(label))[:10]}" if label is not None else ""
        orient = "".join(ref.axcodes)
        lines.append(f"{case.id}: {case.modality} {image.shape[0]}ch {ref.shape} {orient} {spacing} {ref.unit}{extra}")
    return lines
