"""Crops at the fine-tuning field of view, for region-level alignment (``pretrain.objective=region`` /
``region_facts``) and for masked image modelling on the same crops (``mim_dense``: the crop alone, no target).

Sample ``i`` (drawn from ``numpy.random.default_rng([seed, i])``, as :class:`~gtgm.train.pairs.CaptionPairs`):
a caption box, and a crop placed on the caption grid around it (the box at a random multiple of its size from the
crop's corner, the crop then moved inside the volume). The crop is ``pretrain.region_crop``, by default
``finetune.patch_size`` (the default group's field of view, not a group's override). Every caption box of that
volume wholly inside the crop is a region (at most ``max_regions``, the most a crop at a box's corner holds; any
more are left out at random). Fine-tuning validation and test voxels inside a crop are set to the pad value. The
crop gets view 1's augmentation (the caption-consistent one: intensity only, nothing that moves the content), so
each region still matches its caption.

Targets (:class:`~gtgm.train.losses.RegionLoss`):

* ``region`` (arm ``region_text``): each region's feature against the **whole caption bank** — the frozen
  embedding of every distinct training caption, through the text head — not the batch's few captions:
  ``-log softmax_j(z_r · t_j / τ)`` at its own caption (z, t L2-normalised, τ = ``loss.temperature``), where
  bank captions that state the same facts as the region's own (the same statements by
  :func:`gtgm.text.claims.check_caption`, in other words) are masked out as false negatives.
* ``region_facts`` (its control, no text): the same pooled features regress the box's measured facts
  (:func:`~gtgm.data.measure.box_facts`: what the describe captioner's text is made from), standardised over the
  training boxes, by mean squared error. ``region_text`` − ``region_facts``: what going through text adds to the
  facts themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from gtgm.config import AugmentConfig
from gtgm.data.augment import apply_ops, sample_ops, text_view_pipeline
from gtgm.data.measure import box_facts, box_measurements
from gtgm.data.patches import VolumeCache, read_patch
from gtgm.errors import GtgmError
from gtgm.text.claims import check_caption
from gtgm.text.encoders import TextCache
from gtgm.train.pairs import locate_records


def content_key(text: str, m: dict[str, Any]) -> frozenset:
    """What a caption states, wording aside: its statements as (kind, claim) pairs (:mod:`gtgm.text.claims`), and
    the sentences from which no statement is read, verbatim."""
    checked = check_caption(text, m)
    return frozenset([(s["kind"], repr(s["claim"])) for s in checked["statements"]] + checked["not_checkable"])


def content_ids(texts: list[str], measured: list[dict[str, Any]]) -> np.ndarray:
    """(N,) int64: one id per distinct :func:`content_key` of (text, its box's measurements); a caption of which
    nothing is read (an empty key) gets an id of its own, so it never masks another."""
    ids: dict[Any, int] = {}
    keys = [content_key(t, m) or ("unread", i) for i, (t, m) in enumerate(zip(texts, measured))]
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


class RegionCrops(Dataset):
    """``{"image": (C, *crop), "boxes": (R, 6) int64, "valid": (R,) bool, "target": (R,) bank row | (R, F),
    "index": (R,) record of each region (-1: padding), "crop_start": (3,)}``; boxes are ``lo`` and ``hi``
    (exclusive) in the crop, whose corner is ``crop_start`` in the volume.

    ``target="text"``: ``bank`` (N, D) holds the distinct captions' embeddings, ``content`` (N,) an id per
    distinct statement set; ``target="facts"``: ``facts`` (n_records, F) standardised measured facts;
    ``target="image"``: no target (zeros), the crop alone is the sample (masked reconstruction)."""

    def __init__(
        self,
        cache: VolumeCache,
        records: list[dict[str, Any]],
        text_cache: TextCache,
        crop: list[int],
        augment: AugmentConfig | None,
        target: str,
        seed: int = 0,
        progress: bool = False,
        reserved: list[dict[str, Any]] = (),
    ):
        self.cache, self.records, self.crop, self.target, self.seed = cache, records, list(crop), target, seed
        self.text_cache = text_cache
        self.case = locate_records(cache, records)
        self.reserved: dict[str, list[dict[str, Any]]] = {}
        for region in reserved:
            self.reserved.setdefault(region["volume"], []).append(region)
        self.start = np.array([r["start"] for r in records], dtype=np.int64)
        self.size = np.array([r["size"] for r in records], dtype=np.int64)
        if np.any(self.size > np.asarray(self.crop)):
            raise GtgmError(f"caption boxes of up to {self.size.max(0).tolist()} voxels do not fit the crop {crop}")
        self.by_case = {int(c): np.flatnonzero(self.case == c) for c in np.unique(self.case)}
        self.max_regions = self._most_inside()
        self.pipeline = text_view_pipeline(augment) if augment is not None else []
        measured = self._measure(progress) if target != "image" else []
        if target == "text":
            rows = text_cache.lookup([r["text"] for r in records])
            distinct, first, self.row = np.unique(rows, return_index=True, return_inverse=True)
            self.bank = np.asarray(text_cache.embeddings[distinct], dtype=np.float32)
            self.content = content_ids([records[k]["text"] for k in first], [measured[k] for k in first])
        elif target == "facts":
            facts = np.stack([box_facts(m) for m in measured])
            self.facts = (facts - facts.mean(0)) / np.where(facts.std(0) > 1e-6, facts.std(0), 1.0)

    def _most_inside(self) -> int:
        """The most caption boxes one crop holds: at any box's start, the boxes of its volume wholly inside."""
        return max(int(self._inside(same, self.start[same]).sum(1).max()) for same in self.by_case.values())

    def _inside(self, same: np.ndarray, corners: np.ndarray) -> np.ndarray:
        """(n_corners, len(same)) bool: record ``same[j]``'s box lies wholly inside the crop at ``corners[i]``."""
        lo, hi = self.start[same][None], (self.start[same] + self.size[same])[None]
        corners = np.atleast_2d(corners)[:, None]
        return np.all((lo >= corners) & (hi <= corners + self.crop), axis=2)

    def _measure(self, progress: bool) -> list[dict[str, Any]]:
        """The describe measurements of every record's box (:func:`~gtgm.data.measure.box_measurements`)."""
        metas, out = {}, []
        for k in tqdm(range(len(self.records)), desc="measure boxes", unit="box", disable=not progress):
            c = int(self.case[k])
            out.append(box_measurements(self.cache, c, self.records[k], metas.setdefault(c, self.cache.meta(c))))
        return out

    def blank_reserved(self, image: np.ndarray, case: int, lo: np.ndarray) -> np.ndarray:
        """``image`` (C, *crop) at ``lo`` with every fine-tuning validation / test voxel inside it set to the pad
        value: the crop reaches past its caption boxes, and pretraining must not see the voxels fine-tuning is scored
        on (:mod:`gtgm.train.reserved`)."""
        for region in self.reserved.get(self.cache.entries[case]["id"], []):
            a = np.maximum(np.asarray(region["lo"]) - lo, 0)
            b = np.minimum(np.asarray(region["hi"]) - lo, self.crop)
            if np.all(b > a):
                pad = np.asarray(self.cache.pad_value(case), dtype=image.dtype).reshape(-1, 1, 1, 1)
                image[:, a[0] : b[0], a[1] : b[1], a[2] : b[2]] = pad
        return image

    @property
    def dim(self) -> int:
        """Width of the targets: the text embedding (``text``), the number of facts (``facts``), 0 (``image``)."""
        if self.target == "image":
            return 0
        return int(self.bank.shape[1] if self.target == "text" else self.facts.shape[1])

    def __len__(self) -> int:
        return len(self.records)

    def place(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """Crop start (3,) around record ``k``'s box on the caption grid, moved inside the volume where it fits."""
        crop, size, start = np.asarray(self.crop), self.size[k], self.start[k]
        steps = (crop - size) // size  # how many box sizes the box may sit from the crop's corner, per axis
        lo = start - size * np.array([rng.integers(s + 1) for s in steps])
        shape = np.asarray(self.cache.entries[int(self.case[k])]["shape"])
        return np.clip(lo, 0, np.maximum(shape - crop, 0))

    def regions(self, k: int, lo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Records of ``k``'s volume whose boxes lie wholly inside the crop at ``lo`` (``k`` first when it does)."""
        same = self.by_case[int(self.case[k])]
        found = same[self._inside(same, lo)[0]]
        found = found[rng.permutation(len(found))]
        return np.concatenate([[k], found[found != k]]) if k in found else found

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        k = int(rng.integers(len(self.records)))
        lo = self.place(k, rng)
        found = self.regions(k, lo, rng)
        if not len(found):  # the box runs past the volume's end: the crop starts at the box and is padded
            lo, found = self.start[k], np.array([k])
        found = found[: self.max_regions]
        case, n, r = int(self.case[k]), len(found), self.max_regions
        image = read_patch(self.cache.image(case), lo.tolist(), self.crop, self.cache.pad_value(case))
        image = self.blank_reserved(image, case, lo)
        image = apply_ops(
            torch.from_numpy(np.ascontiguousarray(image)), sample_ops(self.pipeline, rng, tuple(self.crop))
        )
        boxes = np.zeros((r, 6), dtype=np.int64)
        boxes[:n, :3] = self.start[found] - lo
        boxes[:n, 3:] = boxes[:n, :3] + self.size[found]
        valid = np.arange(r) < n
        if self.target == "text":
            target = torch.from_numpy(np.pad(self.row[found], (0, r - n)))
        elif self.target == "facts":
            target = torch.from_numpy(np.pad(self.facts[found], ((0, r - n), (0, 0))))
        else:  # image only (mim_dense): the regions place the crop, nothing is matched to them
            target = torch.zeros(r, dtype=torch.int64)
        index = torch.from_numpy(np.pad(found, (0, r - n), constant_values=-1))
        return {
            "image": image.contiguous(),
            "boxes": torch.from_numpy(boxes),
            "valid": torch.from_numpy(valid),
            "target": target,
            "index": index,
            "crop_start": torch.from_numpy(np.asarray(lo, dtype=np.int64)),
        }
