"""Pretraining samples: a captioned patch as two augmented views plus its frozen caption embedding.

A caption box is shown at the cache's voxel size, the scale fine-tuning sees: a box larger than
``patch_size`` is cropped at a random place inside it (centred for evaluation), a smaller one is padded;
nothing is resized. View 1 keeps the caption's facts (``augment.caption_consistent``, see
:class:`~gtgm.data.augment.TwoViews`). ``text_control="shuffled"`` pairs every box with the caption of
another box (one fixed permutation per seed): the control that tells whether the text's content matters.

Sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` (which caption record, which
augmentations), where ``i`` is a global sample counter: micro-step ``m`` of a run with per-process
batch B on W processes uses samples ``m·B·W + r·B + j`` on rank r. So a resumed run sees exactly the
samples the uninterrupted run would have, and N processes see the same samples as one process with
the N-times larger batch.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from gtgm.config import AugmentConfig
from gtgm.data.augment import TwoViews
from gtgm.data.patches import VolumeCache, read_patch
from gtgm.errors import GtgmError
from gtgm.text.captions import check_box
from gtgm.text.encoders import TextCache


def split_records(records: list[dict[str, Any]], holdout_fraction: float) -> tuple[list, list]:
    """Deterministic train/held-out split of whole volumes (a hash of each caption's volume id), so no
    held-out box overlaps a training box."""
    held_out = lambda r: zlib.crc32(str(r["volume"]).encode()) % 10_000 < holdout_fraction * 10_000  # noqa: E731
    return [r for r in records if not held_out(r)], [r for r in records if held_out(r)]


def locate_records(cache: VolumeCache, records: list[dict[str, Any]]) -> np.ndarray:
    """The cache index of each caption record's volume (n,); an error names a record whose volume the cache lacks
    or whose box is not a box of its volume (:func:`~gtgm.text.captions.check_box`)."""
    if not records:
        raise GtgmError("no captions to pretrain on (after the held-out split)")
    ids = {e["id"]: i for i, e in enumerate(cache.entries)}
    missing = sorted({r["volume"] for r in records} - set(ids))
    if missing:
        raise GtgmError(f"captions name volumes not in the cache {cache.root}: {', '.join(missing[:5])}")
    case = np.array([ids[r["volume"]] for r in records])
    for r, c in zip(records, case):
        check_box(r, cache.entries[int(c)])
    return case


class CaptionPairs(Dataset):
    """``{"view1", "view2": (C, *patch_size), "text": (D,), "index": record index}`` for sample ``i``."""

    def __init__(
        self,
        cache: VolumeCache,
        records: list[dict[str, Any]],
        text_cache: TextCache,
        patch_size: list[int],
        augment: AugmentConfig | None,
        seed: int = 0,
        text_control: str = "none",
    ):
        self.cache, self.records, self.seed = cache, records, seed
        self.case = locate_records(cache, records)
        self.rows = text_cache.lookup([r["text"] for r in records])
        if text_control == "shuffled":
            self.rows = self.rows[np.random.default_rng([seed, 11]).permutation(len(self.rows))]
        self.text_cache, self.patch_size = text_cache, list(patch_size)
        self.views = TwoViews(augment, augment.caption_consistent) if augment is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def patch(self, k: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """(C, *patch_size) from record ``k``'s box at the cache's voxel size: where the box is larger than
        the patch, at a random offset inside it (``rng``; centred without one); where smaller, padded."""
        rec, case = self.records[k], int(self.case[k])
        extra = [max(b - p, 0) for b, p in zip(rec["size"], self.patch_size)]
        offset = [int(rng.integers(e + 1)) if rng is not None else e // 2 for e in extra]
        start = [s + o for s, o in zip(rec["start"], offset)]
        size = [min(b, p) for b, p in zip(rec["size"], self.patch_size)]
        box = read_patch(self.cache.image(case), start, size, self.cache.pad_value(case))
        pad = [(0, p - b) for b, p in zip(size, self.patch_size)]
        if any(after for _, after in pad):
            value = np.asarray(self.cache.pad_value(case), dtype=box.dtype).reshape(-1, 1, 1, 1)
            full = np.broadcast_to(value, (box.shape[0], *self.patch_size)).copy()
            full[:, : size[0], : size[1], : size[2]] = box
            box = full
        return torch.from_numpy(np.ascontiguousarray(box))

    def text(self, k: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.text_cache.embeddings[self.rows[k]], dtype=np.float32))

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        k = int(rng.integers(len(self.records)))
        patch = self.patch(k, rng if self.views is not None else None)
        if self.views is None:
            v1 = v2 = patch
        else:
            v1, v2, _ = self.views(patch, rng, self.cache.entries[int(self.case[k])]["modality"])
        return {"view1": v1, "view2": v2, "text": self.text(k), "index": k}


class StepSampler(Sampler[int]):
    """Endless global sample indices for this rank, starting at micro-step ``start``."""

    def __init__(self, batch_size: int, start: int = 0, rank: int = 0, world: int = 1):
        self.batch_size, self.start, self.rank, self.world = batch_size, start, rank, world

    def __iter__(self) -> Iterator[int]:
        m = self.start
        while True:
            base = m * self.batch_size * self.world + self.rank * self.batch_size
            yield from range(base, base + self.batch_size)
            m += 1
