"""``gtgm predict`` and ``gtgm evaluate``: label maps for raw volumes, and their Dice / HD95.

Prediction undoes preprocessing exactly: the input is reoriented to RAS, resampled and normalised as
the model's training data was (settings stored in ``best.pt``), segmented by sliding-window inference,
resampled back (nearest neighbour) onto the RAS grid of the input, reoriented back, and written with the
input's own affine and header, so the output has the input's shape and geometry.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gtgm.config import ModelConfig, PreprocessConfig, from_dict
from gtgm.data.datasets import Case, check_case_id, load_dataset
from gtgm.data.geometry import from_ras, resample, to_ras
from gtgm.data.io import read_label, read_volume, suffix_of, write_nifti
from gtgm.data.normalize import normalize
from gtgm.errors import GtgmError
from gtgm.fsutil import write_json, write_text
from gtgm.infer.sliding import predict_array
from gtgm.metrics import dice_per_class, hd95_per_class
from gtgm.models.checkpoint import has_norm_weights, load_checkpoint, load_weights
from gtgm.models.registry import architecture_kwargs, create_segmenter
from gtgm.runtime import resolve_device


def _require(ckpt: dict[str, Any], path: str | Path, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise GtgmError(f"{path}: best.pt lacks {', '.join(missing)}; re-run gtgm finetune with this version of gtgm")


def load_segmenter(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A fine-tuned ``best.pt`` -> (model in eval mode, its metadata)."""
    ckpt = load_checkpoint(path, device)
    if "model_config" not in ckpt:
        raise GtgmError(f"{path}: not a segmentation checkpoint (expected best.pt from gtgm finetune)")
    _require(ckpt, path, ("model", "num_classes"))
    m: ModelConfig = from_dict(ModelConfig, ckpt["model_config"])
    if "norm_affine" not in ckpt["model_config"]:  # saved before the option: read it off the weights
        m.norm_affine = has_norm_weights(ckpt["model"])
    task = "affinity" if ckpt.get("task") == "em" else "segmentation"
    m.use_checkpoint = False  # inference: no activation checkpointing
    model = create_segmenter(m.encoder, ckpt["num_classes"], task=task, **architecture_kwargs(m))
    load_weights(model, ckpt["model"], path)
    return model.to(device).eval(), ckpt


def prepare_input(meta: dict[str, Any], case: Case) -> tuple[np.ndarray, Any, Callable[[np.ndarray], np.ndarray]]:
    """Read ``case`` and preprocess it as the model's training data was (settings stored in ``best.pt``).

    Returns the normalised (C, X, Y, Z) array, the reference volume (affine, header) and ``restore``, which
    takes an (X, Y, Z) map on that array's grid back to the input's geometry (exact shape; spline ``order``
    0 = nearest neighbour for labels, 1 = linear for probabilities). ``restore.resampled`` tells whether the
    array was resampled (otherwise restoring only reorients); ``restore.normalization`` the per-channel
    normalisation records (CT: the HU window).
    """
    pre: PreprocessConfig = from_dict(PreprocessConfig, meta["preprocess"])
    channels = [read_volume(r.path, r.channel, r.key, case.spacing) for r in case.images]
    ref = channels[0]
    image = np.stack([c.array for c in channels]).astype(np.float32)
    ras, ras_affine, transform = to_ras(image, ref.affine)
    work, work_affine = ras, ras_affine
    if pre.target_spacing and ref.unit == "mm":
        work, work_affine = resample(ras, ras_affine, pre.target_spacing, pre.image_interpolation_order)
    normalized = [normalize(c, meta["modality"], pre) for c in work]
    normed = np.stack([n[0] for n in normalized])
    geometry = {
        "ras_shape": np.asarray(ras.shape[1:]),
        "ras_affine": ras_affine,
        "work_affine": work_affine,
        "transform": transform,
        "resampled": np.asarray(work is not ras),
    }
    restore = restorer(geometry)
    restore.normalization = [n[1] for n in normalized]  # per channel, as the cache records it (CT: its HU window)
    return normed, ref, restore


