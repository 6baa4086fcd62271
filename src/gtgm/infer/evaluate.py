"""``gtgm evaluate``: predictions scored against references of the same case name (nnU-Net's
``evaluate_folder`` in spirit), written to ``metrics.csv`` (a row per case and class, then the means) and
``metrics.json``.

* Labels (CT / MRI): per class Dice and HD95 (mm, at the reference's spacing); classes are the given ones or
  every label > 0 in the references or the predictions (a class predicted where no reference has it scores 0).
  Scores are computed in world space: a prediction stored on the reference's grid in another voxel order (axes
  permuted or flipped, with its affine) is reordered onto the reference; one on another grid is refused. A case
  whose reference and prediction are both empty scores Dice 1 on the foreground (class 1) when no class is given.
* EM neurons (``--task em``): per case VOI split / merge (bits), adapted Rand error and CREMI score against
  the reference neuron ids (label 0 ignored, optional CREMI border mask).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.data.datasets import load_dataset
from gtgm.data.io import CREMI_LABELS, HDF5_SUFFIXES, Volume, read_label, suffix_of
from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import write_json, write_text
from gtgm.metrics import dice_per_class, hd95_per_class, neuron_scores


def _case_id(path: Path) -> str:
    name = path.name
    return name[: -len(suffix_of(path))] if suffix_of(path) else name


def _names(names: list[str], n: int = 3) -> str:
    """The first ``n`` of ``names`` for an error message ("none" when empty)."""
    if not names:
        return "none"
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _geometry(vol: Volume) -> str:
    """One line describing a volume's grid: shape, voxel size, orientation, origin."""
    sp = "x".join(f"{s:g}" for s in vol.spacing)
    origin = ", ".join(f"{o:.1f}" for o in vol.affine[:3, 3])
    return f"shape {vol.shape}, voxels {sp} mm, {''.join(vol.axcodes)}, origin ({origin})"


def on_reference_grid(pred: Volume, ref: Volume, pred_path: Path, ref_path: Path) -> np.ndarray:
    """``pred``'s labels on ``ref``'s voxel grid, (X, Y, Z) of ``ref``.

    ``T = inv(A_pred) · A_ref`` maps a reference voxel index to a prediction index. The two grids are the same
    world grid when T's 3×3 part is a signed permutation and every reference voxel maps to an integer index
    inside the prediction: then the prediction is transposed, flipped and sliced onto the reference exactly.
    Anything else (another voxel size, an offset of part of a voxel, a smaller extent) is an error naming both
    geometries, since a resampled label map would no longer be the prediction that was made.
    """
    t = np.linalg.inv(pred.affine) @ ref.affine
    rot = t[:3, :3]
    perm = [int(np.argmax(np.abs(rot[:, j]))) for j in range(3)]
    ok = sorted(perm) == [0, 1, 2] and np.allclose(np.abs(rot[perm, [0, 1, 2]]), 1.0, atol=1e-3)
    ok = ok and np.allclose(np.abs(rot).sum(axis=0), 1.0, atol=1e-3)
    index = []
    for j in range(3) if ok else ():
        pos = rot[perm[j], j] * np.arange(ref.shape[j]) + t[perm[j], 3]
        idx = np.round(pos).astype(np.int64)
        if np.abs(pos - idx).max() > 0.05 or idx.min() < 0 or idx.max() >= pred.shape[perm[j]]:
            ok = False
            break
        index.append(idx)
    if not ok:
        raise InputError(
            pred_path,
            f"is not on its reference's grid ({_geometry(pred)}; reference {ref_path.name}: {_geometry(ref)}); "
            "predict on the reference's image (gtgm predict writes on its input's grid) or resample it first",
        )
    return np.ascontiguousarray(pred.array.transpose(perm)[np.ix_(*index)])


def pair_cases(
    pred_dir: Path, label_dir: Path, preds: dict[str, Path], refs: dict[str, Any], what: str, ref_names: list[str]
) -> list[str]:
    """The case ids that have both a prediction (``preds``: id -> file) and a reference (``refs``: id -> any),
    sorted; none is an error naming both folders and a few of ``ref_names`` (``what``: what they are)."""
    common = sorted(set(preds) & set(refs))
    if not common:
        raise GtgmError(
            f"{pred_dir}: no prediction has a reference of the same name in {label_dir} "
            f"(predictions: {_names([p.name for p in preds.values()])}; {what}: {_names(ref_names)})"
        )
    return common


