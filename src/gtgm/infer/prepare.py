"""Input preparation for inference: read a case, preprocess it exactly as the model's training data was, and
map the model's output back to the input's own geometry.

The input is reoriented to RAS, resampled to the training spacing and normalised with the settings stored in
``best.pt``; :func:`restorer` undoes the resampling (nearest neighbour for labels, linear for probabilities) and
the reorientation, so a prediction has the input's shape and affine. For a model fine-tuned with ``body_crop`` (CT),
``restore.body`` holds the body mask (:mod:`gtgm.data.body`) on the grid the model sees (``work``) and on the input's
own grid (``input``), both from the input's HU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.config import PreprocessConfig, from_dict
from gtgm.data.body import body_mask
from gtgm.data.datasets import Case, ImageRef, check_case_id, load_dataset
from gtgm.data.geometry import from_ras, resample, to_ras
from gtgm.data.io import read_volume, suffix_of
from gtgm.data.normalize import normalize
from gtgm.errors import InputError


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
        check_voxel_size(case.images[0].path, ref.spacing, pre.target_spacing)
        hint = (
            f"crop {case.images[0].path} to the region of interest (the model resamples it to "
            f"{pre.target_spacing} mm{'; or give a coarser --spacing' if meta.get('spacing_given') else ''})"
        )
        work, work_affine = resample(ras, ras_affine, pre.target_spacing, pre.image_interpolation_order, hint=hint)
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
    restore.body = None
    if meta.get("body_crop") and meta["modality"] == "CT":  # from the HU, before the window clips them
        threshold = pre.body_threshold
        restore.body = {
            "work": body_mask(work[0], threshold),
            "input": from_ras(body_mask(ras[0], threshold), transform),
        }
    return normed, ref, restore


MAX_SPACING_RATIO = 100.0


def check_voxel_size(path: Any, spacing: tuple[float, ...], target: list[float]) -> None:
    """An input whose voxels are more than :data:`MAX_SPACING_RATIO` times smaller or larger than the model's
    (``target``, mm) on some axis is refused: a header in the wrong units (metres, micrometres), not an image the
    model can read (resampled, a 0.001 mm volume becomes one voxel)."""
    sorted_in, sorted_target = sorted(spacing), sorted(target)  # axes may be permuted against RAS: compare sizes
    if any(not 1 / MAX_SPACING_RATIO <= s / t <= MAX_SPACING_RATIO for s, t in zip(sorted_in, sorted_target)):
        size = " x ".join(f"{s:g}" for s in spacing)
        raise InputError(
            path,
            f"voxels of {size} mm, more than {MAX_SPACING_RATIO:g}x off the {target} mm it would be resampled to "
            "(the model's voxel size, or --spacing); check the header's voxel size and units",
        )


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


def input_cases(inputs: list[str | Path], modality: str) -> list[Case]:
    """The cases of ``inputs``: NIfTI files (one case each, named after the file), folders or datasets; inputs of
    the same name get unique ids (:func:`_unique_ids`)."""
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
