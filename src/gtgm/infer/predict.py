"""``gtgm predict``: label maps for raw volumes (CT / MRI), or neurons for EM volumes.

Labels: each input is prepared as the model's training data was (:mod:`gtgm.infer.prepare`), segmented by
sliding-window inference (:mod:`gtgm.infer.sliding`) and restored onto the input's own grid, so
``OUT/<case>.nii.gz`` has the input's shape, affine and header.

EM (``--task em``): each volume (CREMI HDF5, TIFF stack, ...) is normalised as in training, affinities are
predicted by sliding-window inference and agglomerated (method and threshold stored in ``best.pt``: the
threshold chosen on validation, unless ``--threshold`` is given). ``OUT/<case>.hdf`` is CREMI-layout HDF5 with
``volumes/labels/neuron_ids`` (uint64, ids from 1) and ``volumes/predictions/affinities`` (float16, channels in
the order of the offsets), both with the input's ``resolution``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gtgm.config import ModelConfig, from_dict
from gtgm.data.datasets import Case
from gtgm.data.io import write_cremi, write_nifti
from gtgm.em.agglomerate import segment
from gtgm.errors import GtgmError
from gtgm.infer.body import predict_in_body
from gtgm.infer.postprocess import postprocess_label
from gtgm.infer.prepare import input_cases, prepare_input, restore_labels
from gtgm.infer.sliding import predict_array
from gtgm.models.checkpoint import has_norm_weights, load_checkpoint, load_weights
from gtgm.models.registry import architecture_kwargs, create_segmenter
from gtgm.runtime import resolve_device, to_device


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
    return to_device(model, device).eval(), ckpt


def segment_case(
    model: torch.nn.Module, meta: dict[str, Any], case: Case, device: torch.device
) -> tuple[np.ndarray, Any]:
    """Label map of ``case`` in its input geometry, and the reference volume (affine, header).

    When the model works at another spacing, its class probabilities are resampled linearly to the input's
    grid and the label is their argmax there (as nnU-Net does), which keeps boundaries and thin structures
    finer than the model's voxels; one class at a time, so memory stays at two input-sized float arrays.
    A model fine-tuned with ``body_crop`` (CT) sees the body's box only and labels nothing outside the body, on
    the input's own grid. The label is then post-processed as chosen on validation (``best.pt``'s ``postprocess``,
    see :mod:`gtgm.infer.postprocess`).
    """
    normed, ref, restore = prepare_input(meta, case)
    output = "probabilities" if restore.resampled else "labels"
    if restore.body is not None:  # inside the body only; background outside it (on the input's own grid too)
        spacing = list(np.linalg.norm(restore.geometry["work_affine"][:3, :3], axis=0))
        margin, patch = meta["body_crop"]["margin_mm"], meta["patch_size"]
        out = predict_in_body(model, normed, restore.body["work"], margin, spacing, patch, output, device=device)
        label = restore_labels(out, restore)
        label[~restore.body["input"]] = 0
    else:
        label = restore_labels(predict_array(model, normed, meta["patch_size"], device=device, output=output), restore)
    return postprocess_label(label, meta), ref


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
        em = meta.get("em")
        needed = ("agglomeration", "offsets") if threshold is not None else ("threshold", "agglomeration", "offsets")
        lacking = [k for k in needed if not isinstance(em, dict) or k not in em]
        if lacking:
            raise GtgmError(f"{checkpoint}: trained for task 'em' but its EM settings lack {', '.join(lacking)}")
        return predict_em_cases(model, meta, cases, Path(out), dev, threshold)
    written = []
    for case in tqdm(cases, desc="predict", unit="case"):
        label, ref = segment_case(model, meta, case, dev)
        written.append(write_nifti(Path(out) / f"{case.id}.nii.gz", label.astype(np.uint8), ref.affine, ref.header))
    return written


AFFINITIES_KEY = "volumes/predictions/affinities"


def segment_em_case(
    model: torch.nn.Module, meta: dict[str, Any], case: Case, device: Any, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(affinities (C, X, Y, Z) float32, neuron ids (X, Y, Z) uint64, reference volume)`` of one case,
    in the input's geometry (EM volumes are axis-aligned, so the affinity channels keep their meaning)."""
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
