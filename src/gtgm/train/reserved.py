"""What pretraining must not see: the validation and test regions of the fine-tuning tasks.

For every labelled group of the fine-tuning cache, the fine-tuning split
(:func:`~gtgm.data.splits.make_split`, drawn with ``finetune.split_seed``) names its validation and test
parts: whole cases for a case split, slabs of a volume for a region split. Both the split with the group's
settings (``study.group_presets``, ``study.group_overrides``) and the one without them are reserved (a command-line
setting may win over a group's), so either way fine-tuning is evaluated on voxels pretraining did not see. A caption
box that overlaps one of them is dropped from pretraining, so an encoder never learns from the voxels it is
later scored on. The rule and what it dropped are recorded in the run (``reserved.json``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gtgm.config import Config, group_config
from gtgm.data.patches import VolumeCache
from gtgm.data.splits import make_split
from gtgm.errors import GtgmError


def reserved_regions(cache: VolumeCache, cfg: Config) -> dict[str, Any]:
    """``{"regions": [{"volume", "group", "split", "lo", "hi"}...], "unsplittable": {group: reason}}``.

    ``lo``/``hi``: the part's box [lo, hi) in the cache's (x, y, z) voxels.
    """
    regions, unsplittable = [], {}
    groups = sorted({e["group"] for e in cache.entries if "label" in e["files"]})
    for group in groups:
        sub = VolumeCache(cache.root, group=group, labeled=True)
        for gcfg in (group_config(cfg, group), cfg):
            try:
                split = make_split(sub, dataclasses.replace(gcfg.finetune, group=group))
            except GtgmError as exc:  # a split fine-tuning cannot make either: nothing of it is evaluated
                unsplittable.setdefault(group, str(exc))
                continue
            for name in ("val", "test"):
                for p in split[name]:
                    region = {
                        "volume": sub.entries[p.case]["id"],
                        "group": group,
                        "split": name,
                        "lo": p.lo,
                        "hi": p.hi,
                    }
                    if region not in regions:
                        regions.append(region)
    for e in cache.entries:  # declared test cases (the dataset's test list) with labels: kept out whole
        if e.get("split") == "test" and "label" in e["files"]:
            region = {"volume": e["id"], "group": e["group"], "split": "test", "lo": [0, 0, 0], "hi": list(e["shape"])}
            if region not in regions:
                regions.append(region)
    return {"regions": regions, "unsplittable": unsplittable}


def overlaps(rec: dict[str, Any], region: dict[str, Any]) -> bool:
    """Does caption box ``rec`` (``start``, ``size``) share a voxel with ``region`` of the same volume?"""
    if rec["volume"] != region["volume"]:
        return False
    return all(s < hi and s + n > lo for s, n, lo, hi in zip(rec["start"], rec["size"], region["lo"], region["hi"]))


def drop_reserved(records: list[dict[str, Any]], regions: list[dict[str, Any]]) -> tuple[list, list]:
    """``(kept, dropped)``: records overlapping no reserved region, and the others."""
    by_volume: dict[str, list[dict[str, Any]]] = {}
    for r in regions:
        by_volume.setdefault(r["volume"], []).append(r)
    kept, dropped = [], []
    for rec in records:
        hit = any(overlaps(rec, r) for r in by_volume.get(rec["volume"], []))
        (dropped if hit else kept).append(rec)
    return kept, dropped