def restorer(geometry: dict[str, Any]) -> Callable[..., np.ndarray]:
    """``restore(grid, order=0)``: an (X, Y, Z) map on the preprocessed grid -> the input's geometry (resampled
    back onto the RAS grid when ``geometry["resampled"]``, then reoriented). ``geometry`` holds arrays only
    (``ras_shape``, ``ras_affine``, ``work_affine``, the orientation ``transform``, ``resampled``), so it can
    travel with a batch and be rebuilt elsewhere; it is kept as ``restore.geometry``."""
    g = {k: np.asarray(v) for k, v in geometry.items()}
    resampled = bool(g["resampled"])

    def restore(grid: np.ndarray, order: int = 0) -> np.ndarray:
        if resampled:  # back onto the RAS grid of the input
            ras_spacing = np.linalg.norm(g["ras_affine"][:3, :3], axis=0)
            shape = tuple(int(n) for n in g["ras_shape"])
            grid = resample(grid, g["work_affine"], ras_spacing, order, shape=shape)[0]
        return from_ras(grid, g["transform"])

    restore.resampled = resampled
    restore.geometry = g
    return restore


def segment_case(
    model: torch.nn.Module, meta: dict[str, Any], case: Case, device: torch.device
) -> tuple[np.ndarray, Any]:
    """Label map of ``case`` in its input geometry, and the reference volume (affine, header).

    When the model works at another spacing, its class probabilities are resampled linearly to the input's
    grid and the label is their argmax there (as nnU-Net does), which keeps boundaries and thin structures
    finer than the model's voxels; one class at a time, so memory stays at two input-sized float arrays.
    """
    normed, ref, restore = prepare_input(meta, case)
    output = "probabilities" if restore.resampled else "labels"
    return restore_labels(predict_array(model, normed, meta["patch_size"], device=device, output=output), restore), ref


def restore_labels(out: np.ndarray, restore: Callable[..., np.ndarray]) -> np.ndarray:
    """The label map in the input's geometry from the model's output on the preprocessed grid.

    ``out``: the argmax labels (X, Y, Z) when ``restore.resampled`` is False (restoring only reorients), else
    the class probabilities (K, X, Y, Z), each resampled linearly to the input grid, the label their argmax.
    """
    if not restore.resampled:
        return restore(out)
    best = restore(out[0], order=1)
    label = np.zeros(best.shape, dtype=np.uint8)
    for k in range(1, len(out)):
        p = restore(out[k], order=1)
        better = p > best
        best[better], label[better] = p[better], k
    return label


def predict_inputs(
    checkpoint: str | Path,
    inputs: list[str | Path],
    out: str | Path,
    device: str = "auto",
    modality: str | None = None,
    task: str | None = None,
    threshold: float | None = None,
) -> list[Path]:
    """Segment every input (files, folders or datasets): ``OUT/<case>.nii.gz``, or for EM ``OUT/<case>.hdf``.

    ``task`` (optional) must match the task ``best.pt`` was trained for; ``threshold`` is EM's agglomeration
    threshold (default: the one chosen on validation).
    """
    dev = resolve_device(device)
    model, meta = load_segmenter(checkpoint, dev)
    _require(meta, checkpoint, ("preprocess", "patch_size", "modality"))  # what predict needs to prepare inputs
    trained = meta.get("task", "segmentation")
    if task and task != trained:
        raise GtgmError(f"{checkpoint}: trained for task '{trained}', not '{task}'")
    cases = input_cases(inputs, modality or meta["modality"])
    if trained == "em":
        from gtgm.infer.predict_em import predict_em_cases

        return predict_em_cases(model, meta, cases, Path(out), dev, threshold)
    written = []
    for case in tqdm(cases, desc="predict", unit="case"):
        label, ref = segment_case(model, meta, case, dev)
        written.append(write_nifti(Path(out) / f"{case.id}.nii.gz", label.astype(np.uint8), ref.affine, ref.header))
    return written


