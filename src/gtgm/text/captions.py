"""``gtgm caption``: one caption per patch location of every cached volume, in ``captions.jsonl``.

Each line is one JSON object::

    {"key": "<volume>:<x>,<y>,<z>:<sx>,<sy>,<sz>", "volume": ..., "start": [x, y, z], "size": [sx, sy, sz],
     "axes": "xyz", "spacing": [x, y, z], "modality": "CT|MRI|EM", "text": ..., "captioner": ...,
     "captioner_version": ..., "seed": ...}

Boxes are in the cache's RAS array order (x, y, z; z = slice axis) at its voxel size ``spacing`` (recorded so that
pretraining and the audit refuse a cache of another voxel size, where the box would name another region; older
captions without it are read as before). Lines are appended one
``write(2)`` each to a file opened with ``O_APPEND``, so an interruption loses at most the line being
written; a torn last line is cut off on the next run, which then skips every key already present
(resume). ``--shard i/n`` (or torchrun's RANK/WORLD_SIZE) takes every n-th location and writes
``<stem>.shard-<i>-of-<n>.jsonl`` beside the output; :func:`read_captions` reads them all together.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gtgm.config import CaptionConfig
from gtgm.data.boxes import box_key, make_patch
from gtgm.data.measure import background_mask
from gtgm.data.patches import VolumeCache, grid_starts, read_patch
from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import fits_in_memory, single_writer
from gtgm.text.captioners.base import Captioner


def shard_path(out: Path, shard: tuple[int, int]) -> Path:
    i, n = shard
    return out if n == 1 else out.with_name(f"{out.stem}.shard-{i}-of-{n}{out.suffix}")


def caption_files(path: Path) -> list[Path]:
    """The captions file and its shard files, in a stable order."""
    files = [path] if path.exists() else []
    return files + sorted(path.parent.glob(f"{path.stem}.shard-*-of-*{path.suffix}"))


def read_captions(path: str | Path) -> list[dict[str, Any]]:
    """All caption records of ``path`` and its shards; a malformed line is an error naming it."""
    path = Path(path)
    files = caption_files(path)
    if not files:
        raise InputError(path, "captions file not found")
    records: list[dict[str, Any]] = []
    for f in files:
        records.extend(_read_lines(f))
    warn_duplicates(path, records)
    unsized = sum("spacing" not in r for r in records)
    if unsized:  # captions of an older gtgm, or written by hand
        print(
            f"[captions] warning: {path}: {unsized} caption(s) record no voxel size ('spacing'), so whether they were "
            "made on this cache cannot be checked; re-run gtgm caption on the cache to record it"
        )
    return records


def _read_lines(path: Path, torn_ok: bool = False) -> Iterator[dict[str, Any]]:
    """The records of one captions file; ``torn_ok``: a last line without its newline is skipped."""
    if path.is_dir():
        raise InputError(path, "is a folder, not a captions file")
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if torn_ok and not raw.endswith(b"\n"):
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(path, f"line {number}: not UTF-8 text (binary data in a captions file?)") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, f"line {number}: malformed JSON ({exc.msg})") from exc
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or "key" not in rec:
                raise InputError(path, f"line {number}: a caption record needs 'key' and a string 'text'")
            yield rec


def repair_tail(path: Path) -> bool:
    """Cut a torn last line (no trailing newline) left by an interruption; True if something was cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return False
        data = path.read_bytes()
        fh.truncate(data.rfind(b"\n") + 1)
    return True


