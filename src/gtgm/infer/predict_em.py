"""EM neurons for ``gtgm predict`` / ``gtgm evaluate`` (``--task em``).

Prediction: each volume (CREMI HDF5, TIFF stack, ...) is normalised as in training, affinities are
predicted by sliding-window inference and agglomerated (method and threshold stored in ``best.pt``: the
threshold chosen on validation, unless ``--threshold`` is given). ``OUT/<case>.hdf`` is CREMI-layout
HDF5 with ``volumes/labels/neuron_ids`` (uint64, ids from 1) and ``volumes/predictions/affinities``
(float16, channels in the order of the offsets), both with the input's ``resolution``.

Evaluation: per case VOI split / merge (bits), adapted Rand error and CREMI score against the reference
neuron ids (label 0 ignored, optional CREMI border mask), written to ``metrics.csv`` / ``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from gtgm.data.datasets import Case, load_dataset
from gtgm.data.io import CREMI_LABELS, HDF5_SUFFIXES, read_label, suffix_of, write_cremi
from gtgm.em.agglomerate import segment
from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import write_json
from gtgm.infer.sliding import predict_array
from gtgm.metrics import neuron_scores

AFFINITIES_KEY = "volumes/predictions/affinities"
MEASURES = ("voi_split", "voi_merge", "voi", "arand", "cremi")


def segment_em_case(
    model: torch.nn.Module, meta: dict[str, Any], case: Case, device: Any, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(affinities (C, X, Y, Z) float32, neuron ids (X, Y, Z) uint64, reference volume)`` of one case,
    in the input's geometry (EM volumes are axis-aligned, so the affinity channels keep their meaning)."""
    from gtgm.infer.predict import prepare_input

    normed, ref, restore = prepare_input(meta, case)
    affs = predict_array(model, normed, meta["patch_size"], device=device, output="affinities")
    em = meta["em"]
    t = threshold if threshold is not None else em["threshold"]
    if t is None:
        raise GtgmError("best.pt has no agglomeration threshold (no validation ran); pass --threshold")
    seg = segment(affs, [t], em["agglomeration"], em["offsets"])[0]
    return np.stack([restore(a) for a in affs]), restore(seg), ref


def predict_em_cases(
    model: torch.nn.Module, meta: dict[str, Any], cases: list[Case], out: Path, device: Any, threshold: float | None
) -> list[Path]:
    from tqdm import tqdm

    written = []
    for case in tqdm(cases, desc="predict (em)", unit="volume"):
        affs, seg, ref = segment_em_case(model, meta, case, device, threshold)
        extra = {AFFINITIES_KEY: affs.astype(np.float16)}
        written.append(write_cremi(out / f"{case.id}.hdf", None, ref.spacing, labels=seg, extra=extra))
    return written


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
    from gtgm.infer.predict import _names, write_table

    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    preds = {p.name[: -len(suffix_of(p))]: p for p in sorted(pred_dir.iterdir()) if suffix_of(p) in HDF5_SUFFIXES}
    refs = _references(label_dir)
    common = sorted(set(preds) & set(refs))
    if not common:
        raise GtgmError(
            f"{pred_dir}: no prediction has a reference of the same name in {label_dir} "
            f"(predictions: {_names([p.name for p in preds.values()])}; reference cases: {_names(sorted(refs))})"
        )
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