def evaluate_folders(
    pred_dir: str | Path, label_dir: str | Path, out: str | Path | None = None, classes: list[int] | None = None
) -> dict[str, Any]:
    """Per-case, per-class Dice and HD95 of predictions against references with the same case names.

    Writes ``metrics.csv`` (one row per case and class) and ``metrics.json`` (rows + means) to ``out``
    (default: ``pred_dir``). Classes: ``classes`` or every label > 0 found in the references.
    """
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    preds, refs = nifti_cases(pred_dir), nifti_cases(label_dir)
    common = pair_cases(pred_dir, label_dir, preds, refs, "references", [p.name for p in refs.values()])
    loaded = {}
    for c in common:
        p, r = read_label(preds[c]), read_label(refs[c])
        loaded[c] = (on_reference_grid(p, r, preds[c], refs[c]), r)
    if classes is None:
        found = {int(v) for p, r in loaded.values() for a in (p, r.array) for v in np.unique(a) if v > 0}
        classes = sorted(found) or [1]
    rows = []
    for c, (p, r) in loaded.items():
        dice = dice_per_class(p, r.array, classes)
        hd = hd95_per_class(p, r.array, classes, list(r.spacing))
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


def nifti_cases(folder: Path) -> dict[str, Path]:
    """Case id -> NIfTI file in ``folder``; ``case.nii`` beside ``case.nii.gz`` is an error naming both."""
    cases: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if suffix_of(p) in (".nii", ".nii.gz"):
            if _case_id(p) in cases:
                raise InputError(p, f"and {cases[_case_id(p)].name} are the same case; keep one of them")
            cases[_case_id(p)] = p
    return cases


def write_table(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> Path:
    """Write ``rows`` as CSV with the columns ``fields`` (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
    return path


MEASURES = ("voi_split", "voi_merge", "voi", "arand", "cremi")


def _references(label_dir: Path) -> dict[str, np.ndarray]:
    """Case id -> reference neuron ids (X, Y, Z) int64, from any dataset layout (CREMI HDF5, TIFF pairs, or a
    plain folder of NIfTI neuron-id maps)."""
    refs = {}
    for case in load_dataset(label_dir, modality="EM").cases:
        ref = case.label
        if ref is None and suffix_of(case.images[0].path) in (".nii", ".nii.gz"):
            ref = case.images[0]  # a folder of NIfTI files holds the references themselves
        if ref is not None:
            refs[case.id] = read_label(ref.path, ref.channel, ref.key).array.astype(np.int64)
    if not refs:
        raise InputError(label_dir, "no reference neuron ids found (CREMI volumes/labels/neuron_ids, TIFF or NIfTI)")
    return refs


def evaluate_em(
    pred_dir: str | Path, label_dir: str | Path, out: str | Path | None = None, border_nm: float = 0.0
) -> dict[str, Any]:
    """Score every ``PRED_DIR/<case>.hdf`` (``volumes/labels/neuron_ids``) against the reference of that case.

    ``border_nm`` is converted to voxels with the prediction's resolution (TIFF references carry none).
    """
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    preds = {_case_id(p): p for p in sorted(pred_dir.iterdir()) if suffix_of(p) in HDF5_SUFFIXES}
    refs = _references(label_dir)
    common = pair_cases(pred_dir, label_dir, preds, refs, "reference cases", sorted(refs))
    rows = []
    for c in common:
        pred = read_label(preds[c], key=CREMI_LABELS)
        seg, gt = pred.array, refs[c]
        if seg.shape != gt.shape:
            raise InputError(preds[c], f"shape {seg.shape} differs from its reference's {gt.shape}")
        rows.append({"case": c, **neuron_scores(seg, gt, border=border_nm / pred.spacing[0])})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in MEASURES}
    out = Path(out or pred_dir)
    write_table(out / "metrics.csv", [*rows, {"case": "mean", **mean}], ["case", *MEASURES])
    result = {"cases": common, "rows": rows, "mean": mean, "border_nm": border_nm}
    write_json(out / "metrics.json", result)
    return result