class CaptionWriter:
    """Appends records to a JSONL file, one ``write(2)`` per line (O_APPEND), fsync on close. The file (and its
    folder) is created at the first record, so a run that fails before its first caption leaves nothing."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self.fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self.fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    def close(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None


def plan_locations(cache: VolumeCache, cfg: CaptionConfig) -> list[tuple[int, list[int], list[int]]]:
    """``(case index, start, size)`` of every grid location with enough non-background voxels."""
    plan = []
    for i, entry in enumerate(cache.entries):
        size = cfg.patch_size.get(entry["modality"])
        step = cfg.step.get(entry["modality"], size)
        if size is None:
            raise GtgmError(f"caption.patch_size has no entry for modality {entry['modality']}")
        image, pad = cache.image(i), cache.pad_value(i)[0]
        for start in grid_starts(entry["shape"], size, step):
            if cfg.min_foreground > 0:
                patch = read_patch(image[0], start, size, pad)
                if 1 - background_mask(patch, entry["modality"], pad).mean() < cfg.min_foreground:
                    continue
            plan.append((i, start, list(size)))
    return plan


def run_captioning(
    cache: VolumeCache,
    captioner: Captioner,
    out: str | Path,
    cfg: CaptionConfig,
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> dict[str, Any]:
    """Caption every planned location of this shard not yet in ``out`` (or its shards).

    Returns ``{"written", "skipped", "total", "seconds", "per_second", "path"}``.
    """
    out = Path(out)
    target = shard_path(out, shard)
    cache.verify()  # checked before a lock file is written beside the captions
    _resumable(out, captioner, quiet=True)
    with single_writer(target):
        return _caption_locked(cache, captioner, out, target, cfg, seed, shard, progress)


def _resumable(out: Path, captioner: Captioner, quiet: bool = False) -> dict[str, dict[str, Any]]:
    """The captions already in ``out`` (:func:`_finished`), if this captioner may add to them."""
    done = _finished(out, quiet)
    unnamed = [k for k, r in done.items() if not isinstance(r.get("captioner"), str)]
    if unnamed:
        raise InputError(out, f"caption {unnamed[0]!r} names no 'captioner', so the run cannot be resumed safely")
    other = {r["captioner"] for r in done.values()} - {captioner.name}
    if other:
        raise GtgmError(f"{out} holds captions by {sorted(other)}; write '{captioner.name}' captions to another file")
    return done


def _finished(out: Path, quiet: bool = False) -> dict[str, dict[str, Any]]:
    """key -> record of the captions already in ``out`` and its shards (each key once: the first). ``quiet``:
    no warnings, and a torn last line (no newline: an interrupted write, cut when resuming) is left out."""
    records = [r for f in caption_files(out) for r in _read_lines(f, torn_ok=quiet)]
    if not quiet:
        warn_duplicates(out, records)
    done: dict[str, dict[str, Any]] = {}
    for r in records:
        done.setdefault(r["key"], r)
    return done


def warn_duplicates(path: Path, records: list[dict[str, Any]]) -> int:
    """Print a warning naming ``path`` when a caption key occurs more than once (two writers on one file, or
    files concatenated); returns the number of repeated records."""
    counts = Counter(r["key"] for r in records)
    repeated = sum(counts.values()) - len(counts)
    if repeated:
        first = next(k for k, n in counts.items() if n > 1)
        print(f"[captions] warning: {path}: {repeated} repeated caption key(s), e.g. {first!r}; the first is used")
    return repeated


def _caption_locked(
    cache: VolumeCache,
    captioner: Captioner,
    out: Path,
    target: Path,
    cfg: CaptionConfig,
    seed: int,
    shard: tuple[int, int],
    progress: bool,
) -> dict[str, Any]:
    """:func:`run_captioning` while holding the output's lock (the finished captions are read again under it)."""
    if repair_tail(target):
        print(f"[caption] {target}: cut a torn last line left by an interrupted run")
    done = _resumable(out, captioner)
    plan = [p for j, p in enumerate(plan_locations(cache, cfg)) if j % shard[1] == shard[0]]
    todo = [p for p in plan if box_key(cache.entries[p[0]]["id"], p[1], p[2]) not in done]
    writer = CaptionWriter(target)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"caption ({captioner.name})", unit="patch", disable=not progress)
    try:
        for b in range(0, len(todo), cfg.batch_size):
            batch = [make_patch(cache, i, s, z, cache.meta(i)) for i, s, z in todo[b : b + cfg.batch_size]]
            cases = [i for i, _, _ in todo[b : b + cfg.batch_size]]
            for i, patch, text in zip(cases, batch, captioner.caption(batch, seed)):
                writer.write(
                    {
                        "key": patch.key,
                        "volume": patch.volume,
                        "start": patch.start,
                        "size": patch.size,
                        "axes": "xyz",
                        "spacing": [round(float(v), 6) for v in cache.entries[i]["spacing"]],  # the box's voxel size
                        "modality": patch.modality,
                        "text": text,
                        "captioner": captioner.name,
                        "captioner_version": captioner.version,
                        "seed": seed,
                    }
                )
            bar.update(len(batch))
    finally:
        writer.close()
        bar.close()
    seconds = time.perf_counter() - t0
    return {
        "written": len(todo),
        "skipped": len(plan) - len(todo),
        "total": len(plan),
        "seconds": seconds,
        "per_second": len(todo) / seconds if seconds > 0 else float("nan"),
        "path": str(target),
    }


