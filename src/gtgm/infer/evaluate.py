"""``gtgm evaluate``: predictions scored against references of the same case name (nnU-Net's
``evaluate_folder`` in spirit), written to ``metrics.csv`` (a row per case and class, then the means) and
``metrics.json``.

* Labels (CT / MRI): per class Dice and HD95 (mm, at the reference's spacing); classes are the given ones or
  every label > 0 in the references.
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
from gtgm.data.io import CREMI_LABELS, HDF5_SUFFIXES, read_label, suffix_of
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
    preds = {_case_id(p): p for p in sorted(pred_dir.iterdir()) if suffix_of(p) in (".nii", ".nii.gz")}
    refs = {_case_id(p): p for p in sorted(label_dir.iterdir()) if suffix_of(p) in (".nii", ".nii.gz")}
    common = pair_cases(pred_dir, label_dir, preds, refs, "references", [p.name for p in refs.values()])
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


MEASURES = ("voi_split", "voi_merge", "voi", "arand", "cremi")


def _references(label_dir: Path) -> dict[str, np.ndarray]:
    """Case id -> reference neuron ids (X, Y, Z) int64, from any dataset layout (CREMI HDF5, TIFF pairs)."""
    refs = {}
    for case in load_dataset(label_dir).cases:
        if case.label is not None:
            refs[case.id] = read_label(case.label.path, case.label.channel, case.label.key).array.astype(np.int64)
    if not refs:
        raise InputError(label_dir, "no reference neuron ids found (CREMI volumes/labels/neuron_ids, TIFF labels)")
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
