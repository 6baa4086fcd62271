"""MONAI transforms of an exported bundle: gtgm's own preprocessing and restoration, so a bundle's inference
gives the same label maps as ``gtgm predict`` (same reorientation to RAS, resampling, intensity normalisation,
padding, and the same return to the input's geometry).

``meta`` is the bundle's ``gtgm`` entry: ``{"preprocess": {...}, "modality": "CT", "patch_size": [...]}`` as
stored in the fine-tuned ``best.pt``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import MapTransform

from gtgm.data.datasets import Case, ImageRef
from gtgm.data.io import write_nifti
from gtgm.infer.body import body_box, paste_in_body
from gtgm.infer.postprocess import postprocess_label
from gtgm.infer.prepare import prepare_input, restore_labels, restorer
from gtgm.infer.sliding import pad_to_patch


def _case(path: str | Path, meta: dict[str, Any]) -> Case:
    path = Path(path)
    return Case(path.name.split(".")[0], [ImageRef(path)], modality=meta["modality"])


class GtgmPreprocessd(MapTransform):
    """``{"image": path}`` -> ``{"image": (C, X, Y, Z) float tensor, "gtgm_path", "gtgm_shape", "gtgm_geometry"}``.

    The image is preprocessed as gtgm preprocessed the model's training data (``gtgm.infer.prepare.prepare_input``) and
    padded to at least one patch with each channel's minimum (``gtgm.infer.sliding.pad_to_patch``, as
    ``gtgm predict`` does); ``gtgm_shape`` is the size before padding, ``gtgm_geometry`` what
    :class:`GtgmRestored` needs to go back to the input's grid (``gtgm.infer.prepare.restorer``) without reading the
    image again.
    """

    def __init__(self, keys: str, meta: dict[str, Any]):
        super().__init__(keys)
        self.meta = meta

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            normed, _, restore = prepare_input(self.meta, _case(path, self.meta))
            d["gtgm_geometry"] = dict(restore.geometry)
            if restore.body is not None:  # as gtgm predict: the network sees the body's box only
                box = body_box(restore.body["work"], self.meta["body_crop"]["margin_mm"], _spacing(restore))
                d["gtgm_geometry"].update(body=restore.body["work"], body_input=restore.body["input"])
                d["gtgm_geometry"]["box"] = np.array([[b.start, b.stop] for b in box])
                normed = normed[(slice(None), *box)]
            d[key] = torch.from_numpy(pad_to_patch(normed, self.meta["patch_size"]))
            d["gtgm_path"], d["gtgm_shape"] = path, torch.tensor(normed.shape[1:])
        return d


def _spacing(restore: Any) -> list[float]:
    """Voxel sizes of the grid the network sees (the RAS grid when the model keeps the input's spacing)."""
    return [float(v) for v in np.linalg.norm(np.asarray(restore.geometry["work_affine"])[:3, :3], axis=0)]


class GtgmRestored(MapTransform):
    """Network output (K, X, Y, Z) logits on the padded grid -> the label map in the input's geometry, written
    to ``output_dir/<case>.nii.gz`` with the input's affine and header (as ``gtgm predict`` writes it)."""

    def __init__(self, keys: str, meta: dict[str, Any], output_dir: str):
        super().__init__(keys)
        self.meta, self.output_dir = meta, Path(output_dir)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            case = _case(d["gtgm_path"], self.meta)
            geometry = {k: torch.as_tensor(v).cpu().numpy() for k, v in d["gtgm_geometry"].items()}
            body, box, body_input = (geometry.pop(k, None) for k in ("body", "box", "body_input"))
            restore = restorer(geometry)
            crop = (slice(None), *(slice(0, int(n)) for n in d["gtgm_shape"]))
            logits = torch.as_tensor(d[key])[crop].float()
            out = (logits.softmax(0) if restore.resampled else logits.argmax(0).to(torch.uint8)).cpu().numpy()
            if body is not None:  # back onto the whole grid: background outside the body
                body = body.astype(bool)
                out = paste_in_body(out, tuple(slice(int(a), int(b)) for a, b in box), body,
                                    "probabilities" if restore.resampled else "labels")  # fmt: skip
            label = restore_labels(out, restore)
            if body_input is not None:  # on the input's own grid
                label[~body_input.astype(bool)] = 0
            label = postprocess_label(label, self.meta).astype(np.uint8)
            ref = nib.load(d["gtgm_path"])  # header and affine only; the voxels were read once, by the preprocessing
            write_nifti(self.output_dir / f"{case.id}.nii.gz", label, ref.affine, ref.header)
            d[key] = label
        return d
