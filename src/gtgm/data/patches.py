"""Patches from the preprocessing cache, read through memory maps (only the patch's bytes are read).

* :class:`VolumeCache` — the cache's index and lazily opened, read-only memory maps.
* :func:`read_patch` — a box of a (C, X, Y, Z) array, padded where it leaves the volume.
* :class:`TwoViewPatchDataset` — two augmented views of random (or given) boxes, without text: the demo's
  figure of the views and the data benchmark. Pretraining reads :class:`gtgm.train.pairs.CaptionPairs` (the
  same views, paired with each box's caption); fine-tuning reads :class:`gtgm.train.segdata.SegPatches`.
* :func:`grid_starts` — the box starts of a regular grid over a volume (caption locations, query windows).

Randomness: sample ``i`` of epoch ``e`` draws from ``numpy.random.default_rng([seed, e, i])``, so a
sample is the same whatever the number of DataLoader workers or the order they run in.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gtgm.config import AugmentConfig, PreprocessConfig, from_dict
from gtgm.data.augment import TwoViews
from gtgm.errors import GtgmError
from gtgm.fsutil import read_json
from gtgm.schemas import CACHE_INDEX, CASE_META


class VolumeCache:
    """Read-only access to a preprocessed cache written by ``gtgm data preprocess``."""

    def __init__(
        self, root: str | Path, group: str | None = None, split: str | None = None, labeled: bool | None = None
    ):
        self.root = Path(root)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise GtgmError(f"{index_path}: no cache index; run `gtgm data preprocess` first")
        self.index = read_json(index_path, schema=CACHE_INDEX)
        self.entries = [
            e
            for e in self.index["cases"]
            if (group is None or e["group"] == group)
            and (split is None or e["split"] == split)
            and (labeled is None or ("label" in e["files"]) == labeled)
        ]
        if not self.entries:
            raise GtgmError(f"{self.root}: no cached cases match group={group} split={split} labeled={labeled}")
        self._maps: dict[tuple[int, str], np.ndarray] = {}
        self._metas: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict[str, Any]:  # memory maps are reopened in each worker process
        return {**self.__dict__, "_maps": {}}

    def _open(self, i: int, kind: str) -> np.ndarray:
        """Memory map of case ``i``'s ``kind`` array (:meth:`_load`), kept open for the next read."""
        if (i, kind) not in self._maps:
            self._maps[(i, kind)] = self._load(i, kind)
        return self._maps[(i, kind)]

    def _load(self, i: int, kind: str) -> np.ndarray:
        """Memory map of case ``i``'s ``kind`` array, checked first (:meth:`_check`)."""
        self._check(i, kind)
        return np.load(self.root / "volumes" / self.entries[i]["files"][kind], mmap_mode="r")

    def _check(self, i: int, kind: str) -> None:
        """Case ``i``'s ``kind`` array file against the index, from its header and size (no data read, nothing
        left open): a missing, truncated or rewritten file (another shape) is an error naming it, at every reader
        (caption, audit, probe, training)."""
        path, e = self.root / "volumes" / self.entries[i]["files"][kind], self.entries[i]
        rebuild = "re-run `gtgm data preprocess` to rebuild it"
        try:
            with open(path, "rb") as fh:
                major, _ = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
                offset = fh.tell()
        except FileNotFoundError:
            raise GtgmError(f"{path}: cached array missing; {rebuild}") from None
        except (ValueError, OSError, EOFError) as exc:
            raise GtgmError(f"{path}: damaged cached array ({str(exc).splitlines()[0]}); {rebuild}") from None
        if path.stat().st_size < offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise GtgmError(f"{path}: damaged cached array (shorter than its header says: truncated?); {rebuild}")
        want = [int(e.get("channels") or 1), *e["shape"]] if kind == "image" else list(e["shape"])
        if kind in ("image", "label", "body") and list(shape) != want:
            raise GtgmError(f"{path}: cached array of shape {list(shape)}, but the cache index says {want}; {rebuild}")

    def verify(self) -> None:
        """Read every case's JSON and check every cached array's header and size (:meth:`_check`): a damaged one
        is an error before any work starts or anything is written."""
        for i, e in enumerate(self.entries):
            self.meta(i)
            for kind in ("image", "label", "body"):
                if kind in e["files"]:
                    self._check(i, kind)
            if "foreground" in e["files"]:
                self.foreground(i)

    def image(self, i: int) -> np.ndarray:
        """Memory map of case ``i``'s image, (C, X, Y, Z) float32."""
        return self._open(i, "image")

    def label(self, i: int) -> np.ndarray:
        """Memory map of case ``i``'s label map, (X, Y, Z)."""
        return self._open(i, "label")

    def meta(self, i: int) -> dict[str, Any]:
        """Case ``i``'s JSON (``volumes/<id>.json``), read and checked once (treat it as read-only)."""
        if i not in self._metas:
            self._metas[i] = read_json(self.root / "volumes" / self.entries[i]["meta"], schema=CASE_META)
        return self._metas[i]

    def preprocess_settings(self, i: int) -> dict[str, Any]:
        """The preprocessing settings case ``i`` was cached with (its group's target spacing included)."""
        meta = self.meta(i)
        if "preprocess" in meta:
            return meta["preprocess"]
        cfg = from_dict(PreprocessConfig, self.index["config"]).for_group(self.entries[i].get("group"))
        return dataclasses.asdict(cfg)

    def foreground(self, i: int) -> dict[str, np.ndarray]:
        """Stored foreground voxel indices: ``{"class_<v>": (N, 3) int32}`` (EM: ``{"foreground": ...}``); a damaged
        file, or one holding anything else (object arrays are never unpickled), is an error naming it."""
        path = self.root / "volumes" / self.entries[i]["files"]["foreground"]
        rebuild = "re-run `gtgm data preprocess` to rebuild it"
        try:
            with np.load(path, allow_pickle=False) as data:
                out = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise GtgmError(f"{path}: foreground index missing; {rebuild}") from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as exc:
            raise GtgmError(f"{path}: damaged foreground index ({str(exc).splitlines()[0]}); {rebuild}") from None
        for key, arr in out.items():
            if arr.ndim != 2 or arr.shape[1] != 3 or arr.dtype.kind not in "iu":
                what = f"'{key}' of {arr.dtype} {list(arr.shape)}"
                raise GtgmError(f"{path}: damaged foreground index ({what}, not (N, 3) voxel indices); {rebuild}")
        return out

    def body(self, i: int) -> np.ndarray | None:
        """Memory map of case ``i``'s body mask (X, Y, Z) uint8 (CT), or None (other modalities, older caches)."""
        return self._open(i, "body") if "body" in self.entries[i]["files"] else None

    def body_box(self, i: int) -> tuple[list[int], list[int]] | None:
        """``[lo, hi)`` voxel box of case ``i``'s body (CT), or None."""
        box = self.entries[i].get("body_box")
        return (list(box[0]), list(box[1])) if box else None

    def label_classes(self, i: int) -> list[int] | None:
        """The classes case ``i``'s label map annotates (partial labels), or None (every class)."""
        return self.entries[i].get("label_classes")

    def pad_value(self, i: int) -> list[float]:
        """Per-channel value for voxels outside the volume (the channel's minimum)."""
        return self.entries[i]["pad_value"]

    def shape(self, i: int) -> tuple[int, int, int]:
        return tuple(self.entries[i]["shape"])  # type: ignore[return-value]