def distinct_share(records: list[dict[str, Any]]) -> float:
    """Share of distinct texts among the records."""
    return len({r["text"] for r in records}) / max(len(records), 1)


def caption_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    lengths = [len(r["text"].split()) for r in records]
    return {
        "captions": len(records),
        "distinct": distinct_share(records),
        "mean_words": float(np.mean(lengths)) if lengths else 0.0,
    }


def run_refine(
    source: str | Path, out: str | Path, refiner: Any, batch_size: int = 8, progress: bool = True
) -> dict[str, Any]:
    """Rewrite every caption of ``source`` with ``refiner`` into ``out`` (resumable by key).

    Output records copy the source record, replace ``text``, keep the original as ``source_text`` and
    ``source_captioner``, and name the refiner as ``captioner``.
    """
    source, out = Path(source), Path(out)
    if source.resolve() == out.resolve():
        raise GtgmError(f"{out}: refined captions must go to another file than their source")
    records = read_captions(source)
    if repair_tail(out):
        print(f"[caption] {out}: cut a torn last line left by an interrupted run")
    done = {r["key"] for f in caption_files(out) for r in _read_lines(f)}
    todo = [r for r in records if r["key"] not in done]
    writer = CaptionWriter(out)
    t0 = time.perf_counter()
    try:
        for b in tqdm(range(0, len(todo), batch_size), desc="refine", unit="batch", disable=not progress):
            batch = todo[b : b + batch_size]
            for rec, text in zip(batch, refiner.refine(batch)):
                writer.write(
                    {
                        **rec,
                        "text": text,
                        "source_text": rec["text"],
                        "source_captioner": rec["captioner"],
                        "captioner": refiner.name,
                        "captioner_version": refiner.version,
                    }
                )
    finally:
        writer.close()
    return {
        "written": len(todo),
        "skipped": len(records) - len(todo),
        "seconds": time.perf_counter() - t0,
        "path": str(out),
    }


def check_fields(rec: dict[str, Any]) -> None:
    """A caption record names its volume (a string) and its box (``start``, ``size``: 3 ints each)."""
    start, size = rec.get("start"), rec.get("size")
    ok = isinstance(rec.get("volume"), str) and all(
        isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        for v in (start, size)
    )
    if not ok:
        raise GtgmError(
            f"caption {rec.get('key')!r}: needs 'volume' (a string), 'start' and 'size' (3 integers each), got "
            f"volume {rec.get('volume')!r}, start {start!r}, size {size!r}"
        )


def check_box(rec: dict[str, Any], entry: dict[str, Any]) -> None:
    """A caption's box (``start``, ``size``: 3 ints each) must start inside its volume (``entry``: the volume's
    line in the cache's ``index.json``; the box may run past the end, where it is padded, as the caption grid does
    on small volumes), have a positive size and fit in memory when read whole (as the audit reads it); a caption
    that records its cache's voxel size (``spacing``) must be read in a cache of that voxel size, or its box
    would name another region."""
    check_fields(rec)
    start, size, shape = rec["start"], rec["size"], list(entry["shape"])
    if any(s < 0 or s >= n for s, n in zip(start, shape)) or any(z < 1 for z in size):
        raise GtgmError(
            f"caption {rec.get('key')!r}: box start {start} size {size} is not a box inside volume "
            f"{rec.get('volume')} of shape {shape}"
        )
    fits, gb = fits_in_memory([int(entry.get("channels") or 1), *size])
    if not fits:
        raise GtgmError(
            f"caption {rec.get('key')!r}: box size {size} of volume {rec.get('volume')} (shape {shape}) would "
            f"take {gb:.1f} GB to read; a caption box is a region of its volume"
        )
    made = rec.get("spacing")
    if made is not None and not np.allclose(np.asarray(made, float), np.asarray(entry["spacing"], float), rtol=1e-3):
        raise GtgmError(
            f"caption {rec.get('key')!r} was made on a cache of voxel size {made}, but this cache holds volume "
            f"{rec.get('volume')} at {list(entry['spacing'])}: give the cache the captions were made from"
        )
