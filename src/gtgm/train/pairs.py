"""Pretraining samples: a captioned patch as two augmented views plus its frozen caption embedding.

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
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from gtgm.config import AugmentConfig
from gtgm.data.augment import TwoViews
from gtgm.data.patches import VolumeCache, read_patch
from gtgm.errors import GtgmError
from gtgm.text.encoders import TextCache


def split_records(records: list[dict[str, Any]], holdout_fraction: float) -> tuple[list, list]:
    """Deterministic train/held-out split by a hash of each caption's key."""
    held = [r for r in records if zlib.crc32(r["key"].encode()) % 10_000 < holdout_fraction * 10_000]
    keep = {r["key"] for r in held}
    return [r for r in records if r["key"] not in keep], held


def _check_box(rec: dict[str, Any], shape: list[int]) -> None:
    """A caption's box (``start``, ``size``: 3 ints each) must start inside its volume (it may run past the
    end, where it is padded, as the caption grid does on small volumes)."""
    start, size = rec.get("start"), rec.get("size")
    ok = all(
        isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        for v in (start, size)
    )
    if not ok or any(s < 0 or s >= n for s, n in zip(start, shape)) or any(z < 1 for z in size):
        raise GtgmError(
            f"caption {rec.get('key')!r}: box start {start} size {size} is not a box inside volume "
            f"{rec.get('volume')} of shape {list(shape)}"
        )


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
    ):
        if not records:
            raise GtgmError("no captions to pretrain on (after the held-out split)")
        ids = {e["id"]: i for i, e in enumerate(cache.entries)}
        missing = sorted({r["volume"] for r in records} - set(ids))
        if missing:
            raise GtgmError(f"captions name volumes not in the cache {cache.root}: {', '.join(missing[:5])}")
        self.cache, self.records, self.seed = cache, records, seed
        self.case = np.array([ids[r["volume"]] for r in records])
        for r, case in zip(records, self.case):
            _check_box(r, cache.shape(int(case)))
        self.rows = text_cache.lookup([r["text"] for r in records])
        self.text_cache, self.patch_size = text_cache, list(patch_size)
        self.views = TwoViews(augment) if augment is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def patch(self, k: int) -> torch.Tensor:
        """Record ``k``'s box from the cache, resized (trilinear) to ``patch_size``: (C, *patch_size)."""
        rec, case = self.records[k], int(self.case[k])
        box = torch.from_numpy(
            read_patch(self.cache.image(case), rec["start"], rec["size"], self.cache.pad_value(case))
        )
        if list(box.shape[1:]) != self.patch_size:
            box = F.interpolate(box[None], size=self.patch_size, mode="trilinear", align_corners=False)[0]
        return box

    def text(self, k: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.text_cache.embeddings[self.rows[k]], dtype=np.float32))

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        k = int(rng.integers(len(self.records)))
        patch = self.patch(k)
        if self.views is None:
            v1 = v2 = patch
        else:
            v1, v2, _ = self.views(patch, rng)
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