def read_patch(
    array: np.ndarray, start: list[int] | np.ndarray, size: list[int], pad_value: float | list[float] = 0.0
) -> np.ndarray:
    """Box ``[start, start + size)`` of the last three axes of ``array``; outside voxels = ``pad_value``.

    ``array``: (X, Y, Z) or (C, X, Y, Z), typically a memory map; only the overlapping box is read.
    ``pad_value``: scalar, or one value per channel.
    """
    lead = array.shape[:-3]
    spatial = array.shape[-3:]
    out = np.empty((*lead, *size), dtype=array.dtype)
    pads = np.asarray(pad_value, dtype=np.float64).reshape(-1)
    if len(lead) and pads.size == lead[0]:
        out[...] = pads.reshape(-1, 1, 1, 1).astype(array.dtype)
    else:
        out[...] = np.asarray(pads[0]).astype(array.dtype)
    src, dst = [], []
    for s, n, p in zip(start, spatial, size):
        lo, hi = max(int(s), 0), min(int(s) + p, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[(..., *dst)] = array[(..., *src)]
    return out


def random_start(shape: tuple[int, ...], size: list[int], rng: np.random.Generator) -> list[int]:
    """Uniform box start inside the volume; where the volume is smaller, the box overhangs randomly."""
    return [
        int(rng.integers(0, n - s + 1)) if n >= s else -int(rng.integers(0, s - n + 1)) for n, s in zip(shape, size)
    ]


class TwoViewPatchDataset(Dataset):
    """Pretraining samples: ``{"view1", "view2": (C, *size) float32, "case", "start", "ops"}``.

    ``boxes`` (optional): list of ``(case_index, start)`` to sample from (e.g. captioned grid
    locations); the chosen one is returned as ``"box"``. Otherwise cases are drawn uniformly and the
    box uniformly inside the case.
    """

    def __init__(
        self,
        cache: VolumeCache,
        size: list[int],
        augment: AugmentConfig,
        samples_per_epoch: int,
        seed: int = 0,
        boxes: list[tuple[int, list[int]]] | None = None,
        caption_consistent: bool = False,
    ):
        self.cache, self.size, self.seed = cache, list(size), seed
        self.samples_per_epoch, self.boxes, self.epoch = samples_per_epoch, boxes, 0
        self.views = TwoViews(augment, caption_consistent)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = self.rng(i)
        box_id = -1
        if self.boxes:
            box_id = int(rng.integers(len(self.boxes)))
            case, start = self.boxes[box_id][0], list(self.boxes[box_id][1])
        else:
            case = int(rng.integers(len(self.cache)))
            start = random_start(self.cache.shape(case), self.size, rng)
        patch = torch.from_numpy(read_patch(self.cache.image(case), start, self.size, self.cache.pad_value(case)))
        v1, v2, records = self.views(patch, rng, self.cache.entries[case]["modality"])
        return {
            "view1": v1,
            "view2": v2,
            "case": case,
            "start": torch.tensor(start),
            "box": box_id,
            "ops": json.dumps(records),
        }


def grid_starts(shape: list[int], size: list[int], step: list[int]) -> list[list[int]]:
    """Box starts covering ``shape``: 0, step, 2·step, ... and a last box flush with the far edge.

    Along an axis shorter than the box there is one start, 0 (the box overhangs and is padded).
    """
    axes = []
    for n, s, st in zip(shape, size, step):
        if n <= s:
            axes.append([0])
            continue
        starts = list(range(0, n - s + 1, max(1, st)))
        if starts[-1] != n - s:
            starts.append(n - s)
        axes.append(starts)
    return [[x, y, z] for x in axes[0] for y in axes[1] for z in axes[2]]