def input_cases(inputs: list[str | Path], modality: str) -> list[Case]:
    """The cases of ``inputs``: NIfTI files (one case each, named after the file), folders or datasets; inputs of
    the same name get unique ids (:func:`_unique_ids`)."""
    from gtgm.data.datasets import ImageRef

    cases: list[Case] = []
    for item in inputs:
        item = Path(item)
        if item.is_file() and suffix_of(item) in (".nii", ".nii.gz"):
            case_id = check_case_id(item.name.split(".")[0], item)
            cases.append(Case(case_id, [ImageRef(item)], modality=modality))
        else:
            cases.extend(load_dataset(item, modality=modality).cases)
    _unique_ids(cases)
    return cases


def _unique_ids(cases: list[Case]) -> None:
    """Inputs of the same name (from different folders) get ``_2``, ``_3``... so no prediction overwrites
    another; each renaming is printed."""
    seen: set[str] = set()
    for case in cases:
        base, k = case.id, 1
        while case.id in seen:
            k += 1
            case.id = f"{base}_{k}"
        if case.id != base:
            print(f"[predict] {case.images[0].path}: another input is also named '{base}'; written as '{case.id}'")
        seen.add(case.id)


def _case_id(path: Path) -> str:
    name = path.name
    return name[: -len(suffix_of(path))] if suffix_of(path) else name


def _names(names: list[str], n: int = 3) -> str:
    """The first ``n`` of ``names`` for an error message ("none" when empty)."""
    if not names:
        return "none"
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def evaluate_folders(
    pred_dir: str | Path, label_dir: str | Path, out: str | Path | None = None, classes: list[int] | None = None
) -> dict[str, Any]:
    """Per-case, per-class Dice and HD95 of predictions against references with the same case names.

    Writes ``metrics.csv`` (one row per case and class) and ``metrics.json`` (rows + means) to ``out``
    (default: ``pred_dir``). Classes: ``classes`` or every label > 0 found in the references.
    """
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    preds = {_case_id(p): p for p in sorted(pred_dir.iterdir()) if suffix_of(p) in (".nii", ".nii.gz")}
    refs = {_case_id(p): p for p in sorted(label_dir.iterdir()) if suffix_of(p) in (".nii", ".nii.gz")}
    common = sorted(set(preds) & set(refs))
    if not common:
        shown = _names([p.name for p in preds.values()]), _names([p.name for p in refs.values()])
        raise GtgmError(
            f"{pred_dir}: no prediction has a reference of the same name in {label_dir} "
            f"(predictions: {shown[0]}; references: {shown[1]})"
        )
    loaded = {c: (read_label(preds[c]), read_label(refs[c])) for c in common}
    for c, (p, r) in loaded.items():
        if p.shape != r.shape:
            raise GtgmError(f"{preds[c]}: shape {p.shape} differs from its reference {refs[c]} {r.shape}")
    if classes is None:
        classes = sorted({int(v) for _, r in loaded.values() for v in np.unique(r.array) if v > 0})
    rows = []
    for c, (p, r) in loaded.items():
        dice = dice_per_class(p.array, r.array, classes)
        hd = hd95_per_class(p.array, r.array, classes, list(r.spacing))
        rows += [{"case": c, "class": k, "dice": dice[k], "hd95": hd[k]} for k in classes]
    mean = {
        str(k): {
            "dice": float(np.nanmean([x["dice"] for x in rows if x["class"] == k])),
            "hd95": float(np.nanmean([x["hd95"] for x in rows if x["class"] == k]))
            if not all(np.isnan(x["hd95"]) for x in rows if x["class"] == k)
            else float("nan"),
        }
        for k in classes
    }
    out = Path(out or pred_dir)
    means = [{"case": "mean", "class": k, **v} for k, v in mean.items()]
    write_table(out / "metrics.csv", rows + means, ["case", "class", "dice", "hd95"])
    result = {
        "cases": common,
        "classes": classes,
        "rows": rows,
        "mean": mean,
        "mean_dice": float(np.mean([v["dice"] for v in mean.values()])),
    }
    write_json(out / "metrics.json", result)
    return result


def write_table(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> Path:
    """Write ``rows`` as CSV with the columns ``fields`` (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
    return path
